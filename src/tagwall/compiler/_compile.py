"""The incremental compiler: a Config in, one Program per host out; each new Config in, deltas
for the hosts it affects out.

Stages (cilium ``resolve.go`` style):

* **resolve** — every endpoint form a rule uses becomes a global address set, named by
  ``endpoint_name``; named ports become port sets; ``matchTags`` lists become tag maps.
  Each is computed once for all hosts through the ``TagIndex``.
* **distill** — per host, the ApplicationPolicySets that pick a local workload contribute
  their ``Block`` to the chains of their tier and directions; the block's ``applies_to`` set
  holds only local addresses.  Then each chain keeps only the rules that can match at a local
  end, and each set and tag map only the members those rules can compare (``_trim.py``,
  which says why that is exact).  Set names are the same on every host; members differ.
* **diff** — ``update(new_config)`` finds the objects that changed.  Workload and
  FirewallPolicy changes take fast paths that touch only affected sets and hosts; anything
  else recompiles and diffs whole programs (rare kinds: projects, networks, groups, settings).

State ownership: a ``Compiler`` is single-threaded; only ``update`` mutates it, and a
``Program`` returned by ``program()`` is an immutable snapshot that later updates never touch.
"""

from __future__ import annotations

import enum
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..model import (
    Action,
    ApplicationPolicySet,
    Config,
    Endpoint,
    FirewallPolicy,
    InterfaceRole,
    IPAddress,
    IPNetwork,
    Mode,
    Ref,
    RuleDirection,
    Service,
    TagsEndpoint,
    Tier,
    TrafficDirection,
    Workload,
)
from ._diff import diff_programs
from ._index import LabelRegions, TagIndex, endpoint_members, endpoint_name
from ._program import (
    AddressSet,
    Block,
    ChainKey,
    CompiledRule,
    CompiledService,
    LocalInterface,
    LocalService,
    PortElement,
    Program,
    ProgramDelta,
    SetDelta,
)
from ._trim import (
    RuleUse,
    Uses,
    in_map,
    in_view,
    local_side,
    map_view,
    rule_use,
    trimmable,
    view,
)

__all__ = ["Compiler", "compile_program"]


@dataclass
class _GlobalSet:
    endpoint: Endpoint
    members: set[IPAddress]
    prefixes: tuple[IPNetwork, ...]
    workloads: set[str] = field(default_factory=set)  # for tag sets: the matching workloads


Values = tuple[str, ...]  # one address's values of a tag map's types
MapMove = tuple[Values | None, Values | None]  # an address's tuple (before, after) an update
PortChange = tuple[frozenset[PortElement], frozenset[PortElement]]  # (added, removed)
View = set[IPAddress] | None  # a host's members of a set; None: every member (the global set)


@dataclass
class _Host:
    """One host's compiled state.

    Invariants: ``chains`` holds, of each global block, the rules with a ``RuleUse`` in that
    chain, as the same objects and in order; ``uses`` sums those uses; ``views`` and ``maps``
    hold exactly the sets and tag maps ``uses`` names, with the members ``_trim`` defines;
    ``applied`` holds only non-empty entries.  ``local_in``, ``ends`` and ``tuples_of`` are
    scratch caches of one distill or swap (``forget`` empties them): what they hold depends on
    ``ips`` and ``applied`` alone, but keeping them would only burden the garbage collector.
    """

    local: set[str] = field(default_factory=set)
    ips: frozenset[IPAddress] = frozenset()
    applied: dict[Ref, frozenset[IPAddress]] = field(default_factory=dict)
    chains: dict[ChainKey, tuple[Block, ...]] = field(default_factory=dict)
    uses: Uses = field(default_factory=Uses)
    local_in: dict[str, frozenset[IPAddress]] = field(default_factory=dict)
    ends: dict[tuple[str, str | None], frozenset[IPAddress]] = field(default_factory=dict)
    tuples_of: dict[tuple[str, frozenset[IPAddress]], frozenset[Values]] = field(
        default_factory=dict
    )  # caches: see ``_ends`` and ``_tuples_of``
    views: dict[str, View] = field(default_factory=dict)
    maps: dict[str, dict[IPAddress, Values]] = field(default_factory=dict)
    isolated: dict[TrafficDirection, frozenset[IPAddress]] = field(default_factory=dict)
    isolated_shadow: dict[TrafficDirection, frozenset[IPAddress]] = field(default_factory=dict)
    interfaces: tuple[LocalInterface, ...] = ()
    services: tuple[LocalService, ...] = ()

    def forget(self) -> None:
        self.local_in.clear()
        self.ends.clear()
        self.tuples_of.clear()


@dataclass
class _Changes:
    """Element changes of global sets, port sets and tag maps in one update, and every
    address of the workloads that changed.  Hosts that hold every member of a set (or a port
    set) receive its change object as is; trimmed views and tag maps are re-tested for
    ``ips`` on each host holding their tuples."""

    sets: dict[str, SetDelta] = field(default_factory=dict)
    ports: dict[str, PortChange] = field(default_factory=dict)
    maps: dict[str, dict[IPAddress, MapMove]] = field(default_factory=dict)  # changed tuples
    ips: set[IPAddress] = field(default_factory=set)


class _Absent(enum.Enum):
    ABSENT = "absent"  # a set a host does not hold


_ABSENT = _Absent.ABSENT


@dataclass(frozen=True)
class _Moved:
    """The addresses of one update's changed workloads, as every host re-tests them."""

    ips: frozenset[IPAddress]
    holders: dict[str, set[IPAddress]]  # trimmable set → which of ``ips`` it holds now
    was: set[str]  # trimmable sets whose members changed (they may have held some before)
    tuples: dict[IPAddress, dict[str, Values | None]]  # address → tag map → its tuple now
    sets_of: dict[IPAddress, list[str]]  # address → the trimmable sets holding it now


