"""Per-host trimming: which rules, and which members of each set and tag map, one host needs.

Why this module exists: resolve (``_index.py``) computes every set once for the estate, but a
host's program only ever decides flows at an end that is one of its own workloads (DESIGN §2
"Both ends enforce"; the ``Program`` docstring).  A block's rules are consulted for a packet
only when the local address — the source at egress, the destination at ingress — is in the
block's ``applies_to`` set, which holds addresses of local workloads only.  Everything below
follows from that one fact.  For a compiled rule r of block b in a chain of direction d, let
*local* be r's local side (``src`` at egress, ``dst`` at ingress), *remote* the other, and
``ends(r) = applies_to(b) ∩ local``: the addresses at which r can be consulted and match.

* **A — rules.**  If ``ends(r)`` is empty, r never matches a packet this chain sees: the chain
  drops it.  The same holds for a ``matchTags`` rule when no address of ``ends(r)`` carries a
  value of every listed type (such an end compares unequal with everything).
* **B — local sides.**  A set named on local sides is only ever asked about local addresses:
  its members among the host's local addresses (``local_in``) answer exactly as it does.
* **C — matched remote sides.**  A ``matchTags`` rule over map m matches only when the
  remote's value tuple equals that of some address of ``ends(r)``: with ``tuples(r)`` the
  tuples of ``ends(r)``, only remote members whose tuple is in ``tuples(r)`` can matter.  The
  set keeps just those — for a selector set or a workload set, whose workload addresses are
  all in ``members`` (a selector's prefixes hold bare addresses of labelled groups, which carry
  no single-valued tag nor ``project`` and so never satisfy matchTags, and workloads that are
  members anyway).  Other remote forms (CIDR, address group, network, ``any``) stay whole
  and make their tuples *open*: the map then holds every address with those tuples.
* **Maps.**  The host's copy of m holds the tuple of every address some kept rule compares:
  its local addresses whose tuple is in ``T(m)`` (the union of ``tuples(r)`` over its rules
  using m), the trimmed remote members, and every address of an open tuple.  A missing entry
  compares unequal — exactly what the missing address's true tuple, which no end shares,
  would do.
* **One view per set.**  A set named in several roles on one host holds the union of what
  each needs: every member if any rule needs them all (a remote side without matchTags),
  else its local part and its matched parts.  The union is sound because each part is a
  subset of the set and each role's answers depend only on addresses its own part decides.
  So set names, and the rules naming them, are the same on every host; only members differ.

Identical views are not merged into one set (the "D" of docs/benchmarks.md): which names are
identical depends on members, so a tag change could then rewrite rules, against DESIGN §3
("a tag change changes set elements, not rules"), for a handful of entries.

Incremental upkeep (the compiler does it, with these helpers): ``ends`` and ``tuples`` depend
only on the host's own workloads, so a change elsewhere never moves rules or uses on a host;
it moves members of the views that hold the changed addresses' tuples, found through the
index of ``Uses.maps`` keys (tuple → hosts).  ``Uses`` counts every contribution, so a
changed block is taken out and put back rule by rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ..model import IPAddress, TrafficDirection
from ._program import CompiledRule

__all__ = [
    "RuleUse",
    "SetUse",
    "Uses",
    "in_map",
    "in_view",
    "local_side",
    "map_view",
    "rule_use",
    "trimmable",
    "view",
]

Values = tuple[str, ...]  # one address's values of a tag map's types


def trimmable(name: str) -> bool:
    """Can C trim this set on a matched remote side?  Selector and workload sets: every
    workload address in them is in ``members`` (the module docstring)."""
    return name.startswith(("tags:", "wl:"))


@dataclass(frozen=True, slots=True)
class RuleUse:
    """What one rule, kept in one chain of one host, needs there.  ``tuples``: the value
    tuples of ``ends(r)`` for its tag map (empty without matchTags)."""

    local: str | None
    remote: str | None
    tag_map: str | None
    tuples: frozenset[Values]
    ports: tuple[str, ...]


def local_side(rule: CompiledRule, direction: TrafficDirection) -> str | None:
    """The set the local address must be in (None: any): the source at egress."""
    return rule.src if direction is TrafficDirection.EGRESS else rule.dst


def rule_use(
    rule: CompiledRule,
    direction: TrafficDirection,
    ends: frozenset[IPAddress],
    tuples_of: Callable[[str, frozenset[IPAddress]], frozenset[Values]],
) -> RuleUse | None:
    """The rule's use in a chain of ``direction``; None when the chain drops it (A).
    ``ends``: the block's ``applies_to`` addresses in the rule's local side (all of them for
    ``any``); ``tuples_of(map, ends)``: the tuples of those addresses in the map."""
    egress = direction is TrafficDirection.EGRESS
    local, remote = (rule.src, rule.dst) if egress else (rule.dst, rule.src)
    if not ends:
        return None
    tuples: frozenset[Values] = frozenset()
    if rule.match_tags is not None:
        tuples = tuples_of(rule.match_tags, ends)
        if not tuples:
            return None
    ports: tuple[str, ...] = ()
    if rule.services is not None:
        ports = tuple(s.named for s in rule.services if s.named is not None)
    return RuleUse(local, remote, rule.match_tags, tuples, ports)


@dataclass
class SetUse:
    """How the kept rules of one host use one set; every field counts rules (per tuple)."""

    local: int = 0
    full: int = 0  # remote sides that need every member
    matched: dict[str, Counter[Values]] = field(default_factory=dict)  # tag map → tuples


K = TypeVar("K", bound=Hashable)


def _count(table: dict[str, Counter[K]], name: str, keys: Iterable[K], count: int) -> None:
    """Add ``count`` to each of ``keys`` in ``table[name]``, dropping what falls to zero."""
    counter = table.get(name)
    if counter is None:
        counter = table[name] = Counter()
    for k in keys:
        counter[k] += count
        if counter[k] <= 0:
            del counter[k]
    if not counter:
        del table[name]


@dataclass
class Uses:
    """Every ``RuleUse`` of one host's kept rules, summed.  Invariant: no zero counts and no
    empty entries, so a key present means "referenced"."""

    sets: dict[str, SetUse] = field(default_factory=dict)
    ports: Counter[str] = field(default_factory=Counter)  # port sets
    maps: dict[str, Counter[Values]] = field(default_factory=dict)  # T(m)
    open: dict[str, Counter[Values]] = field(default_factory=dict)  # tuples of whole remotes
    matched_by_map: dict[str, Counter[str]] = field(default_factory=dict)  # map → trimmed sets

    def add_all(self, uses: Iterable[RuleUse | None], sign: int) -> None:
        """Count ``uses`` in (``sign`` 1) or out (-1); equal uses are counted together (many
        rules of a host use the same sets the same way)."""
        for use, n in Counter(u for u in uses if u is not None).items():
            self.add(use, sign * n)

    def add(self, use: RuleUse, count: int) -> None:
        """Count ``use`` ``count`` times in (or out, when negative)."""
        if use.local is not None:
            self._set(use.local, count, 0)
        m = use.tag_map
        if use.remote is not None:
            if m is not None and trimmable(use.remote):
                s = self.sets.get(use.remote) or self.sets.setdefault(use.remote, SetUse())
                _count(s.matched, m, use.tuples, count)
                _count(self.matched_by_map, m, (use.remote,), count)
                self._set(use.remote, 0, 0)
            else:
                self._set(use.remote, 0, count)
        if m is not None:
            _count(self.maps, m, use.tuples, count)
            if use.remote is None or not trimmable(use.remote):
                _count(self.open, m, use.tuples, count)
        for name in use.ports:
            self.ports[name] += count
            if self.ports[name] <= 0:
                del self.ports[name]

    def _set(self, name: str, local: int, full: int) -> None:
        s = self.sets.get(name)
        if s is None:
            s = self.sets[name] = SetUse()
        s.local += local
        s.full += full
        if not (s.local or s.full or s.matched):
            del self.sets[name]


# The functions below build views by set algebra on sets that already exist: CPython then
# reuses the hashes those sets store, where testing addresses one by one would call
# ``IPv4Address.__hash__`` (Python code) for each — the larger part of a full compile.


def view(
    use: SetUse,
    local_part: frozenset[IPAddress],
    members: set[IPAddress],
    by_tuple: Mapping[str, Mapping[Values, set[IPAddress]]],
) -> set[IPAddress] | None:
    """The members a host keeps of a set it uses as ``use`` says; None: every member (the
    global set).  ``local_part``: the set's members among the host's local addresses;
    ``by_tuple``: per tag map, the addresses of each value tuple."""
    if use.full:
        return None
    kept = set(local_part) if use.local else set()
    for m, tuples in use.matched.items():
        classes = by_tuple[m]
        for t in tuples:
            if c := classes.get(t):
                kept |= members & c
    return kept


def map_view(
    tag_map: str,
    uses: Uses,
    local_ips: frozenset[IPAddress],
    members: Mapping[str, set[IPAddress]],
    by_tuple: Mapping[Values, set[IPAddress]],
) -> dict[IPAddress, Values]:
    """The host's copy of ``tag_map`` (the module docstring, "Maps"); ``members``: the global
    members of the sets named in ``uses``."""
    opened: Mapping[Values, int] = uses.open.get(tag_map, {})
    matched = [
        (members[n], uses.sets[n].matched[tag_map]) for n in uses.matched_by_map.get(tag_map, ())
    ]
    out: dict[IPAddress, Values] = {}
    for t in uses.maps[tag_map]:
        c = by_tuple.get(t)
        if not c:
            continue
        if t in opened:
            out.update(dict.fromkeys(c, t))
            continue
        keep = c & local_ips
        for held, tuples in matched:
            if t in tuples:
                keep |= held & c
        out.update(dict.fromkeys(keep, t))
    return out


def in_map(t: Values | None, tag_map: str, uses: Uses, holders: Iterable[str]) -> Values | None:
    """The entry ``map_view`` gives a non-local address whose tuple is ``t`` and which the
    trimmable sets ``holders`` hold: computed for that address alone."""
    if t is None or t not in uses.maps[tag_map]:
        return None
    if t in uses.open.get(tag_map, ()):
        return t
    by_map: Mapping[str, int] = uses.matched_by_map.get(tag_map, {})
    for name in holders:
        if name in by_map and t in uses.sets[name].matched[tag_map]:
            return t
    return None


def in_view(tuples: Mapping[str, Values | None], use: SetUse) -> bool:
    """Does a trimmed view used as ``use`` hold a non-local member whose tuple in each tag
    map is ``tuples[map]``?"""
    return any(tuples.get(m) in ts for m, ts in use.matched.items())
