"""Builders for the non-policy kinds: tag types, tenancy, workloads, groups, service chains.

Each ``build_*`` reads one document's ``spec`` (DESIGN §2.1) with a ``Reader`` and returns the
object, with stand-ins where a field had a problem (the problem is recorded; ``validate`` then
raises instead of building a Config).  Builders run in the dependency order ``validate``
fixes, so they may use the objects of earlier kinds from ``r.scope``.
"""

from __future__ import annotations

import re

from ._manifest import Json
from ._objects import (
    AddressGroup,
    HealthCheck,
    HealthCheckType,
    Host,
    Interface,
    InterfaceRole,
    IPAddress,
    Network,
    Posture,
    Project,
    Ref,
    ServiceFunction,
    ServiceGroup,
    ServiceInstance,
    ServiceTemplate,
    ServiceTemplateMode,
    Settings,
    TagType,
    WhenAllDown,
    Workload,
    WorkloadKind,
)
from ._services import NamedPort, Protocol, Service, ServiceSyntaxError, parse_service
from ._tags import Tags, valid_tag_value
from ._validate_fields import Reader, describe, join, within

__all__ = [
    "build_address_group",
    "build_host",
    "build_network",
    "build_project",
    "build_service_group",
    "build_service_instance",
    "build_service_template",
    "build_settings",
    "build_tag_type",
    "build_workload",
    "read_services",
    "read_tag_value",
    "read_tags",
]

# IANA service names, as Kubernetes names container ports: what ``services: [http]`` can match.
_PORT_NAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
_VALUE_RULE = (
    "not a valid tag value: at most 63 letters, digits, '-', '_', '.', "
    "starting and ending with a letter or digit"
)


def read_tag_value(r: Reader, path: str, value: str, tag_type: TagType) -> bool:
    """Is ``value`` a well-formed value that ``tag_type`` allows?  Records why not."""
    if not valid_tag_value(value):
        r.problem(path, value, _VALUE_RULE)
        return False
    if tag_type.values is not None and value not in tag_type.values:
        r.problem(
            path,
            value,
            f"not an allowed value of tag type {tag_type.name!r}",
            sorted(tag_type.values),
        )
        return False
    return True


def read_tags(r: Reader, path: str, raw: Json) -> Tags:
    """``spec.tags``: type → one value (single-valued types) or values (many-valued)."""
    out: dict[str, list[str]] = {}
    for key, value in (r.fields(path, raw, None) or {}).items():
        key_path = join(path, key)
        tag_type = r.tag_type(key_path, key, pseudo_ok=False)
        if tag_type is None:
            continue
        if isinstance(value, str):
            written = [(key_path, value)]
        elif tag_type.multi_valued:
            written = r.strings(key_path, value)
        else:
            r.problem(
                key_path,
                value,
                f"tag type {key!r} holds one value: must be a string, not {describe(value)}",
            )
            continue
        out[key] = [v for p, v in written if read_tag_value(r, p, v, tag_type)]
    return Tags.of(out)


def build_tag_type(r: Reader, raw: Json) -> TagType:
    spec = r.fields("spec", raw, ("values", "multiValued")) or {}
    values: frozenset[str] | None = None
    if spec.get("values") is not None:
        written = r.strings("spec.values", spec.get("values"), non_empty=True)
        any_type = TagType(r.name)
        values = frozenset(v for p, v in written if read_tag_value(r, p, v, any_type))
    multi = r.boolean("spec.multiValued", spec.get("multiValued"), default=False)
    return TagType(r.name, values, multi)


def build_settings(r: Reader, raw: Json) -> Settings:
    spec = r.fields("spec", raw, ("defaultPosture",)) or {}
    posture = r.choice("spec.defaultPosture", spec.get("defaultPosture"), Posture, Posture.ALLOW)
    return Settings(posture)


def build_project(r: Reader, raw: Json) -> Project:
    spec = r.fields("spec", raw, ("tags",)) or {}
    return Project(r.name, read_tags(r, "spec.tags", spec.get("tags")))


def build_network(r: Reader, raw: Json) -> Network:
    spec = r.fields("spec", raw, ("subnets", "tags")) or {}
    subnets = r.cidrs("spec.subnets", spec.get("subnets"))
    return Network(r.name, r.project, tuple(subnets), read_tags(r, "spec.tags", spec.get("tags")))