@dataclass
class _Parts:
    """A host's delta being assembled (fields as in ``ProgramDelta``)."""

    new_sets: dict[str, AddressSet] = field(default_factory=dict)
    set_deltas: list[SetDelta] = field(default_factory=list)
    new_ports: dict[str, frozenset[PortElement]] = field(default_factory=dict)
    port_deltas: dict[str, PortChange] = field(default_factory=dict)
    new_maps: dict[str, Mapping[IPAddress, Values]] = field(default_factory=dict)
    map_deltas: dict[str, tuple[Mapping[IPAddress, Values], frozenset[IPAddress]]] = field(
        default_factory=dict
    )
    dropped: set[str] = field(default_factory=set)

    def delta(self, host: str, **others: object) -> ProgramDelta:
        return ProgramDelta(
            host,
            new_sets=self.new_sets,
            set_deltas=tuple(self.set_deltas),
            new_port_sets=self.new_ports,
            port_set_deltas=self.port_deltas,
            new_tag_maps=self.new_maps,
            tag_map_deltas=self.map_deltas,
            **_dropped(self.dropped),  # type: ignore[arg-type]  # the three dropped_* fields
            **others,  # type: ignore[arg-type]  # further ProgramDelta fields
        )


def _aps_ref(aps: ApplicationPolicySet) -> Ref:
    return Ref(aps.name, aps.project)


def _kept(block: Block, keep: Sequence[bool]) -> Block:
    """The block as a chain of one host runs it: the rules ``keep`` marks (A of ``_trim``)."""
    if all(keep):
        return block
    return Block(
        block.policy_set,
        block.applies_to,
        tuple(r for r, k in zip(block.rules, keep, strict=True) if k),
    )


def _kept_positions(rules: tuple[CompiledRule, ...], kept: tuple[CompiledRule, ...]) -> list[bool]:
    """Which of ``rules`` a trimmed block holds (``_Host`` invariant: the same objects, in
    order; equal rules are kept alike, so a repeated object cannot mislead the walk)."""
    flags, j = [], 0
    for r in rules:
        hit = j < len(kept) and kept[j] is r
        flags.append(hit)
        j += hit
    return flags


