"""What a lab is made of: the types a plan (``_plan.plan``) produces and ``_netlink.create``
realizes, and the inventory of hosts and workloads the state file keeps (``as_dict`` /
``from_dict``, JSON with camelCase keys).

Pure: no I/O.  All objects are frozen.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import IPAddress, IPNetwork

__all__ = [
    "IPInterface",
    "LabHost",
    "LabInterface",
    "LabService",
    "LabWorkload",
    "Namespace",
    "PolicyRule",
    "Role",
    "Route",
    "Topology",
    "Veth",
]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class Role(enum.Enum):
    FABRIC = "fabric"  # the bridge that joins every host and external workload
    HOST = "host"  # routes between its workloads and the fabric; its agent enforces here
    WORKLOAD = "workload"  # an enforced workload, wired into its host
    EXTERNAL = "external"  # a workload without agent, wired straight into the fabric


@dataclass(frozen=True, slots=True)
class Veth:
    """A veth pair, made in ``namespace`` with its peer created directly in ``peer_namespace``
    (so no lab link ever exists in the root namespace, even for a moment)."""

    namespace: str
    name: str
    peer_namespace: str
    peer_name: str
    alias: str | None = None  # of ``name``: which workload interface it is (docs/steering.md)


@dataclass(frozen=True, slots=True)
class Route:
    destination: IPNetwork
    interface: str
    gateway: IPAddress | None = None  # None: the destination is on the link (scope link)
    onlink: bool = False  # the gateway is not in any subnet of the interface (a /32 world)
    table: int | None = None  # None: the main table


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """``ip rule add iif <interface> lookup <table>`` (IPv4): how an in-network service sends
    what came in on one side out of the other."""

    interface: str
    table: int


@dataclass(frozen=True, slots=True)
class Namespace:
    """One network namespace and what goes into it.  ``create`` makes every namespace and
    writes its ``sysctls`` first (so interfaces made later inherit the ``default`` values), then
    the bridges, the veths (every end brought up), the addresses, and last the routes."""

    name: str
    role: Role
    owner: str  # the host or workload it stands for; "" for the fabric
    sysctls: tuple[tuple[str, str], ...] = ()  # (path under /proc/sys, value)
    bridge: str | None = None
    bridge_ports: tuple[str, ...] = ()  # interfaces of this namespace enslaved to ``bridge``
    addresses: tuple[tuple[str, IPInterface], ...] = ()  # (interface, address with prefix)
    routes: tuple[Route, ...] = ()
    rules: tuple[PolicyRule, ...] = ()


@dataclass(frozen=True, slots=True)
class LabInterface:
    name: str  # inside the workload's namespace (the manifest's name when Linux accepts it)
    peer: str  # the other end: tw-* in its host, or x-* in the fabric for an external
    ips: tuple[IPAddress, ...]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "peer": self.peer, "ips": [str(ip) for ip in self.ips]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> LabInterface:
        return cls(str(raw["name"]), str(raw["peer"]), _ips(raw.get("ips")))


@dataclass(frozen=True, slots=True)
class LabService:
    """A service workload's part (it is in a ServiceInstance): what runs in it and between
    which of its interfaces.  ``function`` and ``mode`` are the template's values
    (``forwarder``/``l7-firewall``, ``in-network``/``transparent``); ``bridge`` joins
    ``left`` and ``right`` in transparent mode."""

    mode: str
    function: str
    left: str
    right: str
    bridge: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "function": self.function,
            "left": self.left,
            "right": self.right,
            "bridge": self.bridge,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> LabService:
        bridge = raw.get("bridge")
        return cls(
            str(raw["mode"]),
            str(raw["function"]),
            str(raw["left"]),
            str(raw["right"]),
            None if bridge is None else str(bridge),
        )


@dataclass(frozen=True, slots=True)
class LabWorkload:
    """A workload as the lab made it.  ``ips`` keeps the manifest's order: the probe uses the
    first as the source and the first of the same family as the destination, as reach does."""

    name: str
    namespace: str
    host: str | None  # None: an external workload, on the fabric
    ips: tuple[IPAddress, ...]
    interfaces: tuple[LabInterface, ...] = ()  # with addresses, and a service's left/right
    service: LabService | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "namespace": self.namespace,
            "host": self.host,
            "ips": [str(ip) for ip in self.ips],
            "interfaces": [itf.as_dict() for itf in self.interfaces],
        }
        if self.service is not None:
            out["service"] = self.service.as_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> LabWorkload:
        host = raw.get("host")
        interfaces = raw.get("interfaces")
        service = raw.get("service")
        return cls(
            name=str(raw["name"]),
            namespace=str(raw["namespace"]),
            host=None if host is None else str(host),
            ips=_ips(raw.get("ips")),
            interfaces=tuple(
                LabInterface.from_dict(itf)
                for itf in (interfaces if isinstance(interfaces, list) else [])
                if isinstance(itf, dict)
            ),
            service=LabService.from_dict(service) if isinstance(service, dict) else None,
        )


@dataclass(frozen=True, slots=True)
class LabHost:
    name: str
    namespace: str
    fabric_ipv4: ipaddress.IPv4Address
    fabric_ipv6: ipaddress.IPv6Address | None  # None when no workload of the lab has IPv6
    workloads: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "fabricAddresses": [
                str(ip) for ip in (self.fabric_ipv4, self.fabric_ipv6) if ip is not None
            ],
            "workloads": list(self.workloads),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> LabHost:
        addresses = _ips(raw.get("fabricAddresses"))
        v4 = [ip for ip in addresses if isinstance(ip, ipaddress.IPv4Address)]
        v6 = [ip for ip in addresses if isinstance(ip, ipaddress.IPv6Address)]
        if not v4:
            raise ValueError(f"host {raw.get('name')!r} has no IPv4 fabric address")
        workloads = raw.get("workloads")
        return cls(
            name=str(raw["name"]),
            namespace=str(raw["namespace"]),
            fabric_ipv4=v4[0],
            fabric_ipv6=v6[0] if v6 else None,
            workloads=tuple(str(w) for w in workloads) if isinstance(workloads, list) else (),
        )


def _ips(raw: object) -> tuple[IPAddress, ...]:
    return tuple(ipaddress.ip_address(str(ip)) for ip in raw) if isinstance(raw, list) else ()


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole lab.  Invariant: namespace names are unique and all start with the lab's prefix;
    interface names are unique within their namespace."""

    lab: str
    hosts: tuple[LabHost, ...]  # sorted by name
    workloads: tuple[LabWorkload, ...]  # sorted by name, like reach's rows
    namespaces: tuple[Namespace, ...]  # the fabric, the hosts, then the workloads
    veths: tuple[Veth, ...]
    ipv6: bool = field(default=False)  # a workload has IPv6: set up IPv6 forwarding and fabric
