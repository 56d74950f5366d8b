"""Planning a lab: a ``Config`` → the namespaces, veth pairs, addresses and routes that make it.

Pure: imports no pyroute2, socket or subprocess, and touches nothing; ``_netlink.create``
realizes a plan.  Every manifest that cannot be built is refused here, before anything is made,
with every problem named (workload, field path, value, reason).

Address plan (reserved: a workload address inside it is refused)::

    169.254.1.1/32, fe80::1/64   the gateway of every workload: set on each tw-* interface of
                                 its host (the same address on every link, as Calico does)
    169.254.64.0/18              the fabric: host i (1-based, hosts sorted by name) has
                                 169.254.64.0 + i, and fe80::a9fe:4000 + i if the lab has IPv6
                                 (host-1 of three-tier: 169.254.64.1, fe80::a9fe:4001)
    fe80::/10                    link-local: never a workload address

Topology::

    <lab>-fabric     bridge br-fabric; a port h-<host> per host, x-<name> per external interface
    <lab>-h-<host>   "fabric" into the bridge; a tw-* veth per wired workload interface; forwards.
                     Routes: each local workload address → its tw-* interface; each remote one →
                     the owning host's fabric address; each external one → straight onto the
                     fabric.  Its agent enforces on the tw-* interfaces.
    <lab>-w-<name>   an enforced workload: each interface with addresses is a veth into its host
                     (the manifest's name, e.g. eth0) holding them as /32 and /128; default
                     routes via 169.254.1.1 (onlink) and fe80::1 on the first interface of
                     each family.
    <lab>-w-<name>   an external workload (no host, no agent): its interfaces are fabric ports;
                     routes to host workloads via the owning host's fabric address, to other
                     externals directly.
    <lab>-w-<name>   a service workload (listed by a ServiceInstance): its left and right
                     interfaces are veths into its host even without addresses.  In-network:
                     forwards, and sends what comes in on one side out of the other
                     (``ip rule iif left lookup 101``: default via 169.254.1.1 dev right;
                     102 the other way).  Transparent: bridge ``br-svc`` joins left and right,
                     which have no addresses.  The host side of every workload interface has
                     the alias ``tagwall:<workload>/<interface>``: how the agent finds a
                     service's ports (docs/steering.md).

Hosts are ``Config.host_names()``: declared hosts, the hosts workloads name, and one host per
project (``global`` for global workloads) for workloads that name none.  A workload without any
address gets an empty namespace (only ``lo``): nothing can reach it; an interface without
addresses gets no veth.
"""

from __future__ import annotations

import ipaddress

from ..errors import Problem, ValidationError
from ..model import (
    Config,
    InterfaceRole,
    IPAddress,
    IPNetwork,
    ServiceTemplate,
    ServiceTemplateMode,
    Workload,
)
from ._names import (
    DEFAULT_LAB,
    FABRIC_BRIDGE,
    FABRIC_INTERFACE,
    check_lab_name,
    fabric_namespace,
    fabric_port,
    host_interface,
    host_namespace,
    interface_alias,
    workload_interface,
    workload_namespace,
)
from ._topology import (
    IPInterface,
    LabHost,
    LabInterface,
    LabService,
    LabWorkload,
    Namespace,
    PolicyRule,
    Role,
    Route,
    Topology,
    Veth,
)

__all__ = ["FABRIC_IPV4", "GATEWAY_IPV4", "GATEWAY_IPV6", "plan"]

GATEWAY_IPV4 = ipaddress.IPv4Address("169.254.1.1")
GATEWAY_IPV6 = ipaddress.IPv6Address("fe80::1")
FABRIC_IPV4 = ipaddress.IPv4Network("169.254.64.0/18")
_FABRIC_IPV6_BASE = ipaddress.IPv6Address("fe80::a9fe:4000")  # mirrors 169.254.64.0
_LINK_LOCAL_IPV6 = ipaddress.IPv6Network("fe80::/10")
_MAX_HOSTS = FABRIC_IPV4.num_addresses - 2  # without the network and broadcast addresses
SERVICE_BRIDGE = "br-svc"
_SERVICE_TABLES = {InterfaceRole.LEFT: 101, InterfaceRole.RIGHT: 102}  # in on that side


# -- planning ---------------------------------------------------------------------------------