class Compiler:
    """Compiled state of one configuration; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self._build(config)

    # -- resolve --------------------------------------------------------------------------------

    def _build(self, config: Config) -> None:
        self.config = config
        self._index = TagIndex()
        for w in config.workloads.values():
            self._index.put(w.name, config.effective_tags(w.name))
        self._regions = LabelRegions(config)
        self._sets: dict[str, _GlobalSet] = {}
        self._port_sets: dict[str, tuple[Service, set[PortElement]]] = {}
        self._tag_maps: dict[str, tuple[tuple[str, ...], dict[IPAddress, Values]]] = {}
        self._values: dict[str, dict[IPAddress, Values]] = {}  # Invariant: _tag_maps[m][1]
        self._tuple_ips: dict[str, defaultdict[Values, set[IPAddress]]] = {}
        # Per tag map and value tuple: the hosts whose ``uses.maps`` hold the tuple (only
        # those hosts can hold an address with it, in a trimmed view or in the map).
        self._tuple_hosts: defaultdict[str, defaultdict[Values, set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._rules: dict[Ref, tuple[CompiledRule, ...]] = {}
        self._blocks: dict[Ref, Block] = {}
        # During a block swap: per policy set, its rules before, and which positions keep an
        # equal rule (None: the number of rules changed).
        self._swapped: dict[Ref, tuple[tuple[CompiledRule, ...], tuple[bool, ...] | None]] = {}
        self._picks: dict[Ref, set[str]] = {}
        # Per policy set and direction: its block's rule positions by local side.
        self._by_local: dict[Ref, dict[TrafficDirection, defaultdict[str | None, list[int]]]] = {}
        for aps in config.policy_sets.values():
            self._add_aps(aps)
        self._hosts: dict[str, _Host] = {}
        self._aps_hosts: defaultdict[Ref, set[str]] = defaultdict(set)
        # Hosts that hold every member of a set, or a port set: they take its changes as is.
        self._set_hosts: defaultdict[str, set[str]] = defaultdict(set)
        self._local_of: defaultdict[str, set[str]] = defaultdict(set)
        for w in config.workloads.values():
            host = config.host_of(w)
            if host is not None:
                self._local_of[host].add(w.name)
        for host in config.host_names():
            self._hosts[host] = self._distill(host)
            self._index_host(host, self._hosts[host], add=True)

    def _ensure_set(self, endpoint: Endpoint) -> str | None:
        name = endpoint_name(endpoint)
        if name is not None and name not in self._sets:
            members, prefixes = endpoint_members(self.config, endpoint, self._index, self._regions)
            workloads = (
                self._index.select(endpoint.selector)
                if isinstance(endpoint, TagsEndpoint)
                else set()
            )
            self._sets[name] = _GlobalSet(endpoint, members, prefixes, workloads)
        return name

    def _ensure_port_set(self, service: Service) -> str:
        name = f"port:{service}"
        if name not in self._port_sets:
            elements: set[PortElement] = set()
            for w in self.config.workloads.values():
                elements |= _port_elements(service, w)
            self._port_sets[name] = (service, elements)
        return name

    def _ensure_tag_map(self, types: tuple[str, ...]) -> str:
        name = "match:" + ",".join(types)
        if name not in self._tag_maps:
            values: dict[IPAddress, Values] = {}
            for w in self.config.workloads.values():
                values.update(_tag_values(self.config, types, w))
            self._tag_maps[name] = (types, values)
            self._values[name] = values
            by_tuple: defaultdict[Values, set[IPAddress]] = defaultdict(set)
            for ip, t in values.items():
                by_tuple[t].add(ip)
            self._tuple_ips[name] = by_tuple
        return name

    def _compile_policy(self, policy: FirewallPolicy) -> tuple[CompiledRule, ...]:
        ref = Ref(policy.name, policy.project)
        out: list[CompiledRule] = []
        for rule in policy.rules:
            src, dst = self._ensure_set(rule.from_), self._ensure_set(rule.to)
            services = None
            if rule.services is not None:
                services = tuple(
                    CompiledService(named=self._ensure_port_set(s))
                    if s.named_port is not None
                    else CompiledService(s.protocol, s.ports, s.icmp_type)
                    for s in rule.services
                )
            tag_map = self._ensure_tag_map(rule.match_tags) if rule.match_tags else None
            pairs = []
            if rule.direction in (RuleDirection.FORWARD, RuleDirection.BOTH):
                pairs.append((src, dst))
            if rule.direction in (RuleDirection.REVERSE, RuleDirection.BOTH):
                pairs.append((dst, src))
            for a, b in pairs:
                out.append(
                    CompiledRule(
                        ref,
                        rule.name,
                        rule.action,
                        a,
                        b,
                        services,
                        tag_map,
                        policy.mode is Mode.AUDIT,
                        rule.log,
                        rule.via,
                    )
                )
        return tuple(out)

    def _policy_rules(self, ref: Ref) -> tuple[CompiledRule, ...]:
        if ref not in self._rules:
            self._rules[ref] = self._compile_policy(self.config.policies[ref])
        return self._rules[ref]

    def _add_aps(self, aps: ApplicationPolicySet) -> None:
        ref = _aps_ref(aps)
        rules = tuple(r for p in aps.policies for r in self._policy_rules(p.policy))
        self._blocks[ref] = Block(ref, f"aps:{ref}", rules)
        self._by_local[ref] = {d: defaultdict(list) for d in TrafficDirection}
        for i, r in enumerate(rules):
            for d in TrafficDirection:
                self._by_local[ref][d][local_side(r, d)].append(i)
        if aps.selector is None:
            picked = {
                w.name
                for w in self.config.workloads.values()
                if aps.project is None or w.project == aps.project
            }
        else:
            picked = self._index.select(aps.selector)
            if aps.project is not None:
                picked = {n for n in picked if self.config.workloads[n].project == aps.project}
        self._picks[ref] = picked

    # -- distill --------------------------------------------------------------------------------

    def _distill(self, host: str) -> _Host:
        cfg = self.config
        state = _Host(local=set(self._local_of.get(host, ())))
        local_ips = {n: cfg.workloads[n].ips for n in state.local}
        state.ips = frozenset(ip for ips in local_ips.values() for ip in ips)
        for ref, picked in self._picks.items():
            ips = frozenset(ip for n in picked & state.local for ip in local_ips[n])
            if picked & state.local:
                state.applied[ref] = ips
        uses: list[RuleUse | None] = []
        for direction in TrafficDirection:
            iso: set[IPAddress] = set()
            shadow: set[IPAddress] = set()
            for tier in Tier:
                blocks = []
                for aps in cfg.policy_sets_of(tier):
                    ref = _aps_ref(aps)
                    if direction not in aps.directions or ref not in state.applied:
                        continue
                    blocks.append(self._trim(state, direction, self._blocks[ref], uses))
                    if tier is Tier.APPLICATION and aps.policies:
                        shadow |= state.applied[ref]
                        modes = {cfg.policies[p.policy].mode for p in aps.policies}
                        if Mode.ENFORCE in modes:
                            iso |= state.applied[ref]
                if blocks:
                    state.chains[(direction, tier)] = tuple(blocks)
            state.isolated[direction] = frozenset(iso)
            state.isolated_shadow[direction] = frozenset(shadow)
        state.uses.add_all(uses, 1)
        for name in state.uses.sets:
            state.views[name] = self._view(state, name)
        for name in state.uses.maps:
            state.maps[name] = self._host_map(state, name)
        state.interfaces = tuple(
            LocalInterface(w.name, itf.name, itf.ips)
            for w in sorted((cfg.workloads[n] for n in state.local), key=lambda w: w.name)
            for itf in w.interfaces
        )
        state.services = self._local_services(state)
        state.forget()
        return state

    def _local_services(self, state: _Host) -> tuple[LocalService, ...]:
        """Every local workload of the instances that enforced redirect rules of the host's
        blocks name, in the order the instance lists them (several: scale-out); validation
        guarantees each workload of an instance has a left and a right interface.  Read from
        the untrimmed blocks: which instances a host runs is steering's business, and the
        local-side trimming of rules (``_trim``) is not meant to change it."""
        cfg = self.config
        named = {
            ref
            for blocks in state.chains.values()
            for b in blocks
            for r in self._blocks[b.policy_set].rules
            if r.action is Action.REDIRECT and not r.audit
            for ref in r.via
        }
        out: list[LocalService] = []
        for ref in sorted(named & cfg.service_instances.keys(), key=str):
            instance = cfg.service_instances[ref]
            template = cfg.service_templates[instance.template]
            for name in (n for n in instance.workloads if n in state.local):
                w = cfg.workloads[name]
                sides = {
                    itf.role: LocalInterface(w.name, itf.name, itf.ips)
                    for itf in w.interfaces
                    if itf.role is not None
                }
                out.append(
                    LocalService(
                        ref,
                        template.mode,
                        w.name,
                        sides[InterfaceRole.LEFT],
                        sides[InterfaceRole.RIGHT],
                        template.health_check,
                        template.when_all_down,
                    )
                )
        return tuple(out)

    def _index_host(self, host: str, state: _Host, *, add: bool) -> None:
        for ref in state.applied:
            (self._aps_hosts[ref].add if add else self._aps_hosts[ref].discard)(host)
        for name in [n for n, v in state.views.items() if v is None] + list(state.uses.ports):
            (self._set_hosts[name].add if add else self._set_hosts[name].discard)(host)
        for name, tuples in state.uses.maps.items():
            by_tuple = self._tuple_hosts[name]
            for t in tuples:
                (by_tuple[t].add if add else by_tuple[t].discard)(host)

    # -- trimming per host (``_trim.py``: what is trimmed and why that is exact) ---------------

    def _local_part(self, state: _Host, name: str) -> frozenset[IPAddress]:
        """The members of global set ``name`` among the host's local addresses (cached).  A
        selector's prefixes hold no workload that is not a member (``LabelRegions``)."""
        part = state.local_in.get(name)
        if part is None:
            g = self._sets[name]
            part = state.ips & g.members
            if g.prefixes and not isinstance(g.endpoint, TagsEndpoint):
                part |= {ip for ip in state.ips if any(ip in p for p in g.prefixes)}
            state.local_in[name] = part
        return part

    def _tuples_of(
        self, state: _Host, tag_map: str, ends: frozenset[IPAddress]
    ) -> frozenset[Values]:
        key = (tag_map, ends)
        tuples = state.tuples_of.get(key)
        if tuples is None:
            table = self._values[tag_map]
            tuples = state.tuples_of[key] = frozenset(table[ip] for ip in ends if ip in table)
        return tuples

    def _ends(
        self, state: _Host, block: Block, applied: frozenset[IPAddress], local: str | None
    ) -> frozenset[IPAddress]:
        """``applied`` (the host's ``applies_to`` of ``block``) within set ``local`` (cached:
        equal ends are then one object, which keeps ``_tuples_of`` lookups cheap)."""
        key = (block.applies_to, local)
        ends = state.ends.get(key)
        if ends is None:
            ends = applied if local is None else applied & self._local_part(state, local)
            state.ends[key] = ends
        return ends

    def _rule_use(
        self, state: _Host, direction: TrafficDirection, ref: Ref, rule: CompiledRule
    ) -> RuleUse | None:
        block, applied = self._blocks[ref], state.applied[ref]
        ends = self._ends(state, block, applied, local_side(rule, direction))
        return rule_use(rule, direction, ends, lambda m, e: self._tuples_of(state, m, e))

    def _block_uses(
        self, state: _Host, direction: TrafficDirection, ref: Ref
    ) -> list[RuleUse | None]:
        """The use of every rule of ``ref``'s block in a chain of ``direction``: one
        intersection per local side, so rules the chain drops cost next to nothing."""
        block, applied = self._blocks[ref], state.applied[ref]
        rules = block.rules
        uses: list[RuleUse | None] = [None] * len(rules)
        for local, positions in self._by_local[ref][direction].items():
            ends = self._ends(state, block, applied, local)
            if ends:
                for i in positions:
                    uses[i] = rule_use(
                        rules[i], direction, ends, lambda m, e: self._tuples_of(state, m, e)
                    )
        return uses

    def _trim(
        self,
        state: _Host,
        direction: TrafficDirection,
        block: Block,
        uses: list[RuleUse | None],
    ) -> Block:
        """``block`` as a chain of ``direction`` runs it; its rules' uses go to ``uses``."""
        mine = self._block_uses(state, direction, block.policy_set)
        uses += mine
        return _kept(block, [u is not None for u in mine])

    def _view(self, state: _Host, name: str) -> View:
        return view(
            state.uses.sets[name],
            self._local_part(state, name),
            self._sets[name].members,
            self._tuple_ips,
        )

    def _host_map(self, state: _Host, name: str) -> dict[IPAddress, Values]:
        members = {n: self._sets[n].members for n in state.uses.matched_by_map.get(name, ())}
        return map_view(name, state.uses, state.ips, members, self._tuple_ips[name])

    # -- snapshots ------------------------------------------------------------------------------

    def program(self, host: str) -> Program:
        """An immutable snapshot of ``host``'s program (empty for an unknown host)."""
        return self._snapshot(host, self._hosts.get(host, _Host()))

    def _full(self, name: str, fresh: dict[str, AddressSet]) -> AddressSet:
        """Every member of global set ``name``, frozen once per update (``fresh``) and shared
        by every host that receives it."""
        if name not in fresh:
            g = self._sets[name]
            fresh[name] = AddressSet(frozenset(g.members), g.prefixes)
        return fresh[name]

    def _snapshot(self, host: str, state: _Host) -> Program:
        cfg = self.config
        sets: dict[str, AddressSet] = {}
        ports: dict[str, frozenset[PortElement]] = {}
        fresh: dict[str, AddressSet] = {}
        for name, members in state.views.items():
            sets[name] = (
                self._full(name, fresh) if members is None else AddressSet(frozenset(members))
            )
        ports = {name: frozenset(self._port_sets[name][1]) for name in state.uses.ports}
        maps = {name: dict(m) for name, m in state.maps.items()}
        for ref, ips in state.applied.items():
            sets[f"aps:{ref}"] = AddressSet(ips)
        isolated: dict[TrafficDirection, str] = {}
        shadow: dict[TrafficDirection, str] = {}
        for d in TrafficDirection:
            isolated[d] = f"isolated:{d.value}"
            shadow[d] = f"isolated-shadow:{d.value}"
            sets[isolated[d]] = AddressSet(state.isolated.get(d, frozenset()))
            sets[shadow[d]] = AddressSet(state.isolated_shadow.get(d, frozenset()))
        return Program(
            host,
            state.interfaces,
            sets,
            ports,
            maps,
            dict(state.chains),
            isolated,
            shadow,
            cfg.settings.default_posture,
            state.services,
        )

    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    # -- diff -----------------------------------------------------------------------------------

    def update(self, new: Config) -> dict[str, ProgramDelta]:
        """Move to ``new`` and return a delta for every host whose program changed."""
        old = self.config
        slow = any(
            getattr(old, kind) is not getattr(new, kind)
            and getattr(old, kind) != getattr(new, kind)
            for kind in (
                "tag_types",
                "projects",
                "networks",
                "hosts",
                "address_groups",
                "service_groups",
                "policy_sets",
                "settings",
                "service_templates",
                "service_instances",
            )
        ) or _touches_services(old, new)
        if slow:
            return self._rebuild(new)
        changed_w = _changed(old.workloads, new.workloads)
        changed_p = _changed(old.policies, new.policies)
        if changed_w and changed_p:
            return self._rebuild(new)
        self.config = new
        if changed_p:
            # No unchanged set names a created or deleted policy (validation), so only a mode
            # change reaches past the blocks: isolation may change.
            if any(
                r in old.policies
                and r in new.policies
                and old.policies[r].mode != new.policies[r].mode
                for r in changed_p
            ):
                return self._rebuild(new)
            return self._update_policies(changed_p)
        if changed_w:
            return self._update_workloads(changed_w, old)
        return {}

    def _rebuild(self, new: Config) -> dict[str, ProgramDelta]:
        before = {h: self.program(h) for h in self._hosts}
        self._build(new)
        out: dict[str, ProgramDelta] = {}
        for host in sorted(set(before) | set(self._hosts)):
            delta = diff_programs(before.get(host, Program(host)), self.program(host))
            if not delta.is_empty():
                out[host] = delta
        return out

    # -- fast paths -----------------------------------------------------------------------------

    def _update_workloads(self, changed: set[str], old: Config) -> dict[str, ProgramDelta]:
        new = self.config
        hosts: set[str] = set()
        regions_touched = False
        for name in changed:
            ow, nw = old.workloads.get(name), new.workloads.get(name)
            self._index.remove(name)
            if nw is not None:
                self._index.put(name, new.effective_tags(name))
            for w, cfg in ((ow, old), (nw, new)):
                host = cfg.host_of(w) if w is not None else None
                if host is not None:
                    hosts.add(host)
                if w is not None and any(self._regions.covers(ip) for ip in w.ips):
                    regions_touched = True
            if ow is not None and (h := old.host_of(ow)) is not None:
                self._local_of[h].discard(name)
            if nw is not None and (h := new.host_of(nw)) is not None:
                self._local_of[h].add(name)
        changes = _Changes()
        for name in changed:
            self._move_workload(name, old, changes)
        if regions_touched:
            self._regions = LabelRegions(new)
            for set_name, g in self._sets.items():
                if isinstance(g.endpoint, TagsEndpoint):
                    fresh = self._regions.prefixes(g.endpoint.selector, g.workloads)
                    if fresh != g.prefixes:
                        _merge(
                            changes.sets,
                            set_name,
                            added_prefixes=fresh,
                            removed_prefixes=g.prefixes,
                        )
                        g.prefixes = fresh
        hosts &= self._known_hosts() | set(self._hosts)
        return self._deliver(hosts, changes)

    def _move_workload(self, name: str, old: Config, changes: _Changes) -> None:
        """Re-test one workload against every global set, port set, tag map and policy set."""
        new = self.config
        ow, nw = old.workloads.get(name), new.workloads.get(name)
        old_ips = set(ow.ips) if ow else set()
        new_ips = set(nw.ips) if nw else set()
        changes.ips |= old_ips | new_ips
        tags = new.effective_tags(name) if nw else None
        for set_name, g in self._sets.items():
            ep = g.endpoint
            if isinstance(ep, TagsEndpoint):
                before = old_ips if name in g.workloads else set()
                now = tags is not None and ep.selector.matches(tags)
                after = new_ips if now else set()
                (g.workloads.add if now else g.workloads.discard)(name)
            elif set_name == f"wl:{name}":
                before, after = old_ips, new_ips
            elif set_name.startswith("net:"):
                before = _attached(ow, set_name)
                after = _attached(nw, set_name)
            else:
                continue
            if before != after:
                g.members -= before - after
                g.members |= after - before
                _merge(changes.sets, set_name, added=after - before, removed=before - after)
        for port_name, (service, elements) in self._port_sets.items():
            gone = _port_elements(service, ow) if ow else set()
            came = _port_elements(service, nw) if nw else set()
            if gone != came:
                elements -= gone
                elements |= came
                prev_add, prev_rem = changes.ports.get(port_name, (frozenset(), frozenset()))
                changes.ports[port_name] = (
                    frozenset((prev_add - gone) | came),
                    frozenset((prev_rem - came) | gone),
                )
        for map_name, (types, values) in self._tag_maps.items():
            before_v = {ip: values[ip] for ip in old_ips if ip in values}
            after_v = dict(_tag_values(new, types, nw)) if nw is not None else {}
            if before_v == after_v:
                continue
            by_tuple = self._tuple_ips[map_name]
            for ip, t in before_v.items():
                del values[ip]
                by_tuple[t].discard(ip)
                if not by_tuple[t]:
                    del by_tuple[t]
            for ip, t in after_v.items():
                values[ip] = t
                by_tuple[t].add(ip)
            moves = changes.maps.setdefault(map_name, {})
            for ip in before_v.keys() | after_v.keys():
                first = moves[ip][0] if ip in moves else before_v.get(ip)
                moves[ip] = (first, after_v.get(ip))
        for ref, picked in self._picks.items():
            aps = new.policy_sets[ref]
            picks = (
                nw is not None
                and (aps.project is None or nw.project == aps.project)
                and (aps.selector is None or (tags is not None and aps.selector.matches(tags)))
            )
            (picked.add if picks else picked.discard)(name)

    def _update_policies(self, changed: set[Ref]) -> dict[str, ProgramDelta]:
        cfg = self.config
        for ref in changed:
            self._rules.pop(ref, None)
        touched = [
            aps
            for aps in cfg.policy_sets.values()
            if any(p.policy in changed for p in aps.policies)
        ]
        hosts: set[str] = set()
        self._swapped = {}
        for aps in touched:
            ref = _aps_ref(aps)
            hosts |= self._aps_hosts.get(ref, set())
            before = self._blocks[ref].rules
            self._add_aps(aps)
            after = self._blocks[ref].rules
            same = len(before) == len(after)
            self._swapped[ref] = (before, tuple(map(operator.eq, before, after)) if same else None)
        return self._deliver(hosts, _Changes(), block_swap=frozenset(_aps_ref(a) for a in touched))

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(
        self,
        hosts: set[str],
        changes: _Changes,
        block_swap: frozenset[Ref] = frozenset(),
    ) -> dict[str, ProgramDelta]:
        """Deltas for ``hosts`` (re-distilled) and for every other host whose program holds a
        changed member.  ``block_swap``: policy sets whose block changed but whose placement
        did not; hosts holding them swap the block in place instead of re-distilling."""
        out: dict[str, ProgramDelta] = {}
        fresh: dict[str, AddressSet] = {}
        known = self._known_hosts()
        existed = set(self._hosts)
        for host in sorted(hosts):
            if block_swap:
                delta = self._swap(host, block_swap, fresh)
                if not delta.is_empty():
                    out[host] = delta
                continue
            before = self._hosts.get(host, _Host())
            self._index_host(host, before, add=False)
            after = self._distill(host)
            if host in known or after.local:
                self._hosts[host] = after
                self._index_host(host, after, add=True)
                if host in existed:
                    delta = self._host_delta(host, before, after, changes, fresh)
                else:  # a new host starts from nothing
                    delta = diff_programs(Program(host), self._snapshot(host, after))
            else:  # a host without workloads any more: empty it
                self._hosts.pop(host, None)
                delta = diff_programs(self._snapshot(host, before), Program(host))
            if not delta.is_empty():
                out[host] = delta
        # Every other host: those holding every member of a changed set or port set take its
        # change as is; those holding a changed address's tuple (before or after) re-test it.
        whole: defaultdict[str, _Parts] = defaultdict(_Parts)
        for name, d in changes.sets.items():
            for host in self._set_hosts.get(name, ()):
                whole[host].set_deltas.append(d)
        for name, c in changes.ports.items():
            for host in self._set_hosts.get(name, ()):
                whole[host].port_deltas[name] = c
        retest: set[str] = set()
        for name, values in self._values.items():
            by_tuple = self._tuple_hosts.get(name)
            if not by_tuple:
                continue
            moves = changes.maps.get(name, {})
            for ip in changes.ips:
                for t in (moves[ip][0] if ip in moves else values.get(ip), values.get(ip)):
                    if t is not None:
                        retest |= by_tuple.get(t, set())
        moved = self._moved(changes) if retest - hosts else None
        for host in (set(whole) | retest) - hosts:
            parts = whole.get(host, _Parts())
            if moved is not None and host in retest:
                self._retest(self._hosts[host], moved, parts)
            delta = parts.delta(host)
            if not delta.is_empty():
                out[host] = delta
        return out

    def _retest(self, state: _Host, moved: _Moved, parts: _Parts) -> None:
        """Bring the host's trimmed views and tag maps up to date for ``moved.ips``,
        addresses of other hosts' workloads (or of none): only their own entries can have
        moved, and only in sets that hold them now (``moved.holders``) or held them before
        (``moved.was``)."""
        uses = state.uses
        for name in moved.holders.keys() | moved.was:
            kept, use = state.views.get(name), uses.sets.get(name)
            if kept is None or use is None or not use.matched:  # not trimmed by C here
                continue
            now = {ip for ip in moved.holders.get(name, ()) if in_view(moved.tuples[ip], use)}
            added, removed = now - kept, (moved.ips & kept) - now
            if added or removed:
                kept |= added
                kept -= removed
                parts.set_deltas.append(
                    SetDelta(name, AddressSet(frozenset(added)), AddressSet(frozenset(removed)))
                )
        for name, entries in state.maps.items():
            changed: dict[IPAddress, Values] = {}
            gone: set[IPAddress] = set()
            for ip in moved.ips:
                t = in_map(moved.tuples[ip].get(name), name, uses, moved.sets_of[ip])
                if t is None and ip in entries:
                    del entries[ip]
                    gone.add(ip)
                elif t is not None and entries.get(ip) != t:
                    entries[ip] = changed[ip] = t
            if changed or gone:
                parts.map_deltas[name] = (changed, frozenset(gone))

    def _moved(self, changes: _Changes) -> _Moved:
        ips = frozenset(changes.ips)
        holders = {
            name: set(g.members & ips)
            for name, g in self._sets.items()
            if trimmable(name) and not g.members.isdisjoint(ips)
        }
        sets_of: dict[IPAddress, list[str]] = {ip: [] for ip in ips}
        for name, held in holders.items():
            for ip in held:
                sets_of[ip].append(name)
        return _Moved(
            ips,
            holders,
            {n for n in changes.sets if trimmable(n)},
            {ip: {m: v.get(ip) for m, v in self._values.items()} for ip in ips},
            sets_of,
        )

    def _known_hosts(self) -> set[str]:
        """Declared hosts and hosts that enforce a workload (Config.host_names, cheaply)."""
        return set(self.config.hosts) | {h for h, local in self._local_of.items() if local}

    def _swap(self, host: str, refs: frozenset[Ref], fresh: dict[str, AddressSet]) -> ProgramDelta:
        """Replace the blocks of ``refs`` on ``host`` by their new versions.  Placement (which
        sets apply where) is unchanged, so only chains move, and the views and maps of names
        whose uses changed."""
        state = self._hosts[host]
        chains: dict[ChainKey, tuple[Block, ...]] = {}
        gone: list[RuleUse] = []
        came: list[RuleUse] = []
        for key, blocks in state.chains.items():
            if not any(b.policy_set in refs for b in blocks):
                continue
            direction, swapped = key[0], []
            for b in blocks:
                if b.policy_set in refs:
                    b = self._swap_block(state, direction, b, gone, came)
                swapped.append(b)
            chains[key] = tuple(swapped)
        state.chains.update(chains)
        if not (gone or came):
            state.forget()
            return ProgramDelta(host, chains=chains)
        ports = {p for u in (*gone, *came) for p in u.ports}
        held_ports = ports & state.uses.ports.keys()
        self._index_host(host, state, add=False)
        state.uses.add_all(gone, -1)
        state.uses.add_all(came, 1)
        sets = {n for u in (*gone, *came) for n in (u.local, u.remote) if n is not None}
        maps = {u.tag_map for u in (*gone, *came) if u.tag_map is not None}
        parts = _Parts()
        for name in sorted(sets):
            before = state.views.pop(name, _ABSENT)
            after: View | _Absent = _ABSENT
            if name in state.uses.sets:
                after = state.views[name] = self._view(state, name)
            self._carry_set(parts, name, before, after, _Changes(), fresh)
        for name in sorted(maps):
            before_map = state.maps.pop(name, None)
            after_map = self._host_map(state, name) if name in state.uses.maps else None
            if after_map is not None:
                state.maps[name] = after_map
            self._carry_map(parts, name, before_map, after_map)
        for name in ports:
            if name not in state.uses.ports:
                parts.dropped.add(name)
            elif name not in held_ports:
                parts.new_ports[name] = frozenset(self._port_sets[name][1])
        self._index_host(host, state, add=True)
        state.forget()
        return parts.delta(host, chains=chains)

    def _swap_block(
        self,
        state: _Host,
        direction: TrafficDirection,
        trimmed: Block,
        gone: list[RuleUse],
        came: list[RuleUse],
    ) -> Block:
        """The new version of ``trimmed`` (the host's copy of a swapped block) in a chain of
        ``direction``; the uses it ends go to ``gone``, those it starts to ``came``.  Uses are
        recomputed only at positions whose rule changed, or everywhere if the count did."""
        ref = trimmed.policy_set
        old_rules, same = self._swapped[ref]
        kept_before = _kept_positions(old_rules, trimmed.rules)
        if same is None:
            gone += [
                u
                for r, k in zip(old_rules, kept_before, strict=True)
                if k and (u := self._rule_use(state, direction, ref, r)) is not None
            ]
            uses = self._block_uses(state, direction, ref)
            came += [u for u in uses if u is not None]
            return _kept(self._blocks[ref], [u is not None for u in uses])
        rules, keep = self._blocks[ref].rules, list(kept_before)
        for i, equal in enumerate(same):
            if equal:
                continue
            before = self._rule_use(state, direction, ref, old_rules[i]) if keep[i] else None
            after = self._rule_use(state, direction, ref, rules[i])
            if before != after:
                gone += [before] if before is not None else []
                came += [after] if after is not None else []
            keep[i] = after is not None
        return _kept(self._blocks[ref], keep)

    def _carry_set(
        self,
        parts: _Parts,
        name: str,
        before: View | _Absent,
        after: View | _Absent,
        changes: _Changes,
        fresh: dict[str, AddressSet],
    ) -> None:
        """Add to ``parts`` what turns a host's view of set ``name`` from ``before`` into
        ``after``: each ``_ABSENT`` (not held), None (every member) or the members kept.  A
        view of every member was the global set before ``changes``."""
        if after is _ABSENT:
            if before is not _ABSENT:
                parts.dropped.add(name)
            return
        new = self._full(name, fresh) if after is None else AddressSet(frozenset(after))
        if before is _ABSENT:
            parts.new_sets[name] = new
            return
        if before is None and after is None:
            if name in changes.sets:
                parts.set_deltas.append(changes.sets[name])
            return
        if before is None:
            old_members, old_prefixes = (
                self._members_before(name, changes),
                self._prefixes_before(name, changes),
            )
        else:
            old_members, old_prefixes = before, ()
        added, removed = new.addresses - old_members, old_members - new.addresses
        add_p = tuple(p for p in new.prefixes if p not in old_prefixes)
        rem_p = tuple(p for p in old_prefixes if p not in new.prefixes)
        if added or removed or add_p or rem_p:
            parts.set_deltas.append(
                SetDelta(
                    name,
                    AddressSet(frozenset(added), add_p),
                    AddressSet(frozenset(removed), rem_p),
                )
            )

    def _members_before(self, name: str, changes: _Changes) -> set[IPAddress]:
        g, d = self._sets[name], changes.sets.get(name)
        if d is None:
            return g.members
        return (g.members - d.added.addresses) | d.removed.addresses

    def _prefixes_before(self, name: str, changes: _Changes) -> tuple[IPNetwork, ...]:
        g, d = self._sets[name], changes.sets.get(name)
        if d is None or not (d.added.prefixes or d.removed.prefixes):
            return g.prefixes
        return d.removed.prefixes  # a prefix change replaces them all (``_update_workloads``)

    @staticmethod
    def _carry_map(
        parts: _Parts,
        name: str,
        before: Mapping[IPAddress, Values] | None,
        after: Mapping[IPAddress, Values] | None,
    ) -> None:
        """Add to ``parts`` what turns a host's copy of tag map ``name`` from ``before`` into
        ``after`` (None: not held)."""
        if after is None:
            if before is not None:
                parts.dropped.add(name)
        elif before is None:
            parts.new_maps[name] = dict(after)
        else:
            changed = {ip: t for ip, t in after.items() if before.get(ip) != t}
            gone = frozenset(before.keys() - after.keys())
            if changed or gone:
                parts.map_deltas[name] = (changed, gone)

    def _host_delta(
        self,
        host: str,
        before: _Host,
        after: _Host,
        changes: _Changes,
        fresh: dict[str, AddressSet],
    ) -> ProgramDelta:
        parts = _Parts()
        for ref in set(before.applied) | set(after.applied):
            name = f"aps:{ref}"
            a, b = before.applied.get(ref), after.applied.get(ref)
            if a is None and b is not None:
                parts.new_sets[name] = AddressSet(b)
            elif a is not None and b is None:
                parts.dropped.add(name)
            elif a is not None and b is not None and a != b:
                parts.set_deltas.append(SetDelta(name, AddressSet(b - a), AddressSet(a - b)))
        for prefix, old_iso, new_iso in (
            ("isolated", before.isolated, after.isolated),
            ("isolated-shadow", before.isolated_shadow, after.isolated_shadow),
        ):
            for d in TrafficDirection:
                a, b = old_iso.get(d, frozenset()), new_iso.get(d, frozenset())
                if a != b:
                    parts.set_deltas.append(
                        SetDelta(f"{prefix}:{d.value}", AddressSet(b - a), AddressSet(a - b))
                    )
        for name in sorted(before.views.keys() | after.views.keys()):
            self._carry_set(
                parts,
                name,
                before.views.get(name, _ABSENT),
                after.views.get(name, _ABSENT),
                changes,
                fresh,
            )
        for name in before.maps.keys() | after.maps.keys():
            self._carry_map(parts, name, before.maps.get(name), after.maps.get(name))
        for name in before.uses.ports.keys() | after.uses.ports.keys():
            if name not in after.uses.ports:
                parts.dropped.add(name)
            elif name not in before.uses.ports:
                parts.new_ports[name] = frozenset(self._port_sets[name][1])
            elif name in changes.ports:
                parts.port_deltas[name] = changes.ports[name]
        chains = {
            key: after.chains.get(key, ())
            for key in set(before.chains) | set(after.chains)
            if before.chains.get(key, ()) != after.chains.get(key, ())
        }
        interfaces = after.interfaces if after.interfaces != before.interfaces else None
        return parts.delta(host, chains=chains, interfaces=interfaces)


