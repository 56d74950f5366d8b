"""Does a rule match a flow?  The literal reading of docs/semantics.md, "Rule endpoints" and
"Rules", written for clarity rather than speed: this is the reference the compiler and the
data paths are tested against.
"""

from __future__ import annotations

from ..model import (
    AddressGroupEndpoint,
    AnyEndpoint,
    CidrEndpoint,
    Config,
    Endpoint,
    NetworkEndpoint,
    Rule,
    RuleDirection,
    TagsEndpoint,
    WorkloadEndpoint,
)
from ._flow import Flow, FlowEnd

__all__ = ["endpoint_matches", "rule_matches"]


def endpoint_matches(config: Config, endpoint: Endpoint, end: FlowEnd) -> bool:
    match endpoint:
        case AnyEndpoint():
            return True
        case TagsEndpoint(selector):
            return end.tags is not None and selector.matches(end.tags)
        case WorkloadEndpoint(name):
            return end.workload is not None and end.workload.name == name
        case CidrEndpoint(cidr, except_):
            ip = end.ip
            return ip is not None and ip in cidr and not any(ip in e for e in except_)
        case AddressGroupEndpoint(ref):
            return end.ip is not None and config.address_groups[ref].contains(end.ip)
        case NetworkEndpoint(ref):
            network = config.networks[ref]
            if end.ip is not None and any(end.ip in s for s in network.subnets):
                return True
            if end.workload is None:
                return False
            return any(
                itf.network == ref and (end.ip is None or end.ip in itf.ips)
                for itf in end.workload.interfaces
            )


def _same_tags(rule: Rule, src: FlowEnd, dst: FlowEnd) -> bool:
    """matchTags: both ends carry a value of every listed type, and the values are equal.

    ``project`` may be listed: it is part of a workload's effective tags.
    """
    for tag_type in rule.match_tags:
        if src.tags is None or dst.tags is None:
            return False
        a = src.tags.get(tag_type)
        b = dst.tags.get(tag_type)
        if not a or a != b:
            return False
    return True


def _service_matches(rule: Rule, flow: Flow) -> bool:
    if rule.services is None:
        return True
    dst_ports = flow.dst.workload.ports if flow.dst.workload is not None else ()
    return any(s.matches(flow.service, dst_ports) for s in rule.services)


def rule_matches(config: Config, rule: Rule, flow: Flow) -> bool:
    """Direction, endpoints, services and matchTags, as docs/semantics.md "Rules" says."""
    if not _service_matches(rule, flow) or not _same_tags(rule, flow.src, flow.dst):
        return False
    forward = endpoint_matches(config, rule.from_, flow.src) and endpoint_matches(
        config, rule.to, flow.dst
    )
    reverse = endpoint_matches(config, rule.to, flow.src) and endpoint_matches(
        config, rule.from_, flow.dst
    )
    match rule.direction:
        case RuleDirection.FORWARD:
            return forward
        case RuleDirection.REVERSE:
            return reverse
        case RuleDirection.BOTH:
            return forward or reverse
