"""Address runs: how a data path stores a set's single addresses in fewer entries than members.

Workload addresses are rarely scattered: a host hands its workloads addresses from its own
block (a node's pod CIDR, a hypervisor's subnet), and a pool of hosts serving one tier or
deployment holds neighbouring blocks.  So the members of a set often form **runs** of
consecutive addresses, and an interval set stores a run as one element: 6,680 addresses of
the realistic estate's largest set are 682 runs (bench/compile.py).

A run never crosses a multiple of ``RUN_BLOCK`` (a /24 in IPv4, a /120 in IPv6).  That costs
few extra runs, and it bounds the work of keeping runs up to date: a member that comes or goes
changes only runs of its own block, which ``changed_runs`` finds by walking at most
``RUN_BLOCK`` neighbours, never the whole set.

Runs are not free.  In nftables 1.0.6 every element command first reloads the elements of
every interval set of the table (measured on this machine: ~1.05 µs per stored range and
~6 µs per interval set, on every update of any set; a 10,000-element hash set costs nothing
like it).  So a set's addresses are stored as runs only where that pays: it must save at least
as many entries as it costs (``RANGE_SET_COST`` + its runs), and all runs of one host stay
within ``RANGE_BUDGET`` cost units (~2 ms per update).  ``ranged`` picks, deterministically,
the sets that save most first.  Prefixes (CIDRs) are stored as they are, never as runs.

Pure; the unit of every function here is an address as an int of one family.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping

from ..model import IPAddress

__all__ = [
    "RANGE_BUDGET",
    "RANGE_SET_COST",
    "RUN_BLOCK",
    "Run",
    "RunCount",
    "SetFamily",
    "address_of",
    "changed_runs",
    "family_ints",
    "range_counts",
    "ranged",
    "runs",
]

RUN_BLOCK = 256  # runs stay inside aligned blocks of this many addresses
RANGE_SET_COST = 6  # what one interval set costs every update, in stored ranges
RANGE_BUDGET = 2000  # cost units (ranges + RANGE_SET_COST per set) of runs per host

Run = tuple[int, int]  # first and last address, inclusive
SetFamily = tuple[str, int]  # (set name, address family)
RunCount = tuple[int, int]  # (addresses, runs) of one set in one family


def family_ints(addresses: Iterable[IPAddress], family: int) -> list[int]:
    return [int(a) for a in addresses if a.version == family]


def address_of(value: int, family: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value)


def runs(values: Iterable[int]) -> list[Run]:
    """The runs of ``values`` in ascending order, each inside one ``RUN_BLOCK``."""
    out: list[Run] = []
    for x in sorted(values):
        if out and x == out[-1][1] + 1 and x % RUN_BLOCK:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


def _run_around(member: Callable[[int], bool], x: int) -> Run:
    """The run of members holding member ``x``."""
    low, high = x, x
    while low % RUN_BLOCK and member(low - 1):
        low -= 1
    while (high + 1) % RUN_BLOCK and member(high + 1):
        high += 1
    return low, high


def changed_runs(
    was: Callable[[int], bool], now: Callable[[int], bool], candidates: Collection[int]
) -> tuple[set[Run], set[Run]]:
    """``(before, after)``: the runs of the old members (``was``) and of the new (``now``)
    that hold or border an address of ``candidates`` (every address whose membership may have
    changed).  Every other run is the same in both, so ``before - after`` are the runs to
    remove, ``after - before`` those to add, and the run count moves by
    ``len(after) - len(before)``."""
    before: set[Run] = set()
    after: set[Run] = set()
    for x in candidates:
        for y in (x - 1, x, x + 1):
            if y // RUN_BLOCK != x // RUN_BLOCK:
                continue  # runs of another block cannot change with x
            if was(y) and not any(lo <= y <= hi for lo, hi in before):
                before.add(_run_around(was, y))
            if now(y) and not any(lo <= y <= hi for lo, hi in after):
                after.add(_run_around(now, y))
    return before, after


def range_counts(
    sets: Mapping[str, Collection[IPAddress]], families: Iterable[int]
) -> dict[SetFamily, RunCount]:
    """(addresses, runs) of each set's single addresses per family; absent when none."""
    out: dict[SetFamily, RunCount] = {}
    for f in families:
        for name, addresses in sets.items():
            values = family_ints(addresses, f)
            if values:
                out[(name, f)] = (len(values), len(runs(values)))
    return out


def ranged(counts: Mapping[SetFamily, RunCount]) -> frozenset[SetFamily]:
    """The sets (per family) stored as runs: each saves at least what it costs, the largest
    savings first, within ``RANGE_BUDGET``."""
    worth = sorted(
        (runs_ - n, key, runs_)
        for key, (n, runs_) in counts.items()
        if n - runs_ >= runs_ + RANGE_SET_COST
    )
    chosen: list[SetFamily] = []
    spent = 0
    for _, key, runs_ in worth:
        cost = runs_ + RANGE_SET_COST
        if spent + cost <= RANGE_BUDGET:
            chosen.append(key)
            spent += cost
    return frozenset(chosen)
