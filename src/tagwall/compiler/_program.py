"""What a host enforces: the compiled ``Program`` and the ``ProgramDelta`` that changes it.

A program never lists pairs of workloads.  Selectors become named address sets whose members
are maintained incrementally; rules name sets; ``matchTags`` becomes a map from address to the
listed tag values, compared at both ends; named ports become a set of (address, protocol,
port).  Per host the size is O(rules + members), and a tag change edits set elements, not rules.

Evaluation of one end (the data paths implement exactly this; docs/semantics.md):
``chains[(direction, tier)]`` holds blocks in order, one per ApplicationPolicySet that applies to
at least one local workload in that direction.  A block's rules count for a packet only when
the local address (source at egress, destination at ingress) is in the block's ``applies_to``
set.  Within a tier the first matching rule decides; ``pass`` jumps to the next tier.  After
the application tier, a local address in ``isolated[direction]`` is denied.  Audit rules are
skipped for the enforced verdict, and ``isolated_shadow`` replaces ``isolated`` for the shadow
one.  Then the default posture.

Service chains (DESIGN §2): a ``redirect`` rule's ``via`` names ServiceInstances; ``services``
says, for each instance named by a rule of this host, each of its workloads on this host (several:
scale-out), with their left and right interfaces and the template's health check and
``whenAllDown``.  A data path
steers a flow only through instances listed here (docs/steering.md).  It lists the local
workloads of every instance that an enforced redirect rule of the configuration names, not only
those this host's rules name: another host's flows may be steered through them (transit).
``remote_services`` says, for each instance this host's enforced redirect rules name and that
has no workload here, which host serves it to this host and that host's underlay address;
``peers``, on a host with ``services``, every other host with an underlay address
(``Host.address``): the hosts it accepts transit from and returns it to
(``datapath._steering``).

Set names are stable and readable (``tags:tier=web``, ``cidr:10.0.0.0/8``, ``aps:shop/apps``);
renderers map them to their own identifiers.  A name means the same on every host, but a
host's set holds only the members its local workloads can meet (compiler ``_trim.py``), and
its chains only the rules that can match at one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import (
    Action,
    HealthCheck,
    IPAddress,
    IPNetwork,
    Posture,
    Protocol,
    Ref,
    ServiceTemplateMode,
    Tier,
    TrafficDirection,
    WhenAllDown,
)
from ._ranges import range_counts, ranged

__all__ = [
    "AddressSet",
    "Block",
    "ChainKey",
    "CompiledRule",
    "CompiledService",
    "LocalInterface",
    "LocalService",
    "Peer",
    "PortElement",
    "Program",
    "ProgramDelta",
    "RemoteService",
    "SetDelta",
]

ChainKey = tuple[TrafficDirection, Tier]
PortElement = tuple[IPAddress, Protocol, int]  # (destination address, protocol, port)


@dataclass(frozen=True, slots=True)
class AddressSet:
    """Single addresses (of workloads) plus disjoint prefixes (of address groups, CIDRs,
    subnets).  Invariant: ``prefixes`` are collapsed and pairwise disjoint."""

    addresses: frozenset[IPAddress] = frozenset()
    prefixes: tuple[IPNetwork, ...] = ()

    def __contains__(self, ip: object) -> bool:
        if ip in self.addresses:
            return True
        return any(ip in p for p in self.prefixes)

    def __len__(self) -> int:
        return len(self.addresses) + len(self.prefixes)

    def as_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.addresses:
            out["addresses"] = sorted(map(str, self.addresses), key=ipaddress.ip_address)
        if self.prefixes:
            out["prefixes"] = [str(p) for p in self.prefixes]
        return out


@dataclass(frozen=True, slots=True)
class CompiledService:
    """One service entry: a protocol with an inclusive port range or ICMP type, or a named
    port resolved through the port set ``named`` (elements of the flow's destination)."""

    protocol: Protocol | None = None
    ports: tuple[int, int] | None = None
    icmp_type: int | None = None
    named: str | None = None

    def __str__(self) -> str:
        if self.named is not None:
            return f"@{self.named}"
        proto = self.protocol.value if self.protocol else "any"
        if self.ports is not None:
            first, last = self.ports
            return f"{proto}/{first}" if first == last else f"{proto}/{first}-{last}"
        if self.icmp_type is not None:
            return f"{proto}/{self.icmp_type}"
        return proto


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule as a data path runs it.  ``src``/``dst`` name address sets (None = any); a
    ``<>`` rule compiles to two entries (forward, reverse) with the same name, adjacent."""

    policy: Ref
    rule: str
    action: Action
    src: str | None = None
    dst: str | None = None
    services: tuple[CompiledService, ...] | None = None
    match_tags: str | None = None  # name of a tag map; both ends' values must be equal
    audit: bool = False
    log: bool = False
    via: tuple[Ref, ...] = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"policy": str(self.policy), "rule": self.rule}
        out["from"] = self.src or "any"
        out["to"] = self.dst or "any"
        if self.services is not None:
            out["services"] = [str(s) for s in self.services]
        if self.match_tags:
            out["matchTags"] = self.match_tags
        out["action"] = self.action.value
        if self.audit:
            out["audit"] = True
        if self.log:
            out["log"] = True
        if self.via:
            out["via"] = [str(v) for v in self.via]
        return out


@dataclass(frozen=True, slots=True)
class Block:
    """The rules of one ApplicationPolicySet, guarded by its per-host ``applies_to`` set."""

    policy_set: Ref
    applies_to: str
    rules: tuple[CompiledRule, ...]


@dataclass(frozen=True, slots=True)
class LocalInterface:
    workload: str
    interface: str
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class LocalService:
    """One workload of a service instance that runs on this host: ``Program.services`` has one
    per (instance, local workload), several for a scaled-out instance.  ``left`` and
    ``right`` are its interfaces of those roles (in-network: with addresses; transparent:
    usually without); ``health_check`` and ``when_all_down`` are the instance template's."""

    instance: Ref
    mode: ServiceTemplateMode
    workload: str
    left: LocalInterface
    right: LocalInterface
    health_check: HealthCheck | None = None
    when_all_down: WhenAllDown = WhenAllDown.FAIL_CLOSED


@dataclass(frozen=True, slots=True)
class RemoteService:
    """A service instance that this host's enforced redirect rules name and that has no
    workload on this host: ``host`` (the first host by name that holds one of its workloads
    and has an underlay address) serves it to this host; ``address`` is that host's underlay
    address (``Host.address``)."""

    instance: Ref
    host: str
    address: IPAddress


@dataclass(frozen=True, slots=True)
class Peer:
    """Another host and its underlay address (``Host.address``)."""

    host: str
    address: IPAddress


@dataclass(frozen=True)
class Program:
    """Everything one host enforces.  Invariant: every set, port set and map a block or rule
    names is present; nothing unreferenced is."""

    host: str
    interfaces: tuple[LocalInterface, ...] = ()
    sets: Mapping[str, AddressSet] = field(default_factory=dict)
    port_sets: Mapping[str, frozenset[PortElement]] = field(default_factory=dict)
    tag_maps: Mapping[str, Mapping[IPAddress, tuple[str, ...]]] = field(default_factory=dict)
    chains: Mapping[ChainKey, tuple[Block, ...]] = field(default_factory=dict)
    isolated: Mapping[TrafficDirection, str] = field(default_factory=dict)
    isolated_shadow: Mapping[TrafficDirection, str] = field(default_factory=dict)
    default_posture: Posture = Posture.ALLOW
    services: tuple[LocalService, ...] = ()  # sorted by instance (str), then as it lists them
    remote_services: tuple[RemoteService, ...] = ()  # sorted by instance (str)
    peers: tuple[Peer, ...] = ()  # sorted by host; empty without ``services``

    def set_entries(self) -> dict[str, int]:
        """Elements of each address set as a data path serving both address families
        stores them: its prefixes, and its addresses, or their runs where it stores those
        (``_ranges.ranged``)."""
        out = {name: len(s.prefixes) for name, s in self.sets.items()}
        counts = range_counts({n: s.addresses for n, s in self.sets.items()}, (4, 6))
        chosen = ranged(counts)
        for key, (n, runs) in counts.items():
            out[key[0]] += runs if key in chosen else n
        return out

    def entries(self) -> int:
        """Size as a data path sees it: set (``set_entries``), port-set and map elements
        plus rules."""
        rules = sum(len(b.rules) for blocks in self.chains.values() for b in blocks)
        return (
            sum(self.set_entries().values())
            + sum(len(p) for p in self.port_sets.values())
            + sum(len(m) for m in self.tag_maps.values())
            + rules
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "defaultPosture": self.default_posture.value,
            "interfaces": [
                {
                    "workload": i.workload,
                    "interface": i.interface,
                    "addresses": [str(a) for a in i.addresses],
                }
                for i in self.interfaces
            ],
            "chains": {
                f"{d.value}/{t.value}": [
                    {
                        "policySet": str(b.policy_set),
                        "appliesTo": b.applies_to,
                        "rules": [r.as_dict() for r in b.rules],
                    }
                    for b in blocks
                ]
                for (d, t), blocks in sorted(
                    self.chains.items(), key=lambda kv: (kv[0][0].value, list(Tier).index(kv[0][1]))
                )
            },
            "isolated": {d.value: s for d, s in sorted(self.isolated.items(), key=_dir_key)},
            "sets": {name: self.sets[name].as_dict() for name in sorted(self.sets)},
            "portSets": {
                name: sorted(f"{a}/{p.value}/{n}" for a, p, n in self.port_sets[name])
                for name in sorted(self.port_sets)
            },
            "tagMaps": {
                name: {str(a): list(v) for a, v in sorted(m.items(), key=lambda kv: str(kv[0]))}
                for name, m in sorted(self.tag_maps.items())
            },
            "services": [
                {
                    "instance": str(s.instance),
                    "mode": s.mode.value,
                    "workload": s.workload,
                    "left": s.left.interface,
                    "right": s.right.interface,
                    "whenAllDown": s.when_all_down.value,
                }
                for s in self.services
            ],
            **self._underlay_dict(),
            "entries": self.entries(),
        }

    def _underlay_dict(self) -> dict[str, object]:
        """Cross-host steering's part of ``as_dict``: present only when there is some."""
        out: dict[str, object] = {}
        if self.remote_services:
            out["remoteServices"] = [
                {"instance": str(r.instance), "host": r.host, "address": str(r.address)}
                for r in self.remote_services
            ]
        if self.peers:
            out["peers"] = {p.host: str(p.address) for p in self.peers}
        return out


def _dir_key(item: tuple[TrafficDirection, str]) -> str:
    return item[0].value


@dataclass(frozen=True, slots=True)
class SetDelta:
    """Element changes of one address set.  Shared by every host that holds every member of
    the set; a host holding a trimmed view of it (compiler ``_trim.py``) gets its own."""

    name: str
    added: AddressSet = AddressSet()
    removed: AddressSet = AddressSet()


@dataclass(frozen=True)
class ProgramDelta:
    """Turns a host's program of one revision into the next.

    Apply in this order: add ``new_sets`` (and port sets, maps), apply element deltas, replace
    ``chains`` (absent key = unchanged; an empty tuple = chain now empty), set ``isolated``,
    then drop the ``dropped_*`` names.  Chains never name a set before it exists, nor after it
    is dropped.
    """

    host: str
    new_sets: Mapping[str, AddressSet] = field(default_factory=dict)
    set_deltas: tuple[SetDelta, ...] = ()
    new_port_sets: Mapping[str, frozenset[PortElement]] = field(default_factory=dict)
    port_set_deltas: Mapping[str, tuple[frozenset[PortElement], frozenset[PortElement]]] = field(
        default_factory=dict
    )  # name → (added, removed)
    new_tag_maps: Mapping[str, Mapping[IPAddress, tuple[str, ...]]] = field(default_factory=dict)
    tag_map_deltas: Mapping[
        str, tuple[Mapping[IPAddress, tuple[str, ...]], frozenset[IPAddress]]
    ] = field(default_factory=dict)  # name → (set or changed entries, removed addresses)
    chains: Mapping[ChainKey, tuple[Block, ...]] = field(default_factory=dict)
    interfaces: tuple[LocalInterface, ...] | None = None  # None = unchanged
    isolated: Mapping[TrafficDirection, str] | None = None
    isolated_shadow: Mapping[TrafficDirection, str] | None = None
    default_posture: Posture | None = None
    services: tuple[LocalService, ...] | None = None  # None = unchanged
    remote_services: tuple[RemoteService, ...] | None = None  # None = unchanged
    peers: tuple[Peer, ...] | None = None  # None = unchanged
    dropped_sets: frozenset[str] = frozenset()
    dropped_port_sets: frozenset[str] = frozenset()
    dropped_tag_maps: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        return not (
            self.new_sets
            or self.set_deltas
            or self.new_port_sets
            or self.port_set_deltas
            or self.new_tag_maps
            or self.tag_map_deltas
            or self.chains
            or self.interfaces is not None
            or self.isolated is not None
            or self.isolated_shadow is not None
            or self.default_posture is not None
            or self.services is not None
            or self.remote_services is not None
            or self.peers is not None
            or self.dropped_sets
            or self.dropped_port_sets
            or self.dropped_tag_maps
        )
