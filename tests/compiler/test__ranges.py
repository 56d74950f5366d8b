"""Address runs (compiler ``_ranges.py``): what a set's addresses are stored as, and the
runs an update removes and adds."""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import given
from hypothesis import strategies as st

from tagwall.compiler import AddressSet, Program
from tagwall.compiler._ranges import (
    RANGE_BUDGET,
    RANGE_SET_COST,
    RUN_BLOCK,
    changed_runs,
    range_counts,
    ranged,
    runs,
)

# Addresses around two block boundaries, so runs meet the cut at RUN_BLOCK.
VALUES = st.sets(st.integers(min_value=RUN_BLOCK - 40, max_value=2 * RUN_BLOCK + 40))


@given(VALUES)
def test_runs_hold_exactly_the_values_each_maximal_inside_its_block(values: set[int]) -> None:
    found = runs(values)
    covered = [v for low, high in found for v in range(low, high + 1)]
    assert covered == sorted(values)  # every value once, in order
    assert all(low // RUN_BLOCK == high // RUN_BLOCK for low, high in found)
    for (_, high), (low, _) in itertools.pairwise(found):
        assert low > high + 1 or low % RUN_BLOCK == 0  # a gap, or the block's edge


@given(VALUES, VALUES, st.sets(st.integers(min_value=0, max_value=3 * RUN_BLOCK)))
def test_changed_runs_are_all_that_differs(was: set[int], now: set[int], extra: set[int]) -> None:
    """With every changed address among the candidates (and unchanged ones too), the runs
    outside the answer are common to both, so removing ``before - after`` and adding
    ``after - before`` turns the old runs into the new."""
    before, after = changed_runs(was.__contains__, now.__contains__, (was ^ now) | extra)
    old, new = set(runs(was)), set(runs(now))
    assert before <= old and after <= new
    assert old - before == new - after
    assert (old - (before - after)) | (after - before) == new


def test_a_run_is_stored_only_where_it_saves_at_least_its_cost() -> None:
    counts = {
        ("scattered", 4): (50, 50),
        ("tiny", 4): (3, 1),  # saves 2, costs 1 + RANGE_SET_COST
        ("pool", 4): (6680, 334),
        ("edge", 4): (2 * 2 + RANGE_SET_COST - 1, 2),  # saves one less than its cost
    }
    assert ranged(counts) == {("pool", 4)}
    counts[("edge", 4)] = (2 * 2 + RANGE_SET_COST, 2)  # saves exactly its cost
    assert ranged(counts) == {("pool", 4), ("edge", 4)}


def test_the_budget_takes_the_largest_savings_first() -> None:
    big = RANGE_BUDGET - RANGE_SET_COST - 10  # leaves room for one small set only
    counts = {
        ("big", 4): (big * 10, big),
        ("small-a", 4): (100, 4),  # saves 96
        ("small-b", 4): (90, 4),  # saves 86: no room left
    }
    chosen = ranged(counts)
    assert chosen == {("big", 4), ("small-a", 4)}
    cost = sum(counts[k][1] + RANGE_SET_COST for k in chosen)
    assert cost <= RANGE_BUDGET


def test_range_counts_are_per_family() -> None:
    v4 = [ipaddress.ip_address(f"10.0.0.{i}") for i in range(1, 21)]
    v6 = [ipaddress.ip_address(f"2001:db8::{i:x}") for i in (1, 3, 5)]
    counts = range_counts({"s": [*v4, *v6], "empty": []}, (4, 6))
    assert counts == {("s", 4): (20, 1), ("s", 6): (3, 3)}


def test_program_entries_count_runs_where_they_are_stored() -> None:
    pool = frozenset(ipaddress.IPv4Address(f"10.0.0.{i}") for i in range(1, 101))
    scattered = frozenset(ipaddress.IPv4Address(f"10.1.{i}.1") for i in range(1, 11))
    cidr = (ipaddress.IPv4Network("192.0.2.0/24"),)
    program = Program(
        "h",
        sets={
            "pool": AddressSet(pool),
            "scattered": AddressSet(scattered),
            "mixed": AddressSet(pool, cidr),
        },
    )
    assert program.set_entries() == {"pool": 1, "scattered": 10, "mixed": 2}
    assert program.entries() == 13
