"""Service chains in the nftables data path: which flows go through which service instance,
and the marks, labels and routes that take them there (DESIGN §2 "Service chains", §4
"Redirect"; docs/steering.md is the user's view).  Pure: ``_nft_render`` writes the nft side,
``_routing`` applies the routes.

A **path** is the ``via`` of an enforced ``redirect`` rule of this host's program whose every
instance has a workload on this host (``Program.services``); a redirect rule whose path is not
local allows without steering.  Each path gets a ``ct label`` bit (0-127): set on a flow's
first packet, it pins the flow (both directions) to the path for the flow's life.  ``ct mark``
is not touched: it holds the decision ids (``_nft_decisions``).

A **hop** is one way into a service: (instance, side entered).  Hop ``n`` is the packet mark
``STEER_MARK | n``, the policy-routing rule ``fwmark STEER_MARK|n/RULE_MASK lookup
ROUTE_TABLE_BASE + n`` (priority ``RULE_PRIORITY``) and that table's one route::

    in-network:   default via <the service interface's IPv4 address> dev <its host port> onlink
    transparent:  default via TRANSPARENT_NEXT_HOP dev <its host port> onlink, with the permanent
                  neighbour TRANSPARENT_NEXT_HOP → the MAC of the instance's *other* host port

so a transparent service, which has no address, gets frames addressed to the host's own port
on the far side of its bridge: they cross it and come back to the host, and the service stays
invisible at L3.  Worked example: hop 2 = mark ``0x73000002``, table ``0x74770002``.

Marks are set in the prerouting hook (chain ``steer``, before routing) and live only in this
namespace (a veth crossing namespaces clears them).  For a flow of path p through instances
I1…Ik (host ports Lj, Rj), ``steer`` says, in order:

* back from a service, original direction on Rj: into I(j+1) by its left, or (j = k) deliver;
  reply direction on Lj: into I(j-1) by its right, or (j = 1) deliver; any other packet of p
  on one of p's ports: deliver.  "Deliver" is ``BACK_FLAG`` alone: the main table routes it,
  and the forward chains accept packets with ``BACK_FLAG`` without evaluating them again
  (they were evaluated on their way in);
* entering anywhere else: original direction into I1 by its left; replies into Ik by its right
  (symmetric: replies take the instances in reverse order);
* a new flow without a label: ``classify``, the policy walk of the forward chains again with
  other verdicts (``_nft_render``): the first rule that decides at the source's egress decides,
  and if it is not a steered redirect, the destination's ingress walk; a steered redirect sets
  the path's label and the first hop's mark.  So a flow is steered by the rule that decides it,
  exactly as the forward chains decide it (redirect decides like allow), IPv4 only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ..compiler import LocalService, Program
from ..errors import DatapathError
from ..model import Action, InterfaceRole, Ref, ServiceTemplateMode

__all__ = [
    "BACK_FLAG",
    "MAX_PATHS",
    "ROUTE_TABLE_BASE",
    "RULE_MASK",
    "RULE_PRIORITY",
    "STEER_MARK",
    "TRANSPARENT_NEXT_HOP",
    "Hop",
    "Port",
    "Steering",
    "interface_alias",
    "steered_paths",
    "steering_for",
]

STEER_MARK = 0x73000000  # "s"; hop n = STEER_MARK | n.  Disjoint from matchTags' 0x74……
BACK_FLAG = 0x00800000  # with STEER_MARK: back from a service, already evaluated
RULE_MASK = 0xFF7FFFFF  # policy routing ignores BACK_FLAG
_MAX_HOP = 0x007FFFFF
ROUTE_TABLE_BASE = 0x74770000  # "tw": table of hop n = ROUTE_TABLE_BASE + n
RULE_PRIORITY = 0x7477  # before the main table's 32766
TRANSPARENT_NEXT_HOP = ipaddress.IPv4Address("169.254.0.116")
MAX_PATHS = 128  # ct label bits

Path = tuple[Ref, ...]
HopKey = tuple[Ref, InterfaceRole]  # (instance, the side a packet enters it by)
K = TypeVar("K", Path, HopKey)


def interface_alias(workload: str, interface: str) -> str:
    """The alias (``ip link set … alias``) that names the host side of a workload's interface:
    how the data path finds a service's ports.  Whoever wires workloads (the lab, a CNI
    plugin) sets it; ``"tagwall:fw-a/left"``."""
    return f"tagwall:{workload}/{interface}"


@dataclass(frozen=True, slots=True)
class Port:
    """The host side of one service interface."""

    name: str  # the host's device
    mac: str  # its MAC address, ``aa:bb:…``


@dataclass(frozen=True, slots=True)
class Hop:
    """One route into a service (the module docstring): packets marked ``STEER_MARK | id``
    leave by ``device`` towards ``gateway``; ``lladdr`` (transparent) is the permanent
    neighbour entry that resolves ``gateway``."""

    id: int
    device: str
    gateway: ipaddress.IPv4Address
    lladdr: str | None = None

    @property
    def mark(self) -> int:
        return STEER_MARK | self.id

    @property
    def table(self) -> int:
        return ROUTE_TABLE_BASE + self.id


@dataclass(frozen=True)
class Steering:
    """What a host steers through.  Invariant: every instance of every path is in
    ``services`` and has both ports and both hops; ids are unique."""

    paths: Mapping[Path, int] = field(default_factory=dict)  # → ct label bit
    hop_ids: Mapping[HopKey, int] = field(default_factory=dict)
    ports: Mapping[HopKey, Port] = field(default_factory=dict)
    services: Mapping[Ref, LocalService] = field(default_factory=dict)

    def hops(self) -> list[Hop]:
        """Every route this steering needs, by id."""
        out = []
        for (instance, side), n in sorted(self.hop_ids.items(), key=lambda kv: kv[1]):
            service = self.services[instance]
            port = self.ports[(instance, side)]
            if service.mode is ServiceTemplateMode.TRANSPARENT:
                other = InterfaceRole.RIGHT if side is InterfaceRole.LEFT else InterfaceRole.LEFT
                far = self.ports[(instance, other)].mac
                out.append(Hop(n, port.name, TRANSPARENT_NEXT_HOP, far))
            else:
                out.append(Hop(n, port.name, _address(service, side)))
        return out

    def hop_mark(self, instance: Ref, side: InterfaceRole) -> int:
        return STEER_MARK | self.hop_ids[(instance, side)]

    def lines(self) -> list[str]:
        """The rules of chain ``steer`` before ``ct state new jump classify`` (the module
        docstring)."""
        back, entry = [], []
        for path, bit in sorted(self.paths.items(), key=lambda kv: kv[1]):
            label = f"ct label {bit}"
            ports = [self.ports[(i, side)].name for i in path for side in InterfaceRole]
            for j, instance in enumerate(path):
                right = self.ports[(instance, InterfaceRole.RIGHT)].name
                left = self.ports[(instance, InterfaceRole.LEFT)].name
                onward = self.hop_mark(path[j + 1], InterfaceRole.LEFT) if j + 1 < len(path) else 0
                back_ = self.hop_mark(path[j - 1], InterfaceRole.RIGHT) if j > 0 else 0
                back.append(
                    f'iifname "{right}" {label} ct direction original '
                    f"meta mark set {STEER_MARK | BACK_FLAG | onward:#010x} accept"
                )
                back.append(
                    f'iifname "{left}" {label} ct direction reply '
                    f"meta mark set {STEER_MARK | BACK_FLAG | back_:#010x} accept"
                )
            names = ", ".join(f'"{p}"' for p in dict.fromkeys(ports))
            back.append(
                f"iifname {{ {names} }} {label} meta mark set {STEER_MARK | BACK_FLAG:#010x} accept"
            )
            first = self.hop_mark(path[0], InterfaceRole.LEFT)
            last = self.hop_mark(path[-1], InterfaceRole.RIGHT)
            entry.append(f"{label} ct direction original meta mark set {first:#010x} accept")
            entry.append(f"{label} ct direction reply meta mark set {last:#010x} accept")
        return back + entry

    def verdict(self, path: Path) -> str:
        """The classify verdict of a redirect rule through ``path`` (steered)."""
        first = self.hop_mark(path[0], InterfaceRole.LEFT)
        return f"ct label set {self.paths[path]} meta mark set {first:#010x} accept"


def _address(service: LocalService, side: InterfaceRole) -> ipaddress.IPv4Address:
    itf = service.left if side is InterfaceRole.LEFT else service.right
    for ip in itf.addresses:
        if isinstance(ip, ipaddress.IPv4Address):
            return ip
    raise DatapathError(
        f"in-network service instance {service.instance} cannot be steered through: "
        f"workload {service.workload!r} has no IPv4 address on its {side.value} interface "
        f"{itf.interface!r}"
    )


def steered_paths(program: Program) -> set[Path]:
    """The ``via`` of every enforced redirect rule whose instances all run on this host."""
    local = {s.instance for s in program.services}
    return {
        r.via
        for blocks in program.chains.values()
        for b in blocks
        for r in b.rules
        if r.action is Action.REDIRECT and not r.audit and r.via and set(r.via) <= local
    }


def _allocate(
    previous: Mapping[K, int], wanted: Iterable[K], first: int, last: int
) -> dict[K, int]:
    """Ids for ``wanted``: those of ``previous`` kept, the lowest free ones for the rest."""
    keys = set(wanted)
    ids = {k: n for k, n in previous.items() if k in keys}
    taken = set(ids.values())
    free = (n for n in range(first, last + 1) if n not in taken)
    for key in sorted(keys - ids.keys(), key=repr):
        n = next(free, None)
        if n is None:
            raise DatapathError(f"a host steers through at most {last - first + 1} paths")
        ids[key] = n
    return ids


def steering_for(
    program: Program, ports: Mapping[tuple[str, str], Port], previous: Steering | None
) -> Steering:
    """The steering of ``program``; ``ports`` maps (workload, interface) to its host port
    (``_routing.find_ports``).  Ids of ``previous`` are kept for what stays, so that flows
    already pinned keep their label bit.  Raises ``DatapathError`` when a service's port is
    missing or an in-network service has no IPv4 address on a side."""
    paths = steered_paths(program)
    if not paths:
        return Steering()
    services = {s.instance: s for s in program.services}
    used = {i for p in paths for i in p}
    keys = [(i, side) for i in sorted(used, key=str) for side in InterfaceRole]
    found: dict[HopKey, Port] = {}
    for instance, side in keys:
        s = services[instance]
        itf = s.left if side is InterfaceRole.LEFT else s.right
        port = ports.get((s.workload, itf.interface))
        if port is None:
            raise DatapathError(
                f"service instance {instance}: no interface of this host is the {side.value} "
                f"interface {itf.interface!r} of workload {s.workload!r} (alias "
                f"{interface_alias(s.workload, itf.interface)!r})"
            )
        found[(instance, side)] = port
    before = previous or Steering()
    bits = _allocate(dict(before.paths), paths, 0, MAX_PATHS - 1)
    hop_ids = _allocate(dict(before.hop_ids), keys, 1, _MAX_HOP)
    steering = Steering(bits, hop_ids, found, {i: services[i] for i in used})
    steering.hops()  # raises for an in-network side without an IPv4 address
    return steering