def build_host(r: Reader, raw: Json) -> Host:
    spec = r.fields("spec", raw, ("address", "tags")) or {}
    address = r.ip("spec.address", spec.get("address"))
    return Host(r.name, address, read_tags(r, "spec.tags", spec.get("tags")))


# ---------------------------------------------------------------------------------------------
# Workloads


def build_workload(r: Reader, raw: Json) -> Workload:
    spec = r.fields("spec", raw, ("kind", "host", "interfaces", "ports", "tags")) or {}
    return Workload(
        name=r.name,
        project=r.project,
        kind=r.choice("spec.kind", spec.get("kind"), WorkloadKind, WorkloadKind.VM),
        host=r.object_name("spec.host", spec.get("host")),
        interfaces=_interfaces(r, spec.get("interfaces")),
        ports=_ports(r, spec.get("ports")),
        tags=read_tags(r, "spec.tags", spec.get("tags")),
    )


def _interfaces(r: Reader, raw: Json) -> tuple[Interface, ...]:
    out: list[Interface] = []
    names: dict[str, str] = {}
    for i, (path, item) in enumerate(r.items("spec.interfaces", raw)):
        spec = r.element(path, item, ("name", "ips", "network", "role"))
        if spec is None:
            continue
        name = r.string(f"{path}.name", spec.get("name")) or f"eth{i}"
        if name in names:
            r.problem(f"{path}.name", name, f"interface name already used by {names[name]}")
        names.setdefault(name, path)
        network = r.ref(f"{path}.network", spec.get("network"), "Network")
        ips: list[IPAddress] = []
        for ip_path, ip_raw in r.items(f"{path}.ips", spec.get("ips")):
            ip = r.ip(ip_path, ip_raw)
            if ip is None or not _in_network(r, ip_path, ip_raw, ip, network):
                continue
            if _claim(r, ip_path, ip_raw, ip):
                ips.append(ip)
        role = r.choice(f"{path}.role", spec.get("role"), InterfaceRole, None)
        out.append(Interface(name, tuple(ips), network, role))
    return tuple(out)


def _claim(r: Reader, path: str, written: Json, ip: IPAddress) -> bool:
    """Every IP belongs to one workload (the ``Workload`` invariant); the first use wins."""
    first = r.scope.ips.get(ip)
    if first is None:
        if r.registered:
            r.scope.ips[ip] = (r.name, r.source, path)
        return True
    workload, source, first_path = first
    if workload == r.name and source == r.source:
        where = f"this workload's {first_path}"
    else:
        where = f"workload {workload!r} ({source} {first_path})"
    r.problem(path, written, f"address {ip} is already used by {where}")
    return False


def _in_network(r: Reader, path: str, written: Json, ip: IPAddress, network: Ref | None) -> bool:
    found = None if network is None else r.scope.networks.get(network)
    if found is None or not found.subnets or ("Network", network) in r.scope.broken:
        return True
    if any(ip in subnet for subnet in found.subnets):
        return True
    r.problem(
        path,
        written,
        f"not in a subnet of network {str(network)!r}",
        [str(s) for s in found.subnets],
    )
    return False


def _ports(r: Reader, raw: Json) -> tuple[NamedPort, ...]:
    out: list[NamedPort] = []
    names: dict[str, str] = {}
    for path, item in r.items("spec.ports", raw):
        spec = r.element(path, item, ("name", "port", "protocol"))
        if spec is None:
            continue
        name = r.string(f"{path}.name", spec.get("name"), required=True)
        if name is not None and not _PORT_NAME_RE.fullmatch(name):
            r.problem(
                f"{path}.name",
                name,
                "not a port name: 1-15 lowercase letters, digits and '-', with a letter",
            )
        elif name is not None and name in names:
            r.problem(f"{path}.name", name, f"port name already used by {names[name]}")
        port = r.integer(f"{path}.port", spec.get("port"), None, lo=1, hi=65535)
        if spec.get("port") is None:
            r.missing(f"{path}.port")
        protocol = Protocol.TCP
        text = r.string(f"{path}.protocol", spec.get("protocol"))
        if text is not None and text.upper() in _PORT_PROTOCOLS:
            protocol = Protocol(text.lower())
        elif text is not None:
            r.problem(f"{path}.protocol", text, "not a port protocol", _PORT_PROTOCOLS)
        if name is not None and port is not None:
            names.setdefault(name, path)
            out.append(NamedPort(name, port, protocol))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Groups


