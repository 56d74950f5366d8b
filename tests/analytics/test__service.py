"""Analytics.ingest_reports: agents' reports end up as flow rows in the DuckDB store, with
each end's verdict and rule, the workloads and tags of both ends and the audit verdicts; a
batch sent again is stored once, also by a restarted controller; a half waiting for its
partner is stored by ``close``.

The estate and report builders are those of ``test__reports.py`` (two hosts: web-1 and
app-1 on host-a, db-1 on host-b; an audit policy would deny web → db on tcp/5432).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagwall.analytics import Analytics, Decision, FlowFilter, FlowStore
from tagwall.control import FlowReport
from tagwall.errors import StoreError

from .flows_support import run_until_crash
from .test__reports import (
    APP,
    DB,
    ISOLATED,
    NOW_MS,
    PAYMENTS,
    WEB,
    config,
    destination_half,
    report,
    source_half,
)

THREE_TIER = Decision("application", "shop/apps", "shop/three-tier", "web-to-db")
NO_DB = Decision("admin", "guard", "staged", "no-db")
ISOLATION = Decision("application", None, "application-default-deny", None)


@pytest.fixture
def analytics(tmp_path: Path) -> Iterator[Analytics]:
    service = Analytics(tmp_path / "flows.duckdb")
    service.start(config(), revision=1)
    yield service
    service.close()


def to_payments(i: int) -> FlowReport:
    """The i-th of distinct flows web-1 → payments (no partner to wait for)."""
    return report(WEB, PAYMENTS, dport=443, at_ms=(NOW_MS + i * 1000, NOW_MS + i * 1000 + 10))


def test_reports_become_flow_rows_with_both_ends_decisions_and_workloads(
    analytics: Analytics,
) -> None:
    """A cross-host flow (its two halves) is one row of host-a's counters with both ends'
    rules, the would-deny of the audit rule, and both workloads with their effective tags;
    a same-host denial is a row of its own."""
    assert analytics.ingest_reports("host-b", 1, [destination_half()]) == 1
    denied = report(WEB, APP, dport=8080, egress=ISOLATED, counters=(3, 180, 0, 0))
    assert analytics.ingest_reports("host-a", 1, [source_half(), denied]) == 2

    by_port = {f.dst.port: f for f in analytics.store.flows()}
    assert sorted(by_port) == [5432, 8080]
    paired = by_port[5432]
    assert (paired.source, paired.exporter, paired.proto) == ("agent", "host-a", 6)
    assert (paired.packets, paired.bytes, paired.rpackets, paired.rbytes) == (12, 2100, 10, 5800)
    assert (paired.start_ms, paired.end_ms) == (NOW_MS - 5000, NOW_MS - 2000)
    src, dst = paired.src, paired.dst
    assert (src.address, src.port, src.workload, src.project) == (WEB, 40000, "web-1", "shop")
    assert (dst.address, dst.workload, dst.project) == (DB, "db-1", "shop")
    assert src.tags == {"application": ["shop"], "project": ["shop"], "tier": ["web"]}
    assert dst.tags["tier"] == ["db"]
    assert (src.verdict, src.decided_by, src.audit, src.audit_by) == (
        "allow",
        THREE_TIER,
        "would-deny",
        NO_DB,
    )
    assert (dst.verdict, dst.decided_by, dst.audit, dst.audit_by) == (
        "allow",
        THREE_TIER,
        "would-deny",
        NO_DB,
    )

    refused = by_port[8080]
    assert (refused.src.verdict, refused.src.decided_by, refused.src.audit) == (
        "deny",
        ISOLATION,
        "none",
    )
    assert (refused.dst.workload, refused.dst.verdict, refused.dst.decided_by) == (
        "app-1",
        "none",
        None,
    )

    agents = analytics.statistics().agents
    assert (agents.stored_through, agents.waiting) == ({"host-a": 2, "host-b": 1}, 0)
    would = analytics.store.flows(FlowFilter.of(verdict="would-deny"))
    assert [f.dst.port for f in would] == [5432]


def test_a_batch_sent_again_is_stored_once(analytics: Analytics) -> None:
    """The agent lost the answer and sends the same batch again: same answer, no new rows."""
    batch = [to_payments(i) for i in range(3)]
    assert analytics.ingest_reports("host-a", 1, batch) == 3
    assert analytics.ingest_reports("host-a", 1, batch) == 3
    assert len(analytics.store.flows()) == 3


def test_a_batch_resent_while_its_commit_failed_is_stored_once(
    analytics: Analytics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's commit fails once (a full disk): the agent gets an error and keeps its
    spool.  Its resend arrives while the failed rows wait to be retried: it is answered once
    they are committed, and they are stored once."""
    batch = [to_payments(i) for i in range(3)]
    commit = analytics.store._commit
    failures = [OSError("No space left on device")]

    def commit_failing_once(connection: Any) -> None:
        if failures:
            raise failures.pop()
        commit(connection)

    monkeypatch.setattr(analytics.store, "_commit", commit_failing_once)
    with pytest.raises(StoreError, match="No space left"):
        analytics.ingest_reports("host-a", 1, batch)
    assert analytics.ingest_reports("host-a", 1, batch) == 3
    assert len(analytics.store.flows()) == 3
    assert analytics.store.agent_progress() == {("host-a", ""): 3}


