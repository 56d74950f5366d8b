"""Resolve: which addresses each endpoint form stands for, without testing every workload.

``TagIndex`` is an inverted index (type, value) → workload names, kept up to date one workload
at a time, so a selector resolves by set algebra over the workloads it names and a tag change
costs one re-index.  ``endpoint_members`` turns a rule endpoint into the addresses it matches
(docs/semantics.md "Rule endpoints"), split into single addresses and collapsed prefixes.

Labelled address groups: a bare address carries the labels of every labelled group holding it,
and a workload's address never does.  ``LabelRegions`` cuts the space covered by labelled
groups into ranges of equal label sets; a tag selector takes the ranges whose labels it
matches, minus the addresses of workloads inside them that it does not match.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import defaultdict
from collections.abc import Iterable

from ..model import (
    AddressGroupEndpoint,
    AnyEndpoint,
    CidrEndpoint,
    Config,
    Endpoint,
    IPAddress,
    IPNetwork,
    NetworkEndpoint,
    Op,
    Selector,
    Tags,
    TagsEndpoint,
    WorkloadEndpoint,
)

__all__ = ["LabelRegions", "TagIndex", "endpoint_members", "endpoint_name", "subtract"]


class TagIndex:
    """Inverted index over workloads' effective tags.

    Invariant: ``_by_value[(t, v)]`` holds exactly the workloads whose effective tags have
    value v of type t; ``_by_type[t]`` those with any value of t.  Mutated only by ``put`` and
    ``remove``, by the compiler that owns it.
    """

    def __init__(self) -> None:
        self._all: set[str] = set()
        self._by_value: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self._by_type: defaultdict[str, set[str]] = defaultdict(set)
        self._tags: dict[str, Tags] = {}

    def put(self, name: str, tags: Tags) -> None:
        self.remove(name)
        self._all.add(name)
        self._tags[name] = tags
        for t, values in tags.items():
            self._by_type[t].add(name)
            for v in values:
                self._by_value[(t, v)].add(name)

    def remove(self, name: str) -> None:
        tags = self._tags.pop(name, None)
        if tags is None:
            return
        self._all.discard(name)
        for t, values in tags.items():
            self._by_type[t].discard(name)
            for v in values:
                self._by_value[(t, v)].discard(name)

    def select(self, selector: Selector) -> set[str]:
        """Names of the workloads whose effective tags satisfy ``selector``."""
        result: set[str] | None = None
        # Positive requirements first: they shrink the candidates fastest.
        for req in sorted(selector.requirements, key=lambda r: r.op not in (Op.IN, Op.EXISTS)):
            match req.op:
                case Op.IN:
                    hit: set[str] = set()
                    for v in req.values:
                        hit |= self._by_value.get((req.key, v), set())
                    result = hit if result is None else result & hit
                case Op.EXISTS:
                    has = self._by_type.get(req.key, set())
                    result = set(has) if result is None else result & has
                case Op.NOT_IN:
                    bad: set[str] = set()
                    for v in req.values:
                        bad |= self._by_value.get((req.key, v), set())
                    result = (self._all - bad) if result is None else result - bad
                case Op.NOT_EXISTS:
                    has = self._by_type.get(req.key, set())
                    result = (self._all - has) if result is None else result - has
            if not result:
                return set()
        return set(self._all) if result is None else result


def subtract(prefixes: Iterable[IPNetwork], holes: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """``prefixes`` minus ``holes``, collapsed (IPv4 first, then IPv6)."""
    current = list(prefixes)
    for hole in holes:
        nxt: list[IPNetwork] = []
        for p in current:
            if p.version != hole.version or not p.overlaps(hole):
                nxt.append(p)
            elif not hole.supernet_of(p):  # type: ignore[arg-type]  # same family checked
                nxt.extend(p.address_exclude(hole))  # type: ignore[arg-type]  # same family
        current = nxt
    v4 = ipaddress.collapse_addresses(p for p in current if p.version == 4)
    v6 = ipaddress.collapse_addresses(p for p in current if p.version == 6)
    return (*v4, *v6)


class LabelRegions:
    """Disjoint ranges of the labelled address groups, each with its label set."""

    def __init__(self, config: Config) -> None:
        # Elementary ranges between every boundary of every labelled group's ranges.
        groups = [g for g in config.address_groups.values() if g.labels]
        cuts: dict[int, set[int]] = {4: set(), 6: set()}
        pieces: list[tuple[IPNetwork, frozenset[str]]] = []
        for g in groups:
            for p in subtract(g.prefixes, g.except_):
                pieces.append((p, g.labels))
                cuts[p.version].update((int(p.network_address), int(p.broadcast_address) + 1))
        self.regions: list[tuple[tuple[IPNetwork, ...], Tags]] = []
        for version, points in cuts.items():
            ordered = sorted(points)
            for lo, hi in itertools.pairwise(ordered):
                labels: set[str] = set()
                for p, lab in pieces:
                    if (
                        p.version == version
                        and int(p.network_address) <= lo
                        and hi - 1 <= int(p.broadcast_address)
                    ):
                        labels |= lab
                if not labels:
                    continue
                first, last = ipaddress.ip_address(lo), ipaddress.ip_address(hi - 1)
                if version == 6:
                    first, last = ipaddress.IPv6Address(lo), ipaddress.IPv6Address(hi - 1)
                nets: tuple[IPNetwork, ...] = tuple(ipaddress.summarize_address_range(first, last))
                self.regions.append((nets, Tags.of({"label": labels})))
        # Invariant: the workload addresses inside some region (only these can be carved).
        self.workloads_inside: dict[IPAddress, str] = (
            {ip: n for ip, n in config.by_ip.items() if self.covers(ip)} if self.regions else {}
        )

    def covers(self, ip: IPAddress) -> bool:
        return any(ip in n for nets, _ in self.regions for n in nets)

    def prefixes(self, selector: Selector, members: set[str]) -> tuple[IPNetwork, ...]:
        """Ranges whose labels ``selector`` matches, minus the addresses of workloads in them
        that are not ``members`` (a workload's own tags win)."""
        nets = [n for ranges, tags in self.regions if selector.matches(tags) for n in ranges]
        if not nets:
            return ()
        holes = [
            ipaddress.ip_network(ip)
            for ip, name in self.workloads_inside.items()
            if name not in members and any(ip in n for n in nets)
        ]
        return subtract(nets, holes)


def endpoint_name(endpoint: Endpoint) -> str | None:
    """The stable set name of an endpoint form; None for ``any``."""
    match endpoint:
        case AnyEndpoint():
            return None
        case TagsEndpoint(selector):
            return f"tags:{selector}"
        case AddressGroupEndpoint(ref):
            return f"ag:{ref}"
        case CidrEndpoint(cidr, except_):
            return "cidr:" + "!".join(str(n) for n in (cidr, *except_))
        case NetworkEndpoint(ref):
            return f"net:{ref}"
        case WorkloadEndpoint(name):
            return f"wl:{name}"


def endpoint_members(
    config: Config, endpoint: Endpoint, index: TagIndex, regions: LabelRegions
) -> tuple[set[IPAddress], tuple[IPNetwork, ...]]:
    """(single addresses, prefixes) that ``endpoint`` matches.  Not for ``any``."""
    match endpoint:
        case TagsEndpoint(selector):
            names = index.select(selector)
            ips = {ip for n in names for ip in config.workloads[n].ips}
            return ips, regions.prefixes(selector, names)
        case AddressGroupEndpoint(ref):
            group = config.address_groups[ref]
            return set(), subtract(group.prefixes, group.except_)
        case CidrEndpoint(cidr, except_):
            return set(), subtract([cidr], except_)
        case NetworkEndpoint(ref):
            attached = {
                ip
                for w in config.workloads.values()
                for itf in w.interfaces
                if itf.network == ref
                for ip in itf.ips
            }
            return attached, subtract(config.networks[ref].subnets, [])
        case WorkloadEndpoint(name):
            return set(config.workloads[name].ips), ()
        case AnyEndpoint():
            raise ValueError("'any' has no members")