def _touches_services(old: Config, new: Config) -> bool:
    """Does the change move a service workload or a redirect rule?  The fast paths do not
    follow ``Program.services``: such a change recompiles (service chains change rarely)."""
    workloads = {n for i in new.service_instances.values() for n in i.workloads}
    workloads |= {n for i in old.service_instances.values() for n in i.workloads}
    if any(
        old.workloads.get(n) is not new.workloads.get(n)
        and old.workloads.get(n) != new.workloads.get(n)
        for n in workloads
    ):
        return True
    for cfg, other in ((old, new), (new, old)):
        for ref, policy in cfg.policies.items():
            if other.policies.get(ref) is not policy and any(r.via for r in policy.rules):
                return True
    return False


def _dropped(names: set[str]) -> dict[str, frozenset[str]]:
    """ProgramDelta's ``dropped_*`` fields for ``names``, split by what they name."""
    return {
        "dropped_sets": frozenset(n for n in names if not n.startswith(("port:", "match:"))),
        "dropped_port_sets": frozenset(n for n in names if n.startswith("port:")),
        "dropped_tag_maps": frozenset(n for n in names if n.startswith("match:")),
    }


K = TypeVar("K")
V = TypeVar("V")


def _changed(old: Mapping[K, V], new: Mapping[K, V]) -> set[K]:
    """Keys whose object differs; identical objects are skipped without comparing."""
    if old is new:
        return set()
    return {
        k
        for k in old.keys() | new.keys()
        if old.get(k) is not new.get(k) and old.get(k) != new.get(k)
    }