def plan(config: Config, lab: str = DEFAULT_LAB) -> Topology:
    """The lab for ``config``.  Raises ``ValidationError`` listing every workload address the
    lab cannot use and every name clash; ``ValueError`` for an invalid lab name."""
    check_lab_name(lab)
    problems = _address_problems(config) + _service_problems(config)
    host_names = config.host_names()
    if len(host_names) > _MAX_HOSTS:
        problems.append(
            Problem(f"the lab's fabric ({FABRIC_IPV4}) holds at most {_MAX_HOSTS} hosts")
        )
    if problems:
        raise ValidationError(problems)
    return _Planner(config, lab, host_names).topology()


def _address_problems(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    for name in sorted(config.workloads):
        for i, itf in enumerate(config.workloads[name].interfaces):
            for j, ip in enumerate(itf.ips):
                reason = _unusable(ip)
                if reason is not None:
                    problems.append(
                        Problem(
                            reason,
                            path=f"spec.interfaces[{i}].ips[{j}]",
                            kind="Workload",
                            name=name,
                            value=str(ip),
                        )
                    )
    return problems


def service_templates(config: Config) -> dict[str, ServiceTemplate]:
    """Service workload → the template of the first ServiceInstance (by name) listing it."""
    out: dict[str, ServiceTemplate] = {}
    for ref in sorted(config.service_instances, key=str):
        instance = config.service_instances[ref]
        for name in instance.workloads:
            out.setdefault(name, config.service_templates[instance.template])
    return out


def _service_problems(config: Config) -> list[Problem]:
    """In-network service interfaces need an IPv4 address (the host routes to it);
    transparent ones must have none (the service is a bridge, invisible at L3)."""
    problems: list[Problem] = []
    for name, template in sorted(service_templates(config).items()):
        for i, itf in enumerate(config.workloads[name].interfaces):
            if itf.role is None:
                continue
            if template.mode is ServiceTemplateMode.IN_NETWORK and not any(
                ip.version == 4 for ip in itf.ips
            ):
                reason = (
                    f"the {itf.role.value} interface of an in-network service (template "
                    f"{template.name!r}) needs an IPv4 address"
                )
            elif template.mode is ServiceTemplateMode.TRANSPARENT and itf.ips:
                reason = (
                    f"the {itf.role.value} interface of a transparent service (template "
                    f"{template.name!r}) has no addresses: the service bridges left to right"
                )
            else:
                continue
            problems.append(
                Problem(
                    reason,
                    path=f"spec.interfaces[{i}].ips",
                    kind="Workload",
                    name=name,
                    value=[str(ip) for ip in itf.ips],
                )
            )
    return problems


def _unusable(ip: IPAddress) -> str | None:
    if ip == GATEWAY_IPV4:
        return f"reserved by the lab: {GATEWAY_IPV4} is every workload's gateway"
    if ip in FABRIC_IPV4:
        return f"reserved by the lab: {FABRIC_IPV4} addresses the fabric between hosts"
    if ip in _LINK_LOCAL_IPV6:
        return "a link-local address cannot be routed between the lab's namespaces"
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
        return "a loopback, multicast or unspecified address cannot be a workload's address"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address cannot be a workload's address"
    return None


def _prefix(ip: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(ip)  # /32 or /128


class _Planner:
    """Builds one Topology; lives for one ``plan`` call."""

    def __init__(self, config: Config, lab: str, host_names: list[str]) -> None:
        self.config = config
        self.lab = lab
        self.ipv6 = any(ip.version == 6 for w in config.workloads.values() for ip in w.ips)
        self.templates = service_templates(config)
        self.aliases: dict[tuple[str, str], str] = {}  # (workload, host side) → alias
        self.hosts = {
            name: LabHost(
                name=name,
                namespace=host_namespace(lab, name),
                fabric_ipv4=FABRIC_IPV4.network_address + index,
                fabric_ipv6=_FABRIC_IPV6_BASE + index if self.ipv6 else None,
                workloads=tuple(
                    sorted(w.name for w in config.workloads.values() if config.host_of(w) == name)
                ),
            )
            for index, name in enumerate(host_names, start=1)
        }
        self.workloads = {
            name: self._workload(config.workloads[name]) for name in sorted(config.workloads)
        }

    def _workload(self, w: Workload) -> LabWorkload:
        host = self.config.host_of(w)
        template = self.templates.get(w.name)
        taken: set[str] = set()
        wired: list[LabInterface] = []
        sides: dict[InterfaceRole, str] = {}
        for index, itf in enumerate(w.interfaces):
            if not itf.ips and (template is None or itf.role is None):
                continue
            inside = workload_interface(itf.name, index, taken)
            taken.add(inside)
            n = len(wired)
            peer = host_interface(w.name, n) if host is not None else fabric_port("x", w.name, n)
            wired.append(LabInterface(inside, peer, itf.ips))
            self.aliases[(w.name, peer)] = interface_alias(w.name, itf.name)
            if template is not None and itf.role is not None:
                sides.setdefault(itf.role, inside)
        service = None
        if template is not None:
            transparent = template.mode is ServiceTemplateMode.TRANSPARENT
            service = LabService(
                template.mode.value,
                template.function.value,
                sides[InterfaceRole.LEFT],
                sides[InterfaceRole.RIGHT],
                SERVICE_BRIDGE if transparent else None,
            )
        namespace = workload_namespace(self.lab, w.name)
        return LabWorkload(w.name, namespace, host, w.ips, tuple(wired), service)

    def topology(self) -> Topology:
        namespaces = [self._fabric()]
        namespaces += [self._host(host) for host in self.hosts.values()]
        namespaces += [self._workload_namespace(w) for w in self.workloads.values()]
        fabric = fabric_namespace(self.lab)
        veths = [
            Veth(h.namespace, FABRIC_INTERFACE, fabric, self._port(h)) for h in self.hosts.values()
        ]
        for w in self.workloads.values():
            side = fabric if w.host is None else self.hosts[w.host].namespace
            veths += [
                Veth(side, itf.peer, w.namespace, itf.name, self.aliases[(w.name, itf.peer)])
                for itf in w.interfaces
            ]
        self._check_unique(namespaces, veths)
        return Topology(
            lab=self.lab,
            hosts=tuple(self.hosts.values()),
            workloads=tuple(self.workloads.values()),
            namespaces=tuple(namespaces),
            veths=tuple(veths),
            ipv6=self.ipv6,
        )

    @staticmethod
    def _port(host: LabHost) -> str:
        return fabric_port("h", host.name)

    def _sysctls(self, role: Role, routes: bool = False) -> tuple[tuple[str, str], ...]:
        """``routes``: an in-network service workload, which forwards like a host."""
        # rp_filter off: a multi-interface workload answers from one interface what came in on
        # another, and the gateway 169.254.1.1 is on no subnet of the workload's side.
        out = [("net/ipv4/conf/all/rp_filter", "0"), ("net/ipv4/conf/default/rp_filter", "0")]
        if role is Role.HOST or routes:
            out.append(("net/ipv4/ip_forward", "1"))
        if self.ipv6:
            # DAD would keep fresh addresses "tentative" (unusable) for a second or more.
            out += [
                ("net/ipv6/conf/all/accept_dad", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
            ]
            if role is Role.HOST:
                out.append(("net/ipv6/conf/all/forwarding", "1"))
        return tuple(out)

    def _fabric(self) -> Namespace:
        ports = [self._port(h) for h in self.hosts.values()]
        ports += [
            itf.peer for w in self.workloads.values() if w.host is None for itf in w.interfaces
        ]
        return Namespace(
            fabric_namespace(self.lab),
            Role.FABRIC,
            "",
            sysctls=self._sysctls(Role.FABRIC),
            bridge=FABRIC_BRIDGE,
            bridge_ports=tuple(ports),
        )

    def _fabric_address(self, host: str, version: int) -> IPAddress | None:
        h = self.hosts[host]
        return h.fabric_ipv4 if version == 4 else h.fabric_ipv6

    def _host(self, host: LabHost) -> Namespace:
        fabric_len = FABRIC_IPV4.prefixlen
        addresses: list[tuple[str, IPInterface]] = [
            (FABRIC_INTERFACE, ipaddress.ip_interface(f"{host.fabric_ipv4}/{fabric_len}"))
        ]
        if host.fabric_ipv6 is not None:
            addresses.append((FABRIC_INTERFACE, ipaddress.ip_interface(f"{host.fabric_ipv6}/64")))
        routes: list[Route] = []
        for w in self.workloads.values():
            for itf in w.interfaces:
                if w.host == host.name:
                    if not itf.ips:
                        continue  # a transparent service's port: nothing is routed to it
                    addresses.append((itf.peer, ipaddress.ip_interface(f"{GATEWAY_IPV4}/32")))
                    if self.ipv6:
                        addresses.append((itf.peer, ipaddress.ip_interface(f"{GATEWAY_IPV6}/64")))
                    routes += [Route(_prefix(ip), itf.peer) for ip in itf.ips]
                elif w.host is None:
                    routes += [Route(_prefix(ip), FABRIC_INTERFACE) for ip in itf.ips]
                else:
                    routes += [
                        Route(
                            _prefix(ip), FABRIC_INTERFACE, self._fabric_address(w.host, ip.version)
                        )
                        for ip in itf.ips
                    ]
        return Namespace(
            host.namespace,
            Role.HOST,
            host.name,
            sysctls=self._sysctls(Role.HOST),
            addresses=tuple(addresses),
            routes=tuple(routes),
        )

    def _workload_namespace(self, w: LabWorkload) -> Namespace:
        addresses = [
            (itf.name, ipaddress.ip_interface(f"{ip}/{ip.max_prefixlen}"))
            for itf in w.interfaces
            for ip in itf.ips
        ]
        # The interface each family leaves by: the first one holding an address of it.
        out: dict[int, str] = {}
        for itf in w.interfaces:
            for ip in itf.ips:
                out.setdefault(ip.version, itf.name)
        routes: list[Route] = []
        if w.host is not None:
            if 4 in out:
                routes.append(Route(ipaddress.ip_network("0.0.0.0/0"), out[4], GATEWAY_IPV4, True))
            if 6 in out:
                routes.append(Route(ipaddress.ip_network("::/0"), out[6], GATEWAY_IPV6))
        else:
            for other in self.workloads.values():
                if other.name == w.name:
                    continue
                for ip in (ip for itf in other.interfaces for ip in itf.ips):
                    if ip.version not in out:
                        continue
                    if other.host is None:
                        routes.append(Route(_prefix(ip), out[ip.version]))
                    else:
                        via = self._fabric_address(other.host, ip.version)
                        routes.append(Route(_prefix(ip), out[ip.version], via, ip.version == 4))
        rules: list[PolicyRule] = []
        service = w.service
        routed = service is not None and service.bridge is None
        if service is not None and routed:
            # What comes in on one side leaves by the other, whatever its destination.
            for side, table in _SERVICE_TABLES.items():
                entry, leave = (
                    (service.left, service.right)
                    if side is InterfaceRole.LEFT
                    else (service.right, service.left)
                )
                rules.append(PolicyRule(entry, table))
                routes.append(
                    Route(ipaddress.ip_network("0.0.0.0/0"), leave, GATEWAY_IPV4, True, table)
                )
        return Namespace(
            w.namespace,
            Role.WORKLOAD if w.host is not None else Role.EXTERNAL,
            w.name,
            sysctls=self._sysctls(Role.WORKLOAD, routes=routed),
            bridge=service.bridge if service is not None else None,
            bridge_ports=(service.left, service.right)
            if service is not None and service.bridge
            else (),
            addresses=tuple(addresses),
            routes=tuple(routes),
            rules=tuple(rules),
        )

    def _check_unique(self, namespaces: list[Namespace], veths: list[Veth]) -> None:
        """Shortened names can clash (in theory: digests); refuse rather than build wrongly."""
        problems: list[Problem] = []
        seen: dict[str, str] = {}
        for ns in namespaces:
            owner = ns.owner or "the fabric"
            if ns.name in seen:
                problems.append(
                    Problem(f"namespace name {ns.name!r} clashes with {seen[ns.name]}", name=owner)
                )
            seen.setdefault(ns.name, owner)
        ends: dict[tuple[str, str], Veth] = {}
        for veth in veths:
            for end in ((veth.namespace, veth.name), (veth.peer_namespace, veth.peer_name)):
                if end in ends:
                    problems.append(
                        Problem(f"interface name {end[1]!r} is used twice in namespace {end[0]!r}")
                    )
                ends.setdefault(end, veth)
        if problems:
            raise ValidationError(problems)