def test_an_overlapping_batch_stores_only_its_new_reports(analytics: Analytics) -> None:
    reports = [to_payments(i) for i in range(5)]
    assert analytics.ingest_reports("host-a", 1, reports[:3]) == 3
    assert analytics.ingest_reports("host-a", 2, reports[1:5]) == 5
    assert analytics.ingest_reports("host-a", 1, reports[:1]) == 5
    starts = sorted(f.start_ms for f in analytics.store.flows())
    assert starts == [NOW_MS + i * 1000 for i in range(5)]
    assert analytics.statistics().agents.stored_through == {"host-a": 5}


def test_sequence_numbers_are_per_host(analytics: Analytics) -> None:
    analytics.ingest_reports("host-a", 1, [to_payments(0)])
    inbound = report(PAYMENTS, DB, egress=None, ingress=ISOLATED)
    assert analytics.ingest_reports("host-b", 1, [inbound]) == 1
    assert sorted(f.exporter for f in analytics.store.flows()) == ["host-a", "host-b"]


def test_a_destination_duplicate_of_a_paired_flow_is_counted_not_stored(
    analytics: Analytics,
) -> None:
    analytics.ingest_reports("host-a", 1, [source_half()])
    analytics.ingest_reports("host-b", 1, [destination_half()])
    later = (NOW_MS + 55_000, NOW_MS + 60_000)
    analytics.ingest_reports("host-b", 2, [destination_half(at_ms=later)])
    assert len(analytics.store.flows()) == 1
    assert analytics.statistics().agents.duplicates == 1


def test_close_stores_the_halves_still_waiting_for_their_partner(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    service = Analytics(path)
    service.start(config())
    assert service.ingest_reports("host-a", 1, [source_half()]) == 1  # stored: it waits
    assert service.statistics().agents.waiting == 1
    assert service.store.flows() == []
    service.close()

    reopened = FlowStore(path, maintenance_interval_s=None)
    try:
        (alone,) = reopened.flows()
        assert (alone.exporter, alone.packets) == ("host-a", 12)
        assert (alone.src.verdict, alone.dst.verdict, alone.dst.workload) == (
            "allow",
            "none",
            "db-1",
        )
    finally:
        reopened.close()


def test_a_half_whose_partner_does_not_come_is_stored_after_the_window(tmp_path: Path) -> None:
    service = Analytics(tmp_path / "flows.duckdb", pairing_window_s=0.2)
    service.start(config())
    try:
        service.ingest_reports("host-a", 1, [source_half()])
        deadline = time.monotonic() + 10
        while not service.store.flows() and time.monotonic() < deadline:
            time.sleep(0.1)
        (alone,) = service.store.flows()
        assert (alone.exporter, alone.dst.verdict) == ("host-a", "none")
        assert service.statistics().agents.waiting == 0
    finally:
        service.close()


def test_a_batch_sent_again_to_a_restarted_controller_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    batch = [to_payments(i) for i in range(3)]
    before = Analytics(path)
    before.start(config())
    before.ingest_reports("host-a", 1, batch)  # committed; the answer is lost with the restart
    before.close()

    after = Analytics(path)
    after.start(config())
    try:
        assert after.ingest_reports("host-a", 1, batch) == 3
        assert len(after.store.flows()) == 3
    finally:
        after.close()


def test_a_new_spool_numbers_from_one_again(analytics: Analytics) -> None:
    """An agent whose spool was made afresh (its directory lost) numbers from 1 under a new
    identity: its reports are stored, not taken for the old spool's resends."""
    assert analytics.ingest_reports("host-a", 1, [to_payments(0), to_payments(1)], spool="a") == 2
    assert analytics.ingest_reports("host-a", 1, [to_payments(2)], spool="b") == 1
    assert len(analytics.store.flows()) == 3
    assert analytics.ingest_reports("host-a", 1, [to_payments(2)], spool="b") == 1
    assert len(analytics.store.flows()) == 3
    assert analytics.statistics().agents.stored_through == {"host-a": 1}


@pytest.mark.parametrize("crash_at_commit", [True, False], ids=["at-commit", "after-commit"])
def test_a_batch_resent_after_a_crash_is_stored_exactly_once(
    tmp_path: Path, crash_at_commit: bool
) -> None:
    """The controller dies while storing an agent's batch: at the commit of its rows (the
    segment file written, nothing committed) or just after it (the answer lost).  The rows and
    the agent's progress commit together, so the batch the agent sends again to the restarted
    controller ends up stored exactly once either way."""
    path = tmp_path / "flows.duckdb"
    run_until_crash(
        f"""
        from analytics.test__reports import config
        from analytics.test__service import to_payments
        service = Analytics(Path({str(path)!r}))
        service.start(config())
        service.ingest_reports("host-a", 1, [to_payments(i) for i in range(3)])
        """,
        crash_at_commit=crash_at_commit,
    )
    after = Analytics(path)
    after.start(config())
    try:
        assert after.ingest_reports("host-a", 1, [to_payments(i) for i in range(3)]) == 3
        starts = sorted(f.start_ms for f in after.store.flows())
        assert starts == [NOW_MS + i * 1000 for i in range(3)]
        assert after.statistics().agents.stored_through == {"host-a": 3}
    finally:
        after.close()
