"""FlowStore: what is appended is stored and survives a restart or a crash, retention drops
whole old days, rollups agree with the raw flows, queries run while ingest goes on, a torn
segment file is left out, and a store written before segments existed keeps its flows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tagwall.analytics import FlowFilter, FlowStore
from tagwall.analytics.collectors import SyslogMessage
from tagwall.errors import StoreError

from .flows_support import DAY_MS, T0, batch, estate, run_until_crash

HOUR_MS = 3_600_000
TAGS = {
    "web-1": {"application": "shop", "tier": "web"},
    "db-1": {"application": "shop", "tier": "db"},
    "crm-1": {"application": "crm", "tier": "web"},
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    s = FlowStore(tmp_path / "flows.duckdb", maintenance_interval_s=None)
    yield s
    s.close()


def totals(store: FlowStore, **kw: bool) -> tuple[int, int]:
    graph = store.graph(["workload"], **kw)
    return sum(e.flows for e in graph.edges), sum(e.bytes for e in graph.edges)


def test_counts_and_bytes_stored_equal_what_was_appended(store: FlowStore) -> None:
    endpoints = store.endpoints(estate(TAGS))
    rows = [
        {"t": T0 + i * HOUR_MS, "src": "10.0.0.1", "dst": "10.0.0.2", "bytes": i, "rbytes": 1}
        for i in range(30)  # 30 hours: two day tables
    ]
    store.append(batch(rows[:10], dropped=3), endpoints)
    store.append(batch(rows[10:]), endpoints)
    store.flush()
    stats = store.statistics()
    assert (stats.stored_rows, stats.batches, stats.pending_rows, stats.dropped_rows) == (
        30,
        2,
        0,
        3,
    )
    assert totals(store, use_rollups=False) == (30, sum(range(30)) + 30)
    assert len(store.flows(limit=100)) == 30


def test_close_loses_nothing_and_a_reopened_store_sees_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    config = estate(TAGS)
    first = FlowStore(path, maintenance_interval_s=None, flush_interval_s=60)
    endpoints = first.endpoints(config)
    for i in range(5):
        first.append(batch([{"t": T0 + i, "src": "10.0.0.1", "dst": "10.0.0.3"}]), endpoints)
    first.close()  # no flush: close commits what was accepted
    first.close()  # idempotent
    with pytest.raises(StoreError):
        first.flows()
    again = FlowStore(path, maintenance_interval_s=None)
    try:
        assert [f.start_ms for f in again.flows()] == [T0 + i for i in (4, 3, 2, 1, 0)]
        reopened = again.endpoints(config)
        assert len(reopened) == 3  # the same endpoints, not new ones
        again.append(batch([{"t": T0 + 9, "src": "10.0.0.1", "dst": "10.0.0.3"}]), reopened)
        again.flush()
        assert totals(again)[0] == 6
    finally:
        again.close()


def test_a_tag_change_mid_stream_keeps_old_flows_under_old_tags(store: FlowStore) -> None:
    endpoints = store.endpoints(estate(TAGS))
    store.append(batch([{"t": T0, "src": "10.0.0.1", "dst": "10.0.0.2"}]), endpoints)
    retagged = {**TAGS, "web-1": {"application": "shop", "tier": "edge"}}
    assert store.endpoints(estate(retagged)) is endpoints
    store.append(batch([{"t": T0 + 1, "src": "10.0.0.1", "dst": "10.0.0.2"}]), endpoints)
    store.flush()
    edges = {(e.src, e.dst): e.flows for e in store.graph(["tier"]).edges}
    assert edges == {(("web",), ("db",)): 1, (("edge",), ("db",)): 1}
    newest, oldest = store.flows()
    assert (newest.src.tags["tier"], oldest.src.tags["tier"]) == (["edge"], ["web"])


def test_retention_drops_old_days_and_keeps_new_ones(tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "f.duckdb", retention_days=2, maintenance_interval_s=None)
    try:
        endpoints = store.endpoints(estate(TAGS))
        days = [
            {"t": T0 + d * DAY_MS + HOUR_MS, "src": "10.0.0.1", "dst": "10.0.0.2"} for d in range(4)
        ]
        store.append(batch(days), endpoints)
        old, new = T0 + HOUR_MS, T0 + 3 * DAY_MS + HOUR_MS
        store.append_messages(
            [
                SyslogMessage(t, "192.0.2.1", 16, 6, None, "fw", "kernel", "hello")
                for t in (old, new)
            ]
        )
        dropped = store.enforce_retention(T0 + 4 * DAY_MS + HOUR_MS)
        assert dropped == ("flows_d20231114", "flows_d20231115")
        assert [f.start_ms for f in store.flows()] == [T0 + d * DAY_MS + HOUR_MS for d in (3, 2)]
        assert totals(store, use_rollups=False)[0] == 2
        assert totals(store, use_rollups=True)[0] == 4  # rollups outlive the raw flows
        assert store.statistics().messages == 2
    finally:
        store.close()
    with duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True) as db:
        assert db.execute("SELECT received_ms FROM messages").fetchall() == [(new,)]


@pytest.mark.parametrize("compaction", [True, False], ids=["rolled-up-meanwhile", "not-yet"])
def test_rollups_agree_with_raw_aggregates_before_and_after_merging(
    tmp_path: Path, compaction: bool
) -> None:
    """Whether or not the background rolled the rows up before the maintenance run."""
    store = FlowStore(
        tmp_path / "f.duckdb",
        maintenance_interval_s=None,
        clock=lambda: T0 / 1000,
        flush_rows=7,
        compaction=compaction,
    )
    try:
        endpoints = store.endpoints(estate(TAGS))
        addresses = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "198.51.100.7"]
        rows = [
            {
                "t": T0 + i * 9_377_000,  # ~2.6 hours apart over ~4 days
                "src": addresses[i % 4],
                "dst": addresses[(i + 1) % 3],
                "bytes": i * 10,
                "dport": [443, 53][i % 2],
                "dverdict": [1, 2][i % 3 == 0],
                "audit": [0, 4][i % 5 == 0],
            }
            for i in range(40)
        ]
        for i in range(0, 40, 5):  # many small flushes: many partial rollup rows
            store.append(batch(rows[i : i + 5]), endpoints)
        ranges = [
            FlowFilter(since_ms=T0 + 30 * 60_000, until_ms=T0 + 3 * DAY_MS + 15 * 60_000),
            FlowFilter(port=443),
            FlowFilter.of(tags=["tier=web"], since_ms=T0 + HOUR_MS),
        ]

        def both(f: FlowFilter) -> tuple[object, object]:
            rolled = store.graph(["application", "tier"], f)
            raw = store.graph(["application", "tier"], f, use_rollups=False)
            assert rolled.rollup and not raw.rollup
            talkers = [store.top_talkers("tier", f, use_rollups=u) for u in (True, False)]
            assert talkers[0] == talkers[1]
            return rolled.edges, raw.edges

        store.flush()
        for f in ranges:
            rolled, raw = both(f)
            assert rolled == raw
        store.enforce_retention(T0 + 5 * DAY_MS)  # merges the finished days
        for f in ranges:
            rolled, raw = both(f)
            assert rolled == raw
    finally:
        store.close()
    with duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True) as db:
        keys = db.execute(
            "SELECT count(*), count(DISTINCT (bucket_ms, src_ep, dst_ep, proto, dst_port)) "
            "FROM flows_rollup"
        ).fetchone()
    assert keys is not None and keys[0] == keys[1]  # one row per key once merged


def test_appends_and_queries_from_another_thread_both_progress(tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "f.duckdb", maintenance_interval_s=None, flush_rows=200)
    endpoints = store.endpoints(estate(TAGS))
    seen: list[int] = []
    done = threading.Event()

    def ingest() -> None:
        for i in range(40):
            rows = [
                {"t": T0 + i * 1000 + j, "src": "10.0.0.1", "dst": "10.0.0.2"} for j in range(200)
            ]
            store.append(batch(rows), endpoints)
        store.flush()
        done.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        while not done.is_set():
            seen.append(totals(store, use_rollups=False)[0])
        writer.join()
        seen.append(totals(store, use_rollups=False)[0])
    finally:
        store.close()
    assert seen == sorted(seen)  # committed state only grows
    assert seen[-1] == 8000
    assert len(seen) > 1 and any(0 < n < 8000 for n in seen), seen


def test_append_nowait_refuses_when_full_and_counts_the_drop(tmp_path: Path) -> None:
    store = FlowStore(
        tmp_path / "f.duckdb",
        maintenance_interval_s=None,
        max_pending_rows=3,
        flush_interval_s=60,
        flush_rows=1000,
    )
    try:
        endpoints = store.endpoints(estate(TAGS))
        rows = [{"t": T0 + i, "src": "10.0.0.1", "dst": "10.0.0.2"} for i in range(2)]
        assert store.append_nowait(batch(rows), endpoints)
        assert not store.append_nowait(batch(rows), endpoints)
        store.flush()
        assert store.append_nowait(batch(rows), endpoints)
        store.flush()
        stats = store.statistics()
        assert (stats.stored_rows, stats.dropped_rows) == (4, 2)
    finally:
        store.close()


def test_append_takes_only_the_stores_own_endpoints(store: FlowStore, tmp_path: Path) -> None:
    other = FlowStore(tmp_path / "other.duckdb", maintenance_interval_s=None)
    try:
        foreign = other.endpoints(estate(TAGS))
        store.endpoints(estate(TAGS))
        with pytest.raises(ValueError, match="endpoints"):
            store.append(batch([{"t": T0, "src": "10.0.0.1", "dst": "10.0.0.2"}]), foreign)
    finally:
        other.close()


def test_flushed_rows_survive_a_crash_and_a_flush_cut_short_leaves_no_trace(
    tmp_path: Path,
) -> None:
    """A process killed after ``flush`` returned keeps those rows.  One killed in its next
    flush, with the segment file written but not committed, never acknowledged those rows:
    the next open deletes the orphaned file and serves the rest, rollup included."""
    path = tmp_path / "flows.duckdb"
    run_until_crash(
        f"""
        store = FlowStore(Path({str(path)!r}), maintenance_interval_s=None, compaction=False)
        endpoints = store.endpoints(estate({TAGS!r}))
        store.append(batch([{{"t": T0, "src": "10.0.0.1", "dst": "10.0.0.2"}}]), endpoints)
        store.flush()
        Writer._commit = lambda self, w: os._exit(17)
        store.append(batch([{{"t": T0 + 1, "src": "10.0.0.1", "dst": "10.0.0.2"}}]), endpoints)
        store.flush()
        """,
        crash_at_commit=False,
    )
    assert len(list(Path(f"{path}.segments").iterdir())) == 2  # the second one orphaned
    store = FlowStore(path, maintenance_interval_s=None)
    try:
        assert [f.start_ms for f in store.flows()] == [T0]
        assert totals(store) == totals(store, use_rollups=False) == (1, 100)
        assert len(list(Path(f"{path}.segments").iterdir())) == 1
        endpoints = store.endpoints(estate(TAGS))
        store.append(batch([{"t": T0 + 2, "src": "10.0.0.1", "dst": "10.0.0.2"}]), endpoints)
        store.flush()
        assert [f.start_ms for f in store.flows()] == [T0 + 2, T0]
    finally:
        store.close()


def test_a_torn_segment_is_left_out_and_the_rest_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A registered file that does not read back whole (the disk lost part of it) is named
    in the log and left out; the store opens and serves the other files."""
    path = tmp_path / "flows.duckdb"
    store = FlowStore(path, maintenance_interval_s=None, compaction=False)
    endpoints = store.endpoints(estate(TAGS))
    for day in range(2):
        store.append(
            batch([{"t": T0 + day * DAY_MS, "src": "10.0.0.1", "dst": "10.0.0.2"}]), endpoints
        )
        store.flush()
    store.close()
    first, _ = sorted(Path(f"{path}.segments").iterdir())
    first.write_bytes(first.read_bytes()[:100])

    again = FlowStore(path, maintenance_interval_s=None)
    try:
        assert [f.start_ms for f in again.flows()] == [T0 + DAY_MS]
        assert again.statistics().segments == 1
    finally:
        again.close()
    assert first.name in caplog.text and "torn" in caplog.text


