"""Deltas between programs: ``diff_programs`` (old, new → delta) and its inverse
``apply_delta`` (old, delta → new).

The compiler's fast paths build deltas directly; these generic functions serve the slow path
(recompile and compare), data paths that keep a ``Program`` (the simulator), and the tests that
hold the fast paths to "applying the deltas gives what a fresh compile gives".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

from ..model import IPAddress
from ._program import AddressSet, PortElement, Program, ProgramDelta, SetDelta

__all__ = ["apply_delta", "diff_programs"]

T = TypeVar("T")


def _set_delta(name: str, old: AddressSet, new: AddressSet) -> SetDelta | None:
    if old == new:
        return None
    old_p, new_p = set(old.prefixes), set(new.prefixes)
    return SetDelta(
        name,
        AddressSet(new.addresses - old.addresses, tuple(p for p in new.prefixes if p not in old_p)),
        AddressSet(old.addresses - new.addresses, tuple(p for p in old.prefixes if p not in new_p)),
    )


def diff_programs(old: Program, new: Program) -> ProgramDelta:
    set_deltas = [
        d
        for name in sorted(old.sets.keys() & new.sets.keys())
        if (d := _set_delta(name, old.sets[name], new.sets[name])) is not None
    ]
    port_deltas = {
        name: (new.port_sets[name] - old.port_sets[name], old.port_sets[name] - new.port_sets[name])
        for name in old.port_sets.keys() & new.port_sets.keys()
        if old.port_sets[name] != new.port_sets[name]
    }
    map_deltas: dict[str, tuple[Mapping[IPAddress, tuple[str, ...]], frozenset[IPAddress]]] = {}
    for name in old.tag_maps.keys() & new.tag_maps.keys():
        a, b = old.tag_maps[name], new.tag_maps[name]
        if a != b:
            changed = {ip: v for ip, v in b.items() if a.get(ip) != v}
            map_deltas[name] = (changed, frozenset(a.keys() - b.keys()))
    return ProgramDelta(
        new.host,
        new_sets={n: s for n, s in new.sets.items() if n not in old.sets},
        set_deltas=tuple(set_deltas),
        new_port_sets={n: s for n, s in new.port_sets.items() if n not in old.port_sets},
        port_set_deltas=port_deltas,
        new_tag_maps={n: m for n, m in new.tag_maps.items() if n not in old.tag_maps},
        tag_map_deltas=map_deltas,
        chains={
            k: new.chains.get(k, ())
            for k in old.chains.keys() | new.chains.keys()
            if old.chains.get(k, ()) != new.chains.get(k, ())
        },
        interfaces=new.interfaces if new.interfaces != old.interfaces else None,
        isolated=dict(new.isolated) if new.isolated != old.isolated else None,
        isolated_shadow=(
            dict(new.isolated_shadow) if new.isolated_shadow != old.isolated_shadow else None
        ),
        default_posture=new.default_posture if new.default_posture != old.default_posture else None,
        services=new.services if new.services != old.services else None,
        remote_services=(
            new.remote_services if new.remote_services != old.remote_services else None
        ),
        peers=new.peers if new.peers != old.peers else None,
        dropped_sets=frozenset(old.sets.keys() - new.sets.keys()),
        dropped_port_sets=frozenset(old.port_sets.keys() - new.port_sets.keys()),
        dropped_tag_maps=frozenset(old.tag_maps.keys() - new.tag_maps.keys()),
    )


def _apply_set(s: AddressSet, d: SetDelta) -> AddressSet:
    """Removals first, then additions (a prefix may be replaced by itself)."""
    removed = set(d.removed.prefixes)
    prefixes = [p for p in s.prefixes if p not in removed]
    prefixes += [p for p in d.added.prefixes if p not in prefixes]
    return AddressSet((s.addresses - d.removed.addresses) | d.added.addresses, tuple(prefixes))


def _without(mapping: Mapping[str, T], dropped: frozenset[str]) -> dict[str, T]:
    return {k: v for k, v in mapping.items() if k not in dropped}


def apply_delta(program: Program, delta: ProgramDelta) -> Program:
    """The program after ``delta``, in the order ProgramDelta documents."""
    sets = {**program.sets, **delta.new_sets}
    for sd in delta.set_deltas:
        sets[sd.name] = _apply_set(sets[sd.name], sd)
    ports: dict[str, frozenset[PortElement]] = {**program.port_sets, **delta.new_port_sets}
    for name, (added, removed) in delta.port_set_deltas.items():
        ports[name] = (ports[name] - removed) | added
    maps = {**program.tag_maps, **delta.new_tag_maps}
    for name, (changed, gone) in delta.tag_map_deltas.items():
        maps[name] = {**{k: v for k, v in maps[name].items() if k not in gone}, **changed}
    chains = {**program.chains, **delta.chains}
    chains = {k: v for k, v in chains.items() if v}
    return replace(
        program,
        interfaces=delta.interfaces if delta.interfaces is not None else program.interfaces,
        sets=_without(sets, delta.dropped_sets),
        port_sets=_without(ports, delta.dropped_port_sets),
        tag_maps=_without(maps, delta.dropped_tag_maps),
        chains=chains,
        isolated=delta.isolated if delta.isolated is not None else program.isolated,
        isolated_shadow=(
            delta.isolated_shadow if delta.isolated_shadow is not None else program.isolated_shadow
        ),
        default_posture=delta.default_posture or program.default_posture,
        services=delta.services if delta.services is not None else program.services,
        remote_services=(
            delta.remote_services if delta.remote_services is not None else program.remote_services
        ),
        peers=delta.peers if delta.peers is not None else program.peers,
    )
