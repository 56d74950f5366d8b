"""Which address sets the nftables rendering stores as runs, and how their runs change.

``compiler/_ranges.py`` says why and when a set's single addresses are stored as runs in a
named interval set ``s_…_<family>_r`` instead of one element each in the hash set
``s_…_<family>``.  The rendering keeps, in its ``Layout``, every set's (addresses, runs) per
family, so that deciding after an update which sets are stored as runs costs
O(sets touched), not O(members): ``range_changes`` moves the counts by what changed and
returns the runs to remove and to add.  The counts are always those a fresh count of the new
program would give (a test holds them to it), so ``Layout.ranged`` after any sequence of
updates is what a load of the same program would choose.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from ..compiler import Program, ProgramDelta
from ..compiler._ranges import (
    Run,
    RunCount,
    SetFamily,
    address_of,
    changed_runs,
    family_ints,
    range_counts,
    runs,
)
from ..model import IPAddress

__all__ = ["RunChanges", "range_changes", "run_elements", "set_runs", "touched_sets"]

RunChanges = dict[SetFamily, tuple[set[Run], set[Run]]]  # (runs before, runs after) touched
_RECOUNT_SHARE = 8  # more candidates than 1/8 of the members: recount the set whole


def set_runs(addresses: Iterable[IPAddress], family: int) -> list[Run]:
    return runs(family_ints(addresses, family))


def run_elements(values: Iterable[Run], family: int) -> list[str]:
    """nft elements of runs: ``a`` for a single address, ``a-b`` for a longer run."""
    out = []
    for low, high in sorted(values):
        first = address_of(low, family)
        out.append(str(first) if low == high else f"{first}-{address_of(high, family)}")
    return out


def _holds(addresses: Collection[IPAddress], family: int) -> Callable[[int], bool]:
    return lambda value: address_of(value, family) in addresses


def touched_sets(old: Program, new: Program, delta: ProgramDelta) -> dict[str, set[IPAddress]]:
    """Sets in both programs whose addresses the delta may change → those addresses."""
    touched: dict[str, set[IPAddress]] = {}
    for sd in delta.set_deltas:
        touched.setdefault(sd.name, set()).update(sd.added.addresses, sd.removed.addresses)
    for name in delta.new_sets.keys() & old.sets.keys() & new.sets.keys():  # re-declared
        touched.setdefault(name, set()).update(old.sets[name].addresses ^ new.sets[name].addresses)
    return {n: c for n, c in touched.items() if n in old.sets and n in new.sets}


def range_changes(
    old: Program,
    new: Program,
    counts: Mapping[SetFamily, RunCount],
    families: Iterable[int],
    delta: ProgramDelta,
) -> tuple[dict[SetFamily, RunCount], RunChanges]:
    """The counts of ``new`` from those of ``old`` (``counts``), and for every set the
    delta touches, the runs of ``old`` and of ``new`` around the touched addresses."""
    fams = tuple(families)
    after = {k: v for k, v in counts.items() if k[0] in new.sets}
    added = [n for n in new.sets if n not in old.sets]
    after.update(range_counts({n: new.sets[n].addresses for n in added}, fams))
    changes: RunChanges = {}
    for name, candidates in touched_sets(old, new, delta).items():
        before, now = old.sets[name].addresses, new.sets[name].addresses
        for f in fams:
            values = family_ints(candidates, f)
            if not values:
                continue
            key = (name, f)
            n, count = counts.get(key, (0, 0))
            n += sum(1 for v in values if address_of(v, f) in now)
            n -= sum(1 for v in values if address_of(v, f) in before)
            if len(values) * _RECOUNT_SHARE > n:
                was, will = set(set_runs(before, f)), set(set_runs(now, f))
                changes[key] = (was - will, will - was)
                count = len(will)
            else:
                changes[key] = changed_runs(_holds(before, f), _holds(now, f), values)
                count += len(changes[key][1]) - len(changes[key][0])
            if n:
                after[key] = (n, count)
            else:
                after.pop(key, None)
    return after, changes
