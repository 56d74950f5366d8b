"""Background work on segments: which files are rolled up next (``pick_unrolled``) and which
merge (``pick``); rows answer the same before and after their rollup, a day dropped before
its rollup keeps its rollup, a store fed by many small flushes ends with few files holding
the same flows, and a flush's file too large to merge is rewritten compressed."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from tagwall.analytics import FlowStore, _compact
from tagwall.analytics._compact import FANIN, ROLLUP_ROWS, SMALL_ROWS, pick, pick_unrolled
from tagwall.analytics._segments import Segment

from .flows_support import DAY_MS, T0, batch, estate, wait_for

TODAY = T0 // DAY_MS


def seg(
    sequence: int, *, day: int = TODAY, level: int = 0, rows: int = 10, rolled_up: bool = True
) -> Segment:
    return Segment(f"x-{sequence:012d}.parquet", day, rows, level, 0, 0, rolled_up)


def test_the_oldest_files_not_rolled_up_go_first_up_to_a_bound() -> None:
    fresh = [seg(3, rolled_up=False, rows=ROLLUP_ROWS // 2), seg(1, rolled_up=False, rows=10)]
    assert pick_unrolled([seg(0), *fresh, seg(4, rolled_up=False, rows=ROLLUP_ROWS)]) == [
        fresh[1],
        fresh[0],
    ]
    assert pick_unrolled([seg(5, rows=2 * ROLLUP_ROWS, rolled_up=False)]) != []  # one at least
    assert pick_unrolled([seg(0)]) == []


def test_files_not_rolled_up_are_not_merged() -> None:
    assert pick([seg(i, rolled_up=False) for i in range(FANIN)], TODAY) == []


def test_today_merges_fanin_files_of_one_level_oldest_first() -> None:
    level0 = [seg(i) for i in range(FANIN + 2)]
    assert pick(level0[: FANIN - 1], TODAY) == []
    assert pick(level0[::-1], TODAY) == level0[:FANIN]
    mixed = [seg(i, level=i % 2) for i in range(FANIN)]  # 4 of each level: not yet
    assert pick(mixed, TODAY) == []


def test_a_finished_day_merges_its_small_files_whatever_their_level() -> None:
    yesterday = [seg(1, day=TODAY - 1, level=2), seg(2, day=TODAY - 1, level=0)]
    assert pick(yesterday, TODAY) == yesterday
    assert pick(yesterday[:1], TODAY) == []


def test_large_files_merge_with_none_and_a_flushs_is_rewritten_alone_once_nothing_is_due() -> None:
    large = [seg(i, rows=SMALL_ROWS, level=1) for i in range(FANIN)]
    assert pick(large, TODAY) == []
    assert (
        pick([seg(1, day=TODAY - 1, rows=SMALL_ROWS, level=1), seg(2, day=TODAY - 1)], TODAY) == []
    )
    flushed = [seg(3, rows=SMALL_ROWS), seg(2, rows=SMALL_ROWS)]
    assert pick(flushed, TODAY) == flushed[1:]  # the oldest
    assert pick([seg(0, rows=SMALL_ROWS, rolled_up=False)], TODAY) == []
    small = [seg(i) for i in range(10, 10 + FANIN)]
    assert pick([*flushed, *small], TODAY) == small  # merges first


def test_many_small_flushes_end_in_one_file_per_finished_day_with_every_flow(
    tmp_path: Path,
) -> None:
    tags = {"web-1": {"tier": "web"}, "db-1": {"tier": "db"}}
    path = tmp_path / "flows.duckdb"
    store = FlowStore(path, maintenance_interval_s=None, clock=lambda: (T0 + 3 * DAY_MS) / 1000)
    try:
        endpoints = store.endpoints(estate(tags))
        for i in range(3 * FANIN + 1):
            row = {"t": T0 + i * 60_000, "src": "10.0.0.1", "dst": "10.0.0.2", "bytes": i}
            store.append(batch([row]), endpoints)
            store.flush()  # one file each
        wait_for(lambda: store.statistics().segments == 1)
        assert store.statistics().compactions >= 4
        assert store.statistics().unrolled_rows == 0
        assert len(store.flows(limit=1000)) == 3 * FANIN + 1
        raw = store.graph(["tier"], use_rollups=False).edges
        assert [(e.flows, e.bytes) for e in raw] == [(3 * FANIN + 1, sum(range(3 * FANIN + 1)))]
        assert store.graph(["tier"]).edges == raw  # the merged file is counted once
    finally:
        store.close()
    assert len(list(Path(f"{path}.segments").iterdir())) == 1  # the merged inputs are gone


TAGS = {"web-1": {"tier": "web"}, "db-1": {"tier": "db"}}


def test_queries_answer_the_same_before_and_after_the_rollup(tmp_path: Path) -> None:
    """Stored rows count at once; the rollup, built in the background, changes no answer."""
    store = FlowStore(tmp_path / "flows.duckdb", maintenance_interval_s=None, compaction=False)
    try:
        endpoints = store.endpoints(estate(TAGS))
        rows = [
            {"t": T0 + i * 3_600_000, "src": "10.0.0.1", "dst": "10.0.0.2", "bytes": i}
            for i in range(60)  # 2.5 days
        ]
        store.append(batch(rows), endpoints)
        store.flush()
        assert store.statistics().unrolled_rows == 60
        whole_days = store.graph(["tier"])
        assert whole_days.rollup
        assert store.compact() >= 1
        assert store.statistics().unrolled_rows == 0
        assert store.graph(["tier"]) == whole_days
        assert store.graph(["tier"], use_rollups=False).edges == whole_days.edges
        assert [(e.flows, e.bytes) for e in whole_days.edges] == [(60, sum(range(60)))]
    finally:
        store.close()


def test_a_day_dropped_before_its_rollup_keeps_its_rollup(tmp_path: Path) -> None:
    store = FlowStore(
        tmp_path / "flows.duckdb",
        retention_days=1,
        maintenance_interval_s=None,
        compaction=False,
    )
    try:
        endpoints = store.endpoints(estate(TAGS))
        store.append(batch([{"t": T0, "src": "10.0.0.1", "dst": "10.0.0.2"}]), endpoints)
        store.flush()
        assert store.enforce_retention(T0 + 3 * DAY_MS) == ("flows_d20231114",)
        assert store.flows() == []
        assert [e.flows for e in store.graph(["tier"]).edges] == [1]
    finally:
        store.close()


def test_a_large_flush_is_rewritten_compressed_with_every_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush's file too large to merge ends Snappy-compressed, smaller, answering the same
    (``SMALL_ROWS`` scaled down to 100 rows)."""
    monkeypatch.setattr(_compact, "SMALL_ROWS", 100)
    path = tmp_path / "flows.duckdb"
    segments = Path(f"{path}.segments")
    store = FlowStore(path, maintenance_interval_s=None, compaction=False)
    try:
        endpoints = store.endpoints(estate(TAGS))
        rows = [
            {"t": T0 + i, "src": "10.0.0.1", "dst": "10.0.0.2", "bytes": i % 7} for i in range(500)
        ]
        store.append(batch(rows), endpoints)
        store.flush()
        (flushed,) = segments.iterdir()
        assert pq.read_metadata(flushed).row_group(0).column(0).compression == "UNCOMPRESSED"
        flushed_bytes, newest = flushed.stat().st_size, store.flows(limit=1000)
        assert store.compact() == 2  # the rollup, then the rewrite
        (rewritten,) = segments.iterdir()
        assert rewritten != flushed
        assert pq.read_metadata(rewritten).row_group(0).column(0).compression == "SNAPPY"
        assert rewritten.stat().st_size < flushed_bytes
        assert store.flows(limit=1000) == newest
        assert store.compact() == 0  # level 1 now: never again
    finally:
        store.close()
