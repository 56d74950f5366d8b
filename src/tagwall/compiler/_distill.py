"""Compiled state, and the first two stages: **resolve** and **distill** (``_compile.py``
tells the whole pipeline).

Owns what a ``Compiler`` knows between updates: the global sets, port sets and tag maps,
resolved once for all hosts through the ``TagIndex`` (set names by ``endpoint_name``); each
policy set's block and the workloads it picks; and per host a ``HostState``, distilled from
the blocks that apply to its local workloads and trimmed to what they can match
(``_trim.py`` says what is trimmed and why that is exact).  ``Distiller`` builds all of it
from a Config; ``Delivery`` (``_deliver.py``) turns it into programs and deltas, and
``Compiler`` (``_compile.py``) moves it from one Config to the next.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..model import (
    Action,
    ApplicationPolicySet,
    Config,
    Endpoint,
    FirewallPolicy,
    Host,
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
from ._index import LabelRegions, TagIndex, endpoint_members, endpoint_name
from ._program import (
    Block,
    ChainKey,
    CompiledRule,
    CompiledService,
    LocalInterface,
    LocalService,
    Peer,
    PortElement,
    RemoteService,
)
from ._trim import RuleUse, Uses, local_side, map_view, rule_use, view

# A host serves its instances to at most this many other hosts: each costs the serving host a
# ``ct label`` bit (datapath ``_steering``: 32 for paths and peers together), and a program
# the data path cannot hold would stop every update of that host, not just steering.
MAX_TRANSIT_PEERS = 16

__all__ = [
    "Distiller",
    "HostState",
    "Values",
    "View",
    "aps_ref",
    "kept_block",
    "port_elements",
    "tag_values",
]


@dataclass
class _GlobalSet:
    endpoint: Endpoint
    members: set[IPAddress]
    prefixes: tuple[IPNetwork, ...]
    workloads: set[str] = field(default_factory=set)  # for tag sets: the matching workloads


Values = tuple[str, ...]  # one address's values of a tag map's types
View = set[IPAddress] | None  # a host's members of a set; None: every member (the global set)


@dataclass
class HostState:
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
    remote_services: tuple[RemoteService, ...] = ()
    peers: tuple[Peer, ...] = ()

    def forget(self) -> None:
        self.local_in.clear()
        self.ends.clear()
        self.tuples_of.clear()


def aps_ref(aps: ApplicationPolicySet) -> Ref:
    return Ref(aps.name, aps.project)


def kept_block(block: Block, keep: Sequence[bool]) -> Block:
    """The block as a chain of one host runs it: the rules ``keep`` marks (A of ``_trim``)."""
    if all(keep):
        return block
    return Block(
        block.policy_set,
        block.applies_to,
        tuple(r for r, k in zip(block.rules, keep, strict=True) if k),
    )


def port_elements(service: Service, w: Workload) -> set[PortElement]:
    return {
        (ip, np.protocol, np.port)
        for np in w.ports
        if np.name == service.named_port and service.protocol in (None, np.protocol)
        for ip in w.ips
    }


def tag_values(
    config: Config, types: tuple[str, ...], w: Workload
) -> Iterable[tuple[IPAddress, tuple[str, ...]]]:
    tags = config.effective_tags(w.name)
    values = tuple(tags.value(t) for t in types)
    if any(v is None for v in values):
        return ()
    return ((ip, tuple(v for v in values if v is not None)) for ip in w.ips)


class Distiller:
    """Resolved global state and every host's distilled state of one Config (see the module
    docstring); only ``Compiler.update`` mutates it after ``__init__``."""

    def __init__(self, config: Config) -> None:
        self._build(config)

    # -- resolve --------------------------------------------------------------------------------

    def _build(self, config: Config) -> None:
        self.config = config
        self._index = TagIndex()
        self._named_cache: tuple[Mapping[Ref, FirewallPolicy], frozenset[Ref]] | None = None
        self._ring_cache: tuple[Mapping[str, Host], list[str], dict[str, int]] | None = None
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
        self._hosts: dict[str, HostState] = {}
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
                elements |= port_elements(service, w)
            self._port_sets[name] = (service, elements)
        return name

    def _ensure_tag_map(self, types: tuple[str, ...]) -> str:
        name = "match:" + ",".join(types)
        if name not in self._tag_maps:
            values: dict[IPAddress, Values] = {}
            for w in self.config.workloads.values():
                values.update(tag_values(self.config, types, w))
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
        ref = aps_ref(aps)
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

    def _distill(self, host: str) -> HostState:
        cfg = self.config
        state = HostState(local=set(self._local_of.get(host, ())))
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
                    ref = aps_ref(aps)
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
        state.remote_services = self._remote_services(host, state)
        state.peers = self._peers(host) if state.services else ()
        state.forget()
        return state

    def _named_here(self, state: HostState) -> set[Ref]:
        """The instances that enforced redirect rules of the host's blocks name.  Read from
        the untrimmed blocks: which instances a host runs is steering's business, and the
        local-side trimming of rules (``_trim``) is not meant to change it."""
        return {
            ref
            for blocks in state.chains.values()
            for b in blocks
            for r in self._blocks[b.policy_set].rules
            if r.action is Action.REDIRECT and not r.audit
            for ref in r.via
        }

    def _named_anywhere(self) -> frozenset[Ref]:
        """The instances that an enforced redirect rule of any policy names: a host holding
        one of their workloads may carry other hosts' flows (transit).  Cached per
        ``config.policies`` (a change of them with a ``via`` recompiles everything)."""
        policies = self.config.policies
        cached = self._named_cache
        if cached is None or cached[0] is not policies:
            named = frozenset(
                ref
                for p in policies.values()
                if p.mode is Mode.ENFORCE
                for r in p.rules
                if r.action is Action.REDIRECT
                for ref in r.via
            )
            cached = (policies, named)
            self._named_cache = cached
        return cached[1]

    def _remote_services(self, host: str, state: HostState) -> tuple[RemoteService, ...]:
        """The instances the host's enforced redirect rules name that have no workload on the
        host, each with the host that serves it here: the first by name that holds one of its
        workloads, has an underlay address (``Host.address``) and counts this host among its
        peers (``_peers``).  An instance no such host serves is left out (its rules allow
        without steering)."""
        cfg = self.config
        out: list[RemoteService] = []
        for ref in sorted(self._named_here(state) & cfg.service_instances.keys(), key=str):
            workloads = [cfg.workloads[n] for n in cfg.service_instances[ref].workloads]
            homes = {cfg.host_of(w) for w in workloads}
            if host in homes:
                continue  # served here (``services``)
            for home in sorted(h for h in homes if h is not None):
                address = cfg.hosts[home].address if home in cfg.hosts else None
                if address is not None and host in self._peer_names(home):
                    out.append(RemoteService(ref, home, address))
                    break
        return tuple(out)

    def _peer_names(self, host: str) -> list[str]:
        """The hosts ``host`` accepts transit from: of the hosts with an underlay address in
        name order, as a ring, the ``MAX_TRANSIT_PEERS`` that follow ``host``.  So hosts that
        serve one instance together take different peers, and every host computes the same
        answer from the configuration alone.  Cached per ``config.hosts``."""
        hosts = self.config.hosts
        if self._ring_cache is None or self._ring_cache[0] is not hosts:
            ring = sorted(h.name for h in hosts.values() if h.address is not None)
            self._ring_cache = (hosts, ring, {name: i for i, name in enumerate(ring)})
        _, ring, position = self._ring_cache
        if host not in position:
            return []
        at, count = position[host], min(MAX_TRANSIT_PEERS, len(ring) - 1)
        return [ring[(at + k) % len(ring)] for k in range(1, count + 1)]

    def _peers(self, host: str) -> tuple[Peer, ...]:
        """The hosts that may send this host's service workloads transit (``_peer_names``),
        by name."""
        hosts = self.config.hosts
        return tuple(
            Peer(name, address)
            for name in sorted(self._peer_names(host))
            if (address := hosts[name].address) is not None
        )

    def _local_services(self, state: HostState) -> tuple[LocalService, ...]:
        """Every local workload of the instances that enforced redirect rules name (of this
        host's blocks, or of any host: transit), in the order the instance lists them
        (several: scale-out); validation guarantees each workload of an instance has a left
        and a right interface."""
        cfg = self.config
        named = self._named_here(state) | self._named_anywhere()
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

    def _index_host(self, host: str, state: HostState, *, add: bool) -> None:
        for ref in state.applied:
            (self._aps_hosts[ref].add if add else self._aps_hosts[ref].discard)(host)
        for name in [n for n, v in state.views.items() if v is None] + list(state.uses.ports):
            (self._set_hosts[name].add if add else self._set_hosts[name].discard)(host)
        for name, tuples in state.uses.maps.items():
            by_tuple = self._tuple_hosts[name]
            for t in tuples:
                (by_tuple[t].add if add else by_tuple[t].discard)(host)

    # -- trimming per host (``_trim.py``: what is trimmed and why that is exact) ---------------

    def _local_part(self, state: HostState, name: str) -> frozenset[IPAddress]:
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
        self, state: HostState, tag_map: str, ends: frozenset[IPAddress]
    ) -> frozenset[Values]:
        key = (tag_map, ends)
        tuples = state.tuples_of.get(key)
        if tuples is None:
            table = self._values[tag_map]
            tuples = state.tuples_of[key] = frozenset(table[ip] for ip in ends if ip in table)
        return tuples

    def _ends(
        self, state: HostState, block: Block, applied: frozenset[IPAddress], local: str | None
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
        self, state: HostState, direction: TrafficDirection, ref: Ref, rule: CompiledRule
    ) -> RuleUse | None:
        block, applied = self._blocks[ref], state.applied[ref]
        ends = self._ends(state, block, applied, local_side(rule, direction))
        return rule_use(rule, direction, ends, lambda m, e: self._tuples_of(state, m, e))

    def _block_uses(
        self, state: HostState, direction: TrafficDirection, ref: Ref
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
        state: HostState,
        direction: TrafficDirection,
        block: Block,
        uses: list[RuleUse | None],
    ) -> Block:
        """``block`` as a chain of ``direction`` runs it; its rules' uses go to ``uses``."""
        mine = self._block_uses(state, direction, block.policy_set)
        uses += mine
        return kept_block(block, [u is not None for u in mine])

    def _view(self, state: HostState, name: str) -> View:
        return view(
            state.uses.sets[name],
            self._local_part(state, name),
            self._sets[name].members,
            self._tuple_ips,
        )

    def _host_map(self, state: HostState, name: str) -> dict[IPAddress, Values]:
        members = {n: self._sets[n].members for n in state.uses.matched_by_map.get(name, ())}
        return map_view(name, state.uses, state.ips, members, self._tuple_ips[name])

    def _known_hosts(self) -> set[str]:
        """Declared hosts and hosts that enforce a workload (Config.host_names, cheaply)."""
        return set(self.config.hosts) | {h for h, local in self._local_of.items() if local}
