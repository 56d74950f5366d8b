"""Delivery: what turns compiled state into per-host ``Program`` snapshots and
``ProgramDelta``s.

After an update has moved the global sets (``Changes`` records how), ``Delivery._deliver``
re-distills the hosts whose own workloads or blocks changed and diffs their state; every other
host takes the changes of the sets it holds whole as they are, and re-tests only the changed
addresses in its trimmed views and tag maps (``_retest``: the incremental upkeep of
``_trim.py``).  A policy edit that moves no placement swaps blocks in place instead
(``_swap``).  The fast paths that produce the changes live in ``_compile.py``.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import IPAddress, IPNetwork, Ref, TrafficDirection
from ._diff import diff_programs
from ._distill import Distiller, HostState, Values, View, kept_block
from ._program import (
    AddressSet,
    Block,
    ChainKey,
    CompiledRule,
    PortElement,
    Program,
    ProgramDelta,
    SetDelta,
)
from ._trim import RuleUse, in_map, in_view, trimmable

__all__ = ["Changes", "Delivery"]

MapMove = tuple[Values | None, Values | None]  # an address's tuple (before, after) an update
PortChange = tuple[frozenset[PortElement], frozenset[PortElement]]  # (added, removed)


@dataclass
class Changes:
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


def _dropped(names: set[str]) -> dict[str, frozenset[str]]:
    """ProgramDelta's ``dropped_*`` fields for ``names``, split by what they name."""
    return {
        "dropped_sets": frozenset(n for n in names if not n.startswith(("port:", "match:"))),
        "dropped_port_sets": frozenset(n for n in names if n.startswith("port:")),
        "dropped_tag_maps": frozenset(n for n in names if n.startswith("match:")),
    }


def _kept_positions(rules: tuple[CompiledRule, ...], kept: tuple[CompiledRule, ...]) -> list[bool]:
    """Which of ``rules`` a trimmed block holds (``HostState`` invariant: the same objects, in
    order; equal rules are kept alike, so a repeated object cannot mislead the walk)."""
    flags, j = [], 0
    for r in rules:
        hit = j < len(kept) and kept[j] is r
        flags.append(hit)
        j += hit
    return flags


class Delivery(Distiller):
    """Snapshots and deltas of the compiled state (see the module docstring)."""

    # -- snapshots ------------------------------------------------------------------------------

    def program(self, host: str) -> Program:
        """An immutable snapshot of ``host``'s program (empty for an unknown host)."""
        return self._snapshot(host, self._hosts.get(host, HostState()))

    def _full(self, name: str, fresh: dict[str, AddressSet]) -> AddressSet:
        """Every member of global set ``name``, frozen once per update (``fresh``) and shared
        by every host that receives it."""
        if name not in fresh:
            g = self._sets[name]
            fresh[name] = AddressSet(frozenset(g.members), g.prefixes)
        return fresh[name]

    def _snapshot(self, host: str, state: HostState) -> Program:
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
            state.remote_services,
            state.peers,
        )

    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(
        self,
        hosts: set[str],
        changes: Changes,
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
            before = self._hosts.get(host, HostState())
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

    def _retest(self, state: HostState, moved: _Moved, parts: _Parts) -> None:
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

    def _moved(self, changes: Changes) -> _Moved:
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
            self._carry_set(parts, name, before, after, Changes(), fresh)
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
        state: HostState,
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
            return kept_block(self._blocks[ref], [u is not None for u in uses])
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
        return kept_block(self._blocks[ref], keep)

    def _carry_set(
        self,
        parts: _Parts,
        name: str,
        before: View | _Absent,
        after: View | _Absent,
        changes: Changes,
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

    def _members_before(self, name: str, changes: Changes) -> set[IPAddress]:
        g, d = self._sets[name], changes.sets.get(name)
        if d is None:
            return g.members
        return (g.members - d.added.addresses) | d.removed.addresses

    def _prefixes_before(self, name: str, changes: Changes) -> tuple[IPNetwork, ...]:
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
        before: HostState,
        after: HostState,
        changes: Changes,
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
        steering: dict[str, object] = {
            key: new
            for key, old, new in (
                ("services", before.services, after.services),
                ("remote_services", before.remote_services, after.remote_services),
                ("peers", before.peers, after.peers),
            )
            if old != new
        }
        return parts.delta(host, chains=chains, interfaces=interfaces, **steering)