def old_layout(path: Path) -> None:
    """A flow store as the version before segments wrote it: one table per day
    (``flows_dYYYYMMDD``, the rows' 26 columns), the view over them, and its rollup."""
    columns = ", ".join(f"{name} {kind}" for name, kind in _OLD_COLUMNS)
    with duckdb.connect(str(path)) as db:
        db.execute(f"CREATE TABLE flows_template ({columns})")
        db.execute(f"CREATE TABLE flows_d20231114 ({columns})")
        db.execute(
            "CREATE TABLE endpoints (id INTEGER, workload VARCHAR, project VARCHAR, "
            "tags MAP(VARCHAR, VARCHAR[]))"
        )
        db.execute(
            "INSERT INTO endpoints VALUES (1, 'web-1', 'shop', MAP {'application': ['shop'], "
            "'project': ['shop'], 'tier': ['web']}), (2, 'db-1', 'shop', MAP {'application': "
            "['shop'], 'project': ['shop'], 'tier': ['db']})"
        )
        db.execute(
            "CREATE TABLE rules (id INTEGER, tier VARCHAR, policy_set VARCHAR, policy VARCHAR, "
            "rule VARCHAR)"
        )
        db.execute(
            f"INSERT INTO flows_d20231114 VALUES ({T0 + HOUR_MS}, {T0 + HOUR_MS + 10}, 0, "
            "281470681743361, 0, 281470681743362, 6, 40000, 443, 1, 700, 1, 0, 1, 1, 0, 0, 0, 0, "
            "0, 0, 1, 2, 'agent', 'host-1', NULL)"
        )
        db.execute(
            "CREATE TABLE flows_rollup (bucket_ms BIGINT, src_ep INTEGER, dst_ep INTEGER, "
            "proto UTINYINT, dst_port USMALLINT, flows UBIGINT, packets UBIGINT, bytes UBIGINT, "
            "rpackets UBIGINT, rbytes UBIGINT, allowed UBIGINT, denied UBIGINT, "
            "would_deny UBIGINT, would_allow UBIGINT)"
        )
        db.execute(
            f"INSERT INTO flows_rollup VALUES ({T0}, 1, 2, 6, 443, 1, 1, 700, 1, 0, 1, 0, 0, 0)"
        )
        db.execute(
            "CREATE TABLE messages (received_ms BIGINT, exporter VARCHAR, facility UTINYINT, "
            "severity UTINYINT, timestamp_ms BIGINT, hostname VARCHAR, app VARCHAR, text VARCHAR)"
        )
        db.execute(
            "CREATE TABLE agent_progress (host VARCHAR, spool VARCHAR, stored_through BIGINT, "
            "PRIMARY KEY (host, spool))"
        )
        db.execute(
            "CREATE VIEW flows AS SELECT * FROM flows_template UNION ALL "
            "SELECT * FROM flows_d20231114"
        )


