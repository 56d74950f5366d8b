"""Flows as the evaluator sees them: two ends and one concrete service.

``make_flow`` turns what an operator types (a workload name or an IP at each end, and a
service like ``tcp/80``) into a ``Flow`` whose ends are fully resolved: the workload (if any),
the address used, and the tags that selectors see (docs/semantics.md, "Endpoints of a flow").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotFoundError, Problem, ValidationError
from ..model import (
    Config,
    FlowService,
    IPAddress,
    ServiceSyntaxError,
    Tags,
    Workload,
    parse_flow_service,
)

__all__ = ["Flow", "FlowEnd", "end_of_ip", "end_of_workload", "make_flow"]


@dataclass(frozen=True, slots=True)
class FlowEnd:
    """One end of a flow.

    Invariant: ``workload`` is set iff the address belongs to a workload (or no address is
    known); ``tags`` is the workload's effective tags, a bare address's group labels, or None
    for an untagged bare address (which matches no tag selector).
    """

    workload: Workload | None
    ip: IPAddress | None
    tags: Tags | None

    @property
    def label(self) -> str:
        if self.workload is not None:
            return self.workload.name
        return str(self.ip)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "workload": self.workload.name if self.workload else None,
            "ip": str(self.ip) if self.ip is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Flow:
    src: FlowEnd
    dst: FlowEnd
    service: FlowService

    def as_dict(self) -> dict[str, object]:
        return {"from": self.src.as_dict(), "to": self.dst.as_dict(), "service": str(self.service)}


def end_of_workload(config: Config, workload: Workload, ip: IPAddress | None) -> FlowEnd:
    return FlowEnd(workload, ip, config.effective_tags(workload.name))


def end_of_ip(config: Config, ip: IPAddress) -> FlowEnd:
    """The end at ``ip``: its workload if one holds it, else a bare address."""
    owner = config.workload_at(ip)
    if owner is not None:
        return end_of_workload(config, owner, ip)
    return FlowEnd(None, ip, config.address_tags(ip))


def _first_ip(workload: Workload, version: int | None) -> IPAddress | None:
    for ip in workload.ips:
        if version is None or ip.version == version:
            return ip
    return None


def _resolve(config: Config, text: str, field: str, version: int | None) -> FlowEnd:
    ip = config.parse_ip(text)
    if ip is not None:
        return end_of_ip(config, ip)
    workload = config.workloads.get(text)
    if workload is None:
        raise NotFoundError("workload", text)
    return end_of_workload(config, workload, _first_ip(workload, version))


def make_flow(config: Config, src: str, dst: str, service: str | FlowService) -> Flow:
    """Resolve a flow from names or IPs.

    Raises ``NotFoundError`` for an unknown workload and ``ValidationError`` for a bad
    service.  The destination's address is its first one of the source address's family.
    """
    if isinstance(service, str):
        try:
            service = parse_flow_service(service)
        except ServiceSyntaxError as exc:
            raise ValidationError(
                [Problem(exc.reason, path="service", value=exc.text, allowed=exc.allowed)]
            ) from exc
    src_end = _resolve(config, src, "from", None)
    version = src_end.ip.version if src_end.ip is not None else None
    dst_end = _resolve(config, dst, "to", version)
    return Flow(src_end, dst_end, service)