def _merge(
    out: dict[str, SetDelta],
    name: str,
    *,
    added: Iterable[IPAddress] = (),
    removed: Iterable[IPAddress] = (),
    added_prefixes: Iterable[IPNetwork] = (),
    removed_prefixes: Iterable[IPNetwork] = (),
) -> None:
    """Fold more changes of set ``name`` into ``out`` (an address added then removed cancels)."""
    prev = out.get(name, SetDelta(name))
    add = set(prev.added.addresses) | set(added)
    rem = set(prev.removed.addresses) | set(removed)
    add, rem = add - set(removed), rem - set(added)
    out[name] = SetDelta(
        name,
        AddressSet(frozenset(add), (*prev.added.prefixes, *added_prefixes)),
        AddressSet(frozenset(rem), (*prev.removed.prefixes, *removed_prefixes)),
    )


def _attached(w: Workload | None, set_name: str) -> set[IPAddress]:
    if w is None:
        return set()
    return {
        ip
        for itf in w.interfaces
        if itf.network and f"net:{itf.network}" == set_name
        for ip in itf.ips
    }


def _port_elements(service: Service, w: Workload) -> set[PortElement]:
    return {
        (ip, np.protocol, np.port)
        for np in w.ports
        if np.name == service.named_port and service.protocol in (None, np.protocol)
        for ip in w.ips
    }


def _tag_values(
    config: Config, types: tuple[str, ...], w: Workload
) -> Iterable[tuple[IPAddress, tuple[str, ...]]]:
    tags = config.effective_tags(w.name)
    values = tuple(tags.value(t) for t in types)
    if any(v is None for v in values):
        return ()
    return ((ip, tuple(v for v in values if v is not None)) for ip in w.ips)


def compile_program(config: Config, host: str) -> Program:
    """One host's program, compiled from scratch."""
    return Compiler(config).program(host)