_OLD_COLUMNS = [
    *[(c, "BIGINT") for c in ("start_ms", "end_ms")],
    *[(c, "UBIGINT") for c in ("src_hi", "src_lo", "dst_hi", "dst_lo")],
    ("proto", "UTINYINT"),
    *[(c, "USMALLINT") for c in ("src_port", "dst_port")],
    *[(c, "UBIGINT") for c in ("packets", "bytes", "rpackets", "rbytes")],
    *[(c, "UTINYINT") for c in ("src_verdict", "dst_verdict")],
    *[(c, "INTEGER") for c in ("src_rule", "dst_rule")],
    *[(c, "UTINYINT") for c in ("src_audit", "dst_audit")],
    *[(c, "INTEGER") for c in ("src_audit_rule", "dst_audit_rule", "src_ep", "dst_ep")],
    *[(c, "VARCHAR") for c in ("source", "exporter", "via")],
]


def test_a_store_written_before_segments_serves_its_old_flows_beside_new_ones(
    tmp_path: Path,
) -> None:
    """Upgrade: the old day table is read as it is, new rows go to segments, both answer
    every query together, and retention drops the old day like any other."""
    path = tmp_path / "flows.duckdb"
    old_layout(path)
    store = FlowStore(path, retention_days=1, maintenance_interval_s=None)
    try:
        (old,) = store.flows()
        assert (old.start_ms, old.bytes, old.src.workload, old.dst.tags["tier"]) == (
            T0 + HOUR_MS,
            700,
            "web-1",
            ["db"],
        )
        endpoints = store.endpoints(estate(TAGS))
        assert len(endpoints) == 3  # web-1 and db-1 kept their ids, crm-1 is new
        new = {"t": T0 + DAY_MS + HOUR_MS, "src": "10.0.0.1", "dst": "10.0.0.2", "bytes": 50}
        store.append(batch([new]), endpoints)
        store.flush()
        assert [f.start_ms for f in store.flows()] == [T0 + DAY_MS + HOUR_MS, T0 + HOUR_MS]
        assert totals(store) == totals(store, use_rollups=False) == (2, 750)
        assert store.enforce_retention(T0 + 2 * DAY_MS + HOUR_MS) == ("flows_d20231114",)
        assert [f.start_ms for f in store.flows()] == [T0 + DAY_MS + HOUR_MS]
    finally:
        store.close()
    with duckdb.connect(str(path), read_only=True) as db:
        tables = {
            name for (name,) in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
    assert "flows_d20231114" not in tables