def build_address_group(r: Reader, raw: Json) -> AddressGroup:
    spec = r.fields("spec", raw, ("prefixes", "except", "labels")) or {}
    prefixes = r.cidrs("spec.prefixes", spec.get("prefixes"))
    excepts = []
    for path, item in r.items("spec.except", spec.get("except")):
        net = r.cidr(path, item)
        if net is not None and not any(within(net, p) for p in prefixes):
            r.problem(path, item, "lies outside every prefix", [str(p) for p in prefixes])
        elif net is not None:
            excepts.append(net)
    labels = frozenset(
        label
        for path, label in r.strings("spec.labels", spec.get("labels"))
        if read_tag_value(r, path, label, r.scope.tag_types["label"])
    )
    return AddressGroup(r.name, r.project, tuple(prefixes), tuple(excepts), labels)


def read_services(r: Reader, path: str, raw: Json, *, non_empty: bool) -> list[Service]:
    out: list[Service] = []
    for item_path, text in r.strings(path, raw, required=non_empty, non_empty=non_empty):
        try:
            out.append(parse_service(text))
        except ServiceSyntaxError as exc:
            r.problem(item_path, text, exc.reason, exc.allowed)
    return out


def build_service_group(r: Reader, raw: Json) -> ServiceGroup:
    spec = r.fields("spec", raw, ("services",)) or {}
    services = read_services(r, "spec.services", spec.get("services"), non_empty=True)
    return ServiceGroup(r.name, r.project, tuple(services))


# ---------------------------------------------------------------------------------------------
# Service chains


def build_service_template(r: Reader, raw: Json) -> ServiceTemplate:
    spec = r.fields("spec", raw, ("mode", "healthCheck", "whenAllDown", "function")) or {}
    mode = r.choice(
        "spec.mode", spec.get("mode"), ServiceTemplateMode, ServiceTemplateMode.IN_NETWORK
    )
    check = r.fields(
        "spec.healthCheck",
        spec.get("healthCheck"),
        ("type", "path", "port", "intervalS", "timeoutS", "failures"),
    )
    health_check = None
    if check is not None:
        p = "spec.healthCheck"
        health_check = HealthCheck(
            type=r.choice(f"{p}.type", check.get("type"), HealthCheckType, HealthCheckType.ICMP),
            path=r.string(f"{p}.path", check.get("path")) or "/",
            port=r.integer(f"{p}.port", check.get("port"), None, lo=1, hi=65535),
            interval_s=r.positive(f"{p}.intervalS", check.get("intervalS"), 1.0),
            timeout_s=r.positive(f"{p}.timeoutS", check.get("timeoutS"), 1.0),
            failures=r.integer(f"{p}.failures", check.get("failures"), 3, lo=1),
        )
    when = r.choice(
        "spec.whenAllDown", spec.get("whenAllDown"), WhenAllDown, WhenAllDown.FAIL_CLOSED
    )
    function = r.choice(
        "spec.function", spec.get("function"), ServiceFunction, ServiceFunction.FORWARDER
    )
    return ServiceTemplate(r.name, r.project, mode, health_check, when, function)


def build_service_instance(r: Reader, raw: Json) -> ServiceInstance:
    """Each workload of the instance must have a ``left`` and a ``right`` interface."""
    spec = r.fields("spec", raw, ("template", "workloads")) or {}
    template = r.ref("spec.template", spec.get("template"), "ServiceTemplate", required=True)
    names: list[str] = []
    for path, item in r.items(
        "spec.workloads", spec.get("workloads"), required=True, non_empty=True
    ):
        name = r.workload(path, item)
        if name is None:
            continue
        if name in names:
            r.problem(path, name, "listed twice")
            continue
        names.append(name)
        workload = r.scope.workloads.get(name)
        if workload is None or ("Workload", Ref(name, workload.project)) in r.scope.broken:
            continue
        roles = {itf.role for itf in workload.interfaces}
        lacking = [role.value for role in InterfaceRole if role not in roles]
        if lacking:
            r.problem(
                path, name, f"workload {name!r} has no interface with role {' or '.join(lacking)}"
            )
    return ServiceInstance(r.name, r.project, template or Ref(""), tuple(names))
