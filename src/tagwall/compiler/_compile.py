"""The incremental compiler: a Config in, one Program per host out; each new Config in, deltas
for the hosts it affects out.

Stages (cilium ``resolve.go`` style):

* **resolve** — every endpoint form a rule uses becomes a global address set, named by
  ``endpoint_name``; named ports become port sets; ``matchTags`` lists become tag maps.
  Each is computed once for all hosts through the ``TagIndex``.
* **distill** — per host, the ApplicationPolicySets that pick a local workload contribute
  their ``Block`` to the chains of their tier and directions; the block's ``applies_to`` set
  holds only local addresses, so rules are shared by every host and only small local sets
  differ.
* **diff** — ``update(new_config)`` finds the objects that changed.  Workload and
  FirewallPolicy changes take fast paths that touch only affected sets and hosts; anything
  else recompiles and diffs whole programs (rare kinds: projects, networks, groups, settings).

State ownership: a ``Compiler`` is single-threaded; only ``update`` mutates it, and a
``Program`` returned by ``program()`` is an immutable snapshot that later updates never touch.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
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

__all__ = ["Compiler", "compile_program"]


@dataclass
class _GlobalSet:
    endpoint: Endpoint
    members: set[IPAddress]
    prefixes: tuple[IPNetwork, ...]
    workloads: set[str] = field(default_factory=set)  # for tag sets: the matching workloads


@dataclass
class _Host:
    """Invariant: ``refs`` counts, per global set name, the distinct blocks in ``chains``
    that name it; ``applied`` holds only non-empty entries."""

    local: set[str] = field(default_factory=set)
    applied: dict[Ref, frozenset[IPAddress]] = field(default_factory=dict)
    chains: dict[ChainKey, tuple[Block, ...]] = field(default_factory=dict)
    isolated: dict[TrafficDirection, frozenset[IPAddress]] = field(default_factory=dict)
    isolated_shadow: dict[TrafficDirection, frozenset[IPAddress]] = field(default_factory=dict)
    refs: Counter[str] = field(default_factory=Counter)
    interfaces: tuple[LocalInterface, ...] = ()
    services: tuple[LocalService, ...] = ()
    # Per tag map in ``refs``: how many local addresses carry each value tuple.  The host's
    # copy of the map holds only addresses with one of these tuples (see ``_map_view``).
    tuples: dict[str, Counter[tuple[str, ...]]] = field(default_factory=dict)


PortChange = tuple[frozenset[PortElement], frozenset[PortElement]]  # (added, removed)
Values = tuple[str, ...]  # one address's values of a tag map's types
MapMove = tuple[Values | None, Values | None]  # an address's tuple (before, after) an update


@dataclass
class _Changes:
    """Element changes of global sets, port sets and tag maps in one update.  Each host that
    holds a set or port set receives the same change object; a tag map's changes are cut to
    the value tuples each host holds."""

    sets: dict[str, SetDelta] = field(default_factory=dict)
    ports: dict[str, PortChange] = field(default_factory=dict)
    maps: dict[str, dict[IPAddress, MapMove]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return set(self.sets) | set(self.ports) | set(self.maps)

    def delta(
        self, host: str, names: Iterable[str], tuples: Mapping[str, Counter[Values]]
    ) -> ProgramDelta:
        """A delta carrying the changes of ``names`` to a host whose maps hold ``tuples``."""
        wanted = set(names)
        maps = {}
        for name, moves in self.maps.items():
            if name in wanted:
                change = _map_change(moves, tuples.get(name, Counter()))
                if change[0] or change[1]:
                    maps[name] = change
        return ProgramDelta(
            host,
            set_deltas=tuple(d for n, d in self.sets.items() if n in wanted),
            port_set_deltas={n: c for n, c in self.ports.items() if n in wanted},
            tag_map_deltas=maps,
        )


def _aps_ref(aps: ApplicationPolicySet) -> Ref:
    return Ref(aps.name, aps.project)


def _block_names(block: Block) -> frozenset[str]:
    """Every global set, port set and tag map the block's rules name."""
    names: set[str] = set()
    for r in block.rules:
        names.update(n for n in (r.src, r.dst) if n)
        if r.match_tags:
            names.add(r.match_tags)
        for s in r.services or ():
            if s.named:
                names.add(s.named)
    return frozenset(names)


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
        self._tuple_ips: dict[str, defaultdict[Values, set[IPAddress]]] = {}
        # Per tag map and value tuple: the hosts whose local addresses carry the tuple.
        self._tuple_hosts: defaultdict[str, defaultdict[Values, set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._rules: dict[Ref, tuple[CompiledRule, ...]] = {}
        self._blocks: dict[Ref, Block] = {}
        self._block_names: dict[Ref, frozenset[str]] = {}  # Invariant: names of _blocks[ref]
        self._old_names: dict[Ref, frozenset[str]] = {}  # during a block swap: names before
        self._picks: dict[Ref, set[str]] = {}
        for aps in config.policy_sets.values():
            self._add_aps(aps)
        self._hosts: dict[str, _Host] = {}
        self._aps_hosts: defaultdict[Ref, set[str]] = defaultdict(set)
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
        self._block_names[ref] = _block_names(self._blocks[ref])
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
        for ref, picked in self._picks.items():
            ips = frozenset(ip for n in picked & state.local for ip in local_ips[n])
            if picked & state.local:
                state.applied[ref] = ips
        for direction in TrafficDirection:
            iso: set[IPAddress] = set()
            shadow: set[IPAddress] = set()
            for tier in Tier:
                blocks = []
                for aps in cfg.policy_sets_of(tier):
                    ref = _aps_ref(aps)
                    if direction not in aps.directions or ref not in state.applied:
                        continue
                    blocks.append(self._blocks[ref])
                    if tier is Tier.APPLICATION and aps.policies:
                        shadow |= state.applied[ref]
                        modes = {cfg.policies[p.policy].mode for p in aps.policies}
                        if Mode.ENFORCE in modes:
                            iso |= state.applied[ref]
                if blocks:
                    state.chains[(direction, tier)] = tuple(blocks)
            state.isolated[direction] = frozenset(iso)
            state.isolated_shadow[direction] = frozenset(shadow)
        for ref in {b.policy_set for blocks in state.chains.values() for b in blocks}:
            state.refs.update(self._block_names[ref])
        for name in state.refs:
            if name in self._tag_maps:
                state.tuples[name] = self._local_tuples(state, name)
        state.interfaces = tuple(
            LocalInterface(w.name, itf.name, itf.ips)
            for w in sorted((cfg.workloads[n] for n in state.local), key=lambda w: w.name)
            for itf in w.interfaces
        )
        state.services = self._local_services(state)
        return state

    def _local_services(self, state: _Host) -> tuple[LocalService, ...]:
        """Every local workload of the instances that enforced redirect rules of the host's
        blocks name, in the order the instance lists them (several: scale-out); validation
        guarantees each workload of an instance has a left and a right interface."""
        cfg = self.config
        named = {
            ref
            for blocks in state.chains.values()
            for b in blocks
            for r in b.rules
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
        for name in state.refs:
            (self._set_hosts[name].add if add else self._set_hosts[name].discard)(host)
        for name, tuples in state.tuples.items():
            self._index_tuples(host, name, tuples, add=add)

    def _index_tuples(self, host: str, name: str, tuples: Iterable[Values], *, add: bool) -> None:
        by_tuple = self._tuple_hosts[name]
        for t in tuples:
            (by_tuple[t].add if add else by_tuple[t].discard)(host)

    # -- tag maps per host ----------------------------------------------------------------------
    # A host's copy of a tag map holds only the addresses whose value tuple some local address
    # also carries.  That loses nothing: matchTags compares the local end (the source at
    # egress, the destination at ingress) with the other, so an address whose tuple no local
    # address has could only ever compare unequal — exactly what a missing entry does.  It
    # keeps per-host maps near the size of the local applications instead of the estate, and a
    # tag change reaches only the hosts that share the tuples involved.

    def _local_tuples(self, state: _Host, name: str) -> Counter[Values]:
        values = self._tag_maps[name][1]
        return Counter(
            values[ip] for n in state.local for ip in self.config.workloads[n].ips if ip in values
        )

    def _map_view(self, name: str, tuples: Iterable[Values]) -> dict[IPAddress, Values]:
        by_tuple = self._tuple_ips[name]
        return {ip: t for t in tuples for ip in by_tuple.get(t, ())}

    def _map_view_before(
        self, name: str, tuples: Counter[Values], moves: Mapping[IPAddress, MapMove]
    ) -> dict[IPAddress, Values]:
        """``_map_view`` as it was before this update's ``moves`` (the global map already
        holds their new tuples)."""
        view = {ip: t for ip, t in self._map_view(name, tuples).items() if ip not in moves}
        for ip, (before, _after) in moves.items():
            if before is not None and before in tuples:
                view[ip] = before
        return view

    # -- snapshots ------------------------------------------------------------------------------

    def program(self, host: str) -> Program:
        """An immutable snapshot of ``host``'s program (empty for an unknown host)."""
        return self._snapshot(host, self._hosts.get(host, _Host()))

    def _snapshot(self, host: str, state: _Host) -> Program:
        cfg = self.config
        sets: dict[str, AddressSet] = {}
        ports: dict[str, frozenset[PortElement]] = {}
        maps: dict[str, Mapping[IPAddress, tuple[str, ...]]] = {}
        for name in state.refs:
            if name in self._sets:
                g = self._sets[name]
                sets[name] = AddressSet(frozenset(g.members), g.prefixes)
            elif name in self._port_sets:
                ports[name] = frozenset(self._port_sets[name][1])
            else:
                maps[name] = self._map_view(name, state.tuples[name])
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
        self._old_names = {}
        for aps in touched:
            ref = _aps_ref(aps)
            hosts |= self._aps_hosts.get(ref, set())
            self._old_names[ref] = self._block_names[ref]
            self._add_aps(aps)
        return self._deliver(hosts, _Changes(), block_swap=frozenset(_aps_ref(a) for a in touched))

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(
        self,
        hosts: set[str],
        changes: _Changes,
        block_swap: frozenset[Ref] = frozenset(),
    ) -> dict[str, ProgramDelta]:
        """Deltas for ``hosts`` (re-distilled) and for every other host holding a changed
        global set.  ``block_swap``: policy sets whose block changed but whose placement did
        not; hosts holding them swap the block in place instead of re-distilling."""
        out: dict[str, ProgramDelta] = {}
        fresh_content: dict[str, AddressSet] = {}
        known = self._known_hosts()
        existed = set(self._hosts)
        for host in sorted(hosts):
            if block_swap:
                delta = self._swap(host, block_swap, fresh_content)
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
                    delta = self._host_delta(host, before, after, changes, fresh_content)
                else:  # a new host starts from nothing
                    delta = diff_programs(Program(host), self._snapshot(host, after))
            else:  # a host without workloads any more: empty it
                self._hosts.pop(host, None)
                delta = diff_programs(self._snapshot(host, before), Program(host))
            if not delta.is_empty():
                out[host] = delta
        shared: defaultdict[str, set[str]] = defaultdict(set)
        for name in changes.names():
            holders: Iterable[str] = self._set_hosts.get(name, ())
            if name in changes.maps:  # only hosts that hold a tuple involved
                by_tuple = self._tuple_hosts[name]
                involved = {t for move in changes.maps[name].values() for t in move if t}
                holders = {h for t in involved for h in by_tuple.get(t, ())}
            for host in holders:
                if host not in hosts:
                    shared[host].add(name)
        for host, names in shared.items():
            delta = changes.delta(host, names, self._hosts[host].tuples)
            if not delta.is_empty():
                out[host] = delta
        return out

    def _known_hosts(self) -> set[str]:
        """Declared hosts and hosts that enforce a workload (Config.host_names, cheaply)."""
        return set(self.config.hosts) | {h for h, local in self._local_of.items() if local}

    def _swap(self, host: str, refs: frozenset[Ref], fresh: dict[str, AddressSet]) -> ProgramDelta:
        """Replace the blocks of ``refs`` on ``host`` by their new versions.  Placement (which
        sets apply where) is unchanged, so only chains and set references move."""
        state = self._hosts[host]
        chains: dict[ChainKey, tuple[Block, ...]] = {}
        present: set[Ref] = set()
        for key, blocks in state.chains.items():
            hit = {b.policy_set for b in blocks} & refs
            if hit:
                present |= hit
                chains[key] = tuple(self._blocks[b.policy_set] for b in blocks)
        state.chains.update(chains)
        moved = [r for r in present if self._old_names[r] != self._block_names[r]]
        before = set(state.refs)
        for ref in moved:
            state.refs.subtract(self._old_names[ref])
            state.refs.update(self._block_names[ref])
        state.refs = +state.refs
        added, removed = set(state.refs) - before, before - set(state.refs)
        for name in added:
            self._set_hosts[name].add(host)
            if name in self._tag_maps:
                state.tuples[name] = self._local_tuples(state, name)
                self._index_tuples(host, name, state.tuples[name], add=True)
        for name in removed:
            self._set_hosts[name].discard(host)
            if name in state.tuples:
                self._index_tuples(host, name, state.tuples.pop(name), add=False)
        new_sets, new_ports, new_maps = self._contents(added, fresh, state)
        return ProgramDelta(
            host,
            new_sets=new_sets,
            new_port_sets=new_ports,
            new_tag_maps=new_maps,
            chains=chains,
            **_dropped(removed),  # type: ignore[arg-type]  # ProgramDelta fields
        )

    def _contents(
        self, names: Iterable[str], fresh: dict[str, AddressSet], state: _Host
    ) -> tuple[
        dict[str, AddressSet],
        dict[str, frozenset[PortElement]],
        dict[str, Mapping[IPAddress, tuple[str, ...]]],
    ]:
        """Full contents of names newly referenced by the host of ``state``; address sets are
        frozen once per update (``fresh``) and shared by every host that receives them."""
        sets: dict[str, AddressSet] = {}
        ports: dict[str, frozenset[PortElement]] = {}
        maps: dict[str, Mapping[IPAddress, tuple[str, ...]]] = {}
        for name in names:
            if name in self._sets:
                if name not in fresh:
                    g = self._sets[name]
                    fresh[name] = AddressSet(frozenset(g.members), g.prefixes)
                sets[name] = fresh[name]
            elif name in self._port_sets:
                ports[name] = frozenset(self._port_sets[name][1])
            else:
                maps[name] = self._map_view(name, state.tuples[name])
        return sets, ports, maps

    def _host_delta(
        self,
        host: str,
        before: _Host,
        after: _Host,
        changes: _Changes,
        fresh: dict[str, AddressSet],
    ) -> ProgramDelta:
        new_sets: dict[str, AddressSet] = {}
        set_deltas: list[SetDelta] = []
        for ref in set(before.applied) | set(after.applied):
            name = f"aps:{ref}"
            a, b = before.applied.get(ref), after.applied.get(ref)
            if a is None and b is not None:
                new_sets[name] = AddressSet(b)
            elif a is not None and b is not None and a != b:
                set_deltas.append(SetDelta(name, AddressSet(b - a), AddressSet(a - b)))
        for prefix, old_iso, new_iso in (
            ("isolated", before.isolated, after.isolated),
            ("isolated-shadow", before.isolated_shadow, after.isolated_shadow),
        ):
            for d in TrafficDirection:
                a, b = old_iso.get(d, frozenset()), new_iso.get(d, frozenset())
                if a != b:
                    set_deltas.append(
                        SetDelta(f"{prefix}:{d.value}", AddressSet(b - a), AddressSet(a - b))
                    )
        added = set(after.refs) - set(before.refs)
        removed = set(before.refs) - set(after.refs)
        added_sets, new_ports, new_maps = self._contents(added, fresh, after)
        new_sets.update(added_sets)
        kept = set(after.refs) - added
        carried = changes.delta(host, kept - self._tag_maps.keys(), after.tuples)
        set_deltas.extend(carried.set_deltas)
        map_deltas = {}
        for name in kept & self._tag_maps.keys():
            old_view = self._map_view_before(name, before.tuples[name], changes.maps.get(name, {}))
            new_view = self._map_view(name, after.tuples[name])
            changed = {ip: t for ip, t in new_view.items() if old_view.get(ip) != t}
            gone = frozenset(old_view.keys() - new_view.keys())
            if changed or gone:
                map_deltas[name] = (changed, gone)
        chains = {
            key: after.chains.get(key, ())
            for key in set(before.chains) | set(after.chains)
            if before.chains.get(key, ()) != after.chains.get(key, ())
        }
        interfaces = after.interfaces if after.interfaces != before.interfaces else None
        return ProgramDelta(
            host,
            new_sets=new_sets,
            set_deltas=tuple(set_deltas),
            new_port_sets=new_ports,
            new_tag_maps=new_maps,
            chains=chains,
            interfaces=interfaces,
            port_set_deltas=carried.port_set_deltas,
            tag_map_deltas=map_deltas,
            **_dropped(  # type: ignore[arg-type]  # the three dropped_* fields
                removed | {f"aps:{r}" for r in set(before.applied) - set(after.applied)}
            ),
        )


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


def _map_change(
    moves: Mapping[IPAddress, MapMove], tuples: Counter[Values]
) -> tuple[dict[IPAddress, Values], frozenset[IPAddress]]:
    """What ``moves`` change in the copy of a map that holds ``tuples``: (set, removed)."""
    changed: dict[IPAddress, Values] = {}
    gone: set[IPAddress] = set()
    for ip, (before, after) in moves.items():
        held_before = before is not None and before in tuples
        held_after = after is not None and after in tuples
        if held_after and after is not None and (not held_before or before != after):
            changed[ip] = after
        elif held_before and not held_after:
            gone.add(ip)
    return changed, frozenset(gone)


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
