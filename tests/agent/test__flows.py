"""FlowAssembler: conntrack events and NFLOG records in, flow reports out.

Transcripts of what the kernel would say about one host (``web-1`` 10.0.1.2 talking to
``db-1`` 10.0.2.3), with a ``decide`` built from the ``CounterKey``s a rendered program reads
back.  Decision ids: egress 7 is the web's ``to-db`` allow, ingress 3 the database's
``from-web`` allow, 9 the admin tier's ``no-ssh`` deny (egress and ingress).
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tagwall.agent._conntrack import ConntrackEvent, EventKind, FiveTuple
from tagwall.agent._ctdecode import ConntrackBatch, decode_destroys
from tagwall.agent._flows import FlowAssembler, end_decision, report_payload
from tagwall.agent._nflog import NflogRecord
from tagwall.control import EndDecision, FlowReport
from tagwall.datapath import CounterKey
from tagwall.datapath._nft_decisions import DECISION_ISOLATED, DECISION_POSTURE
from tagwall.model import Action, Ref, Tier, TrafficDirection

from .support import message, messages

EGRESS, INGRESS = TrafficDirection.EGRESS, TrafficDirection.INGRESS
SHOP = Ref("apps", "shop")
TO_DB = CounterKey(EGRESS, Tier.APPLICATION, SHOP, Ref("web", "shop"), "to-db", Action.ALLOW)
FROM_WEB = CounterKey(INGRESS, Tier.APPLICATION, SHOP, Ref("db", "shop"), "from-web", Action.ALLOW)
NO_SSH_OUT = CounterKey(EGRESS, Tier.ADMIN, Ref("guard"), Ref("rails"), "no-ssh", Action.DENY)
NO_SSH_IN = CounterKey(INGRESS, Tier.ADMIN, Ref("guard"), Ref("rails"), "no-ssh", Action.DENY)
ISOLATED = CounterKey(
    INGRESS, Tier.APPLICATION, None, None, "application-default-deny", Action.DENY
)
POSTURE = CounterKey(EGRESS, None, None, None, "default-posture", Action.ALLOW)
KEYS = {
    (EGRESS, 7): TO_DB,
    (INGRESS, 3): FROM_WEB,
    (EGRESS, 9): NO_SSH_OUT,
    (INGRESS, 9): NO_SSH_IN,
    (INGRESS, DECISION_ISOLATED): ISOLATED,
    (EGRESS, DECISION_POSTURE): POSTURE,
}
ALLOWED_BY_BOTH = 0x0007_0003  # egress decision 7, ingress decision 3

S = 1_000_000_000  # ns per second
T0 = 1_764_150_000 * S  # ns since the epoch
T0_MS = T0 // 1_000_000
TCP = FiveTuple("10.0.1.2", "10.0.2.3", 6, 40000, 5432)
SSH = FiveTuple("10.0.1.2", "10.0.2.3", 6, 40001, 22)
DNS = FiveTuple("10.0.1.2", "10.0.2.3", 17, 50000, 53)


def decide(direction: TrafficDirection, decision: int) -> EndDecision | None:
    key = KEYS.get((direction, decision))
    return None if key is None else end_decision(key)


def ct(
    kind: EventKind,
    at_s: float,
    counters: tuple[int, int, int, int] | None = None,
    *,
    ct_id: int = 1,
    flow: FiveTuple = TCP,
    mark: int = ALLOWED_BY_BOTH,
    started_s: float | None = 0.0,
    tcp_state: int | None = None,
) -> ConntrackEvent:
    """A conntrack event ``at_s`` seconds after T0 with (packets, bytes, rpackets, rbytes)."""
    packets, bytes_, rpackets, rbytes = counters if counters else (None, None, None, None)
    return ConntrackEvent(
        kind,
        ct_id,
        flow,
        mark,
        packets,
        bytes_,
        rpackets,
        rbytes,
        start_ns=None if started_s is None else T0 + int(started_s * S),
        stop_ns=T0 + int(at_s * S) if kind is EventKind.DESTROY else None,
        observed_ns=T0 + int(at_s * S),
        tcp_state=tcp_state,
    )


def dropped(at_s: float, *, prefix: str = "tw:e:9", flow: FiveTuple = SSH) -> NflogRecord:
    """One 60-byte packet dropped ``at_s`` seconds after T0."""
    return NflogRecord(prefix, flow, 60, 0, None, 2, T0 + int(at_s * S), T0 + int(at_s * S))


def counters(report: FlowReport) -> tuple[int, int, int, int]:
    return report.packets, report.bytes, report.rpackets, report.rbytes


# -- allowed flows ----------------------------------------------------------------------------


def test_new_then_destroy_is_one_report_of_the_whole_flow() -> None:
    """NEW says nothing yet; DESTROY reports the flow once, with its final counters both
    ways, its kernel times in ms and the decision of each end read from the mark's halves."""
    flows = FlowAssembler(decide)
    assert flows.conntrack(ct(EventKind.NEW, 0)) == []
    assert flows.open_flows == 1
    assert flows.conntrack(ct(EventKind.DESTROY, 2.5, (12, 2100, 10, 5800))) == [
        FlowReport(
            start_ms=T0_MS,
            end_ms=T0_MS + 2500,
            src="10.0.1.2",
            dst="10.0.2.3",
            proto=6,
            sport=40000,
            dport=5432,
            packets=12,
            bytes=2100,
            rpackets=10,
            rbytes=5800,
            egress=EndDecision("allow", "application", "shop/apps", "shop/web", "to-db"),
            ingress=EndDecision("allow", "application", "shop/apps", "shop/db", "from-web"),
        )
    ]
    assert flows.open_flows == 0


def test_a_mark_half_left_zero_is_an_end_not_decided_here() -> None:
    """A flow leaving for another host carries only the egress half: ingress is None, and
    that is no unknown decision."""
    flows = FlowAssembler(decide)
    flows.conntrack(ct(EventKind.NEW, 0, mark=7 << 16))
    (report,) = flows.conntrack(ct(EventKind.DESTROY, 1, (1, 60, 1, 60), mark=7 << 16))
    assert (report.egress, report.ingress) == (end_decision(TO_DB), None)
    assert flows.unknown_decisions == 0


def test_a_long_flow_is_reported_at_each_active_timeout_and_the_reports_add_up() -> None:
    """Snapshots every 30 s, active timeout 60 s: a report at 60 s and 120 s with the
    counters since the previous one, the rest at DESTROY; together they are the flow's."""
    flows = FlowAssembler(decide, active_timeout_s=60)
    flows.conntrack(ct(EventKind.NEW, 0))
    transcript = [
        ct(EventKind.SNAPSHOT, 30, (10, 1000, 8, 4000)),
        ct(EventKind.SNAPSHOT, 60, (20, 2000, 16, 8000)),
        ct(EventKind.SNAPSHOT, 90, (30, 3000, 24, 12000)),
        ct(EventKind.SNAPSHOT, 120, (40, 4000, 32, 16000)),
        ct(EventKind.DESTROY, 130, (45, 4500, 36, 18000)),
    ]
    reports = [(event.observed_ns, flows.conntrack(event)) for event in transcript]
    emitted = [(at, r) for at, out in reports for r in out]
    assert [((at - T0) // S, r.start_ms - T0_MS, r.end_ms - T0_MS) for at, r in emitted] == [
        (60, 0, 60_000),
        (120, 60_000, 120_000),
        (130, 120_000, 130_000),
    ]
    assert [counters(r) for _, r in emitted] == [
        (20, 2000, 16, 8000),
        (20, 2000, 16, 8000),
        (5, 500, 4, 2000),
    ]
    totals = tuple(sum(c) for c in zip(*(counters(r) for _, r in emitted), strict=True))
    assert totals == (45, 4500, 36, 18000)


def test_a_closing_tcp_flow_is_reported_at_the_next_snapshot_not_two_minutes_later() -> None:
    """A snapshot in TIME_WAIT reports the flow at once; the DESTROY that comes when the
    entry is reaped has nothing left to report."""
    flows = FlowAssembler(decide, active_timeout_s=600)
    flows.conntrack(ct(EventKind.NEW, 0))
    (report,) = flows.conntrack(ct(EventKind.SNAPSHOT, 5, (8, 700, 6, 900), tcp_state=7))
    assert (counters(report), report.end_ms) == ((8, 700, 6, 900), T0_MS + 5000)
    assert flows.conntrack(ct(EventKind.SNAPSHOT, 35, (8, 700, 6, 900), tcp_state=7)) == []
    assert flows.conntrack(ct(EventKind.DESTROY, 125, (8, 700, 6, 900))) == []


def test_an_open_tcp_flow_is_not_reported_before_its_timeout() -> None:
    flows = FlowAssembler(decide, active_timeout_s=600)
    flows.conntrack(ct(EventKind.NEW, 0))
    assert flows.conntrack(ct(EventKind.SNAPSHOT, 30, (8, 700, 6, 900), tcp_state=3)) == []
    assert flows.conntrack(ct(EventKind.SNAPSHOT, 60, (9, 800, 7, 1000), tcp_state=3)) == []


def test_a_flow_idle_between_two_snapshots_is_reported_once() -> None:
    """A DNS exchange that went quiet: reported at the snapshot that finds its counters
    unchanged, then never again until they move."""
    flows = FlowAssembler(decide, active_timeout_s=600)
    flows.conntrack(ct(EventKind.NEW, 0, flow=DNS))
    assert flows.conntrack(ct(EventKind.SNAPSHOT, 30, (2, 140, 2, 300), flow=DNS)) == []
    (report,) = flows.conntrack(ct(EventKind.SNAPSHOT, 60, (2, 140, 2, 300), flow=DNS))
    assert (report.proto, report.sport, report.dport) == (17, 50000, 53)
    assert (counters(report), report.start_ms, report.end_ms) == (
        (2, 140, 2, 300),
        T0_MS,
        T0_MS + 60_000,
    )
    assert flows.conntrack(ct(EventKind.SNAPSHOT, 90, (2, 140, 2, 300), flow=DNS)) == []
    assert flows.conntrack(ct(EventKind.DESTROY, 180, (2, 140, 2, 300), flow=DNS)) == []


def test_a_flow_that_moved_again_after_its_report_is_reported_again_for_the_rest() -> None:
    flows = FlowAssembler(decide, active_timeout_s=600)
    flows.conntrack(ct(EventKind.NEW, 0, flow=DNS))
    flows.conntrack(ct(EventKind.SNAPSHOT, 30, (2, 140, 2, 300), flow=DNS))
    flows.conntrack(ct(EventKind.SNAPSHOT, 60, (2, 140, 2, 300), flow=DNS))
    (report,) = flows.conntrack(ct(EventKind.DESTROY, 70, (3, 210, 3, 450), flow=DNS))
    assert (counters(report), report.start_ms, report.end_ms) == (
        (1, 70, 1, 150),
        T0_MS + 60_000,
        T0_MS + 70_000,
    )


def test_entries_with_mark_zero_were_not_decided_by_tagwall_and_are_ignored() -> None:
    flows = FlowAssembler(decide)
    for kind, at in ((EventKind.NEW, 0), (EventKind.SNAPSHOT, 30), (EventKind.DESTROY, 40)):
        assert flows.conntrack(ct(kind, at, (5, 500, 5, 500), mark=0)) == []
    assert flows.open_flows == 0


def test_a_destroy_without_its_new_reports_the_whole_flow() -> None:
    """The flow began before the agent: its end reports every packet since its start."""
    flows = FlowAssembler(decide)
    (report,) = flows.conntrack(ct(EventKind.DESTROY, 50, (30, 3000, 20, 9000), started_s=-10))
    assert (counters(report), report.start_ms, report.end_ms) == (
        (30, 3000, 20, 9000),
        T0_MS - 10_000,
        T0_MS + 50_000,
    )
    assert report.egress == end_decision(TO_DB)


def test_flows_past_max_flows_are_counted_and_reported_whole_at_their_end() -> None:
    flows = FlowAssembler(decide, max_flows=1)
    flows.conntrack(ct(EventKind.NEW, 0, ct_id=1))
    flows.conntrack(ct(EventKind.NEW, 0, ct_id=2, flow=DNS))
    assert (flows.open_flows, flows.untracked) == (1, 1)
    (report,) = flows.conntrack(ct(EventKind.DESTROY, 3, (2, 140, 2, 300), ct_id=2, flow=DNS))
    assert counters(report) == (2, 140, 2, 300)


def test_icmp_reports_port_zero_and_type_times_256_plus_code() -> None:
    """Echo request (type 8 code 0) → dport 2048; port unreachable (3/3) → 771."""
    flows = FlowAssembler(decide)
    ping = FiveTuple("10.0.1.2", "10.0.2.3", 1, icmp_type=8, icmp_code=0)
    (report,) = flows.conntrack(ct(EventKind.DESTROY, 1, (1, 84, 1, 84), flow=ping))
    assert (report.proto, report.sport, report.dport) == (1, 0, 2048)
    unreachable = FiveTuple("fd00::2", "fd00::3", 58, icmp_type=3, icmp_code=3)
    flows.denied(dropped(0, flow=unreachable))
    (report,) = flows.drain()
    assert (report.src, report.proto, report.sport, report.dport) == ("fd00::2", 58, 0, 771)


def test_a_decision_id_the_program_does_not_know_is_none_and_counted() -> None:
    flows = FlowAssembler(decide)
    (report,) = flows.conntrack(ct(EventKind.DESTROY, 1, (1, 60, 1, 60), mark=0x002A_0003))
    assert (report.egress, report.ingress) == (None, end_decision(FROM_WEB))
    assert flows.unknown_decisions == 1
    flows.denied(dropped(0, prefix="tw:i:4242"))
    (report,) = flows.drain()
    assert (report.egress, report.ingress) == (None, None)
    assert flows.unknown_decisions == 2


# -- denied packets ---------------------------------------------------------------------------


def test_denied_packets_of_one_flow_and_rule_are_one_report_after_the_idle_gap() -> None:
    """A client retrying a refused SYN at 0, 1 and 2 s: one report of three packets, emitted
    once the burst paused for ``deny_idle_s`` (2 s after the last packet), not before."""
    flows = FlowAssembler(decide, deny_idle_s=2)
    for at in (0, 1, 2):
        flows.denied(dropped(at))
    assert flows.expire(T0 + int(3.9 * S)) == []
    (report,) = flows.expire(T0 + 4 * S)
    assert report == FlowReport(
        start_ms=T0_MS,
        end_ms=T0_MS + 2000,
        src="10.0.1.2",
        dst="10.0.2.3",
        proto=6,
        sport=40001,
        dport=22,
        packets=3,
        bytes=180,
        rpackets=0,
        rbytes=0,
        egress=EndDecision("deny", "admin", "guard", "rails", "no-ssh"),
        ingress=None,
    )
    assert flows.expire(T0 + 60 * S) == []  # reported once


def test_the_prefix_direction_decides_the_end_a_denial_is_reported_at() -> None:
    """The same 5-tuple refused by the same rule id at egress and at ingress is two
    reports, one per end; packets of another rule make their own report."""
    flows = FlowAssembler(decide)
    flows.denied(dropped(0, prefix="tw:e:9"))
    flows.denied(dropped(0, prefix="tw:i:9"))
    flows.denied(dropped(0, prefix="tw:i:9"))
    flows.denied(dropped(0, prefix=f"tw:i:{DECISION_ISOLATED}"))
    reports = sorted(flows.drain(), key=lambda r: (r.egress is None, r.packets))
    assert [(r.egress, r.ingress, r.packets) for r in reports] == [
        (end_decision(NO_SSH_OUT), None, 1),
        (None, end_decision(ISOLATED), 1),
        (None, end_decision(NO_SSH_IN), 2),
    ]


def test_drain_reports_every_open_burst_and_ignores_foreign_prefixes() -> None:
    flows = FlowAssembler(decide, deny_idle_s=60)
    flows.denied(dropped(0))
    flows.denied(dropped(0, prefix="IN=eth0 DROP"))  # another program's log rule
    flows.denied(dropped(1))
    (report,) = flows.drain()
    assert (report.packets, report.bytes) == (2, 120)
    assert flows.drain() == []
    assert flows.expire(T0 + 3600 * S) == []


def test_a_denial_that_never_pauses_is_reported_every_active_timeout() -> None:
    flows = FlowAssembler(decide, deny_idle_s=2, active_timeout_s=10)
    out: list[FlowReport] = []
    for at in range(25):  # one packet a second
        flows.denied(dropped(at))
        out += flows.expire(T0 + at * S)
    assert [(r.start_ms - T0_MS, r.packets) for r in out] == [(0, 11), (11_000, 11)]


# -- across restarts --------------------------------------------------------------------------


def test_a_restarted_assembler_reports_only_what_the_previous_one_did_not() -> None:
    """``tracked`` survives a restart as JSON; the new assembler's DESTROY reports the
    counters since the old one's last report, from that report's time."""
    old = FlowAssembler(decide, active_timeout_s=60)
    old.conntrack(ct(EventKind.NEW, 0))
    old.conntrack(ct(EventKind.NEW, 0, ct_id=2, flow=DNS))  # never reported: not kept
    (first,) = old.conntrack(ct(EventKind.SNAPSHOT, 60, (20, 2000, 16, 8000)))
    rows = json.loads(json.dumps(old.tracked()))
    assert len(rows) == 1

    new = FlowAssembler(decide, active_timeout_s=60)
    new.restore(rows, T0 + 70 * S)
    (rest,) = new.conntrack(ct(EventKind.DESTROY, 100, (25, 2600, 20, 9000)))
    assert (counters(rest), rest.start_ms, rest.end_ms) == (
        (5, 600, 4, 1000),
        T0_MS + 60_000,
        T0_MS + 100_000,
    )
    assert (rest.src, rest.dport, rest.egress) == ("10.0.1.2", 5432, end_decision(TO_DB))
    assert counters(first)[0] + counters(rest)[0] == 25

    unrestored = FlowAssembler(decide)
    (whole,) = unrestored.conntrack(ct(EventKind.DESTROY, 100, (25, 2600, 20, 9000)))
    assert counters(whole) == (25, 2600, 20, 9000)  # what ``restore`` saves from counting twice


def test_a_restored_flow_whose_entry_is_gone_is_forgotten_after_gone_after_s() -> None:
    """Counted from the restart, not from the last report: an agent restarted long after its
    last report must wait for a snapshot before it forgets (or it would report again)."""
    old = FlowAssembler(decide, active_timeout_s=60)
    old.conntrack(ct(EventKind.NEW, 0))
    old.conntrack(ct(EventKind.SNAPSHOT, 60, (20, 2000, 16, 8000)))
    new = FlowAssembler(decide, gone_after_s=30)
    new.restore(old.tracked(), T0 + 200 * S)
    assert new.expire(T0 + 229 * S) == [] and new.open_flows == 1
    assert new.expire(T0 + 230 * S) == [] and new.open_flows == 0  # reported by ``old`` already
    assert new.ends_lost == 0


def test_a_restored_flow_confirmed_by_a_snapshot_is_not_reported_again() -> None:
    old = FlowAssembler(decide, active_timeout_s=60)
    old.conntrack(ct(EventKind.NEW, 0))
    old.conntrack(ct(EventKind.SNAPSHOT, 60, (20, 2000, 16, 8000), tcp_state=7))
    new = FlowAssembler(decide, gone_after_s=30)
    new.restore(old.tracked(), T0 + 200 * S)
    assert new.conntrack(ct(EventKind.SNAPSHOT, 205, (20, 2000, 16, 8000), tcp_state=7)) == []
    assert new.expire(T0 + 230 * S) == [] and new.open_flows == 1  # seen at 205 s
    assert new.conntrack(ct(EventKind.DESTROY, 240, (20, 2000, 16, 8000))) == []


def test_a_flow_whose_destroy_was_lost_is_reported_from_its_last_snapshot() -> None:
    """An overrun cost the DESTROY: once no snapshot has seen the flow for ``gone_after_s``,
    what the last snapshot counted beyond the last report is reported."""
    assembler = FlowAssembler(decide, active_timeout_s=60, gone_after_s=30)
    assembler.conntrack(ct(EventKind.NEW, 0))
    assert assembler.conntrack(ct(EventKind.SNAPSHOT, 10, (5, 500, 4, 400))) == []  # active
    assert assembler.conntrack(ct(EventKind.SNAPSHOT, 20, (9, 900, 8, 800))) == []
    assert assembler.expire(T0 + 49 * S) == []
    (report,) = assembler.expire(T0 + 50 * S)
    assert counters(report) == (9, 900, 8, 800)
    assert (report.start_ms, report.end_ms) == (T0_MS, T0_MS + 20_000)
    assert report.egress == end_decision(TO_DB) and report.ingress == end_decision(FROM_WEB)
    assert assembler.open_flows == 0 and assembler.ends_lost == 1


def test_a_flow_no_snapshot_saw_and_whose_destroy_was_lost_is_reported_without_counters() -> None:
    """Who talked to whom, by which rule, is still known from NEW; its packets are not."""
    assembler = FlowAssembler(decide, gone_after_s=30)
    assembler.conntrack(ct(EventKind.NEW, 0))
    (report,) = assembler.expire(T0 + 30 * S)
    assert counters(report) == (0, 0, 0, 0)
    assert report.egress == end_decision(TO_DB)
    assert assembler.ends_lost == 1


# -- end_decision ------------------------------------------------------------------------------


def test_end_decision_of_a_rule_names_its_tier_set_policy_and_rule() -> None:
    assert end_decision(NO_SSH_OUT) == EndDecision("deny", "admin", "guard", "rails", "no-ssh")
    redirect = CounterKey(EGRESS, Tier.BASELINE, Ref("svc"), Ref("ips"), "inspect", Action.REDIRECT)
    assert end_decision(redirect) == EndDecision("allow", "baseline", "svc", "ips", "inspect")
    reject = CounterKey(INGRESS, Tier.BASELINE, Ref("b"), Ref("p"), "r", Action.REJECT)
    assert end_decision(reject).verdict == "deny"


def test_end_decision_of_the_defaults_names_them_as_the_policy_with_no_rule() -> None:
    assert end_decision(ISOLATED) == EndDecision(
        "deny", "application", None, "application-default-deny", None
    )
    assert end_decision(POSTURE) == EndDecision("allow", "posture", None, "default-posture", None)
    deny_posture = CounterKey(INGRESS, None, None, None, "default-posture", Action.DENY)
    assert end_decision(deny_posture) == EndDecision(
        "deny", "posture", None, "default-posture", None
    )


# -- a batch of DESTROY events ------------------------------------------------------------------


def via(labels: int) -> tuple[str, ...]:
    return (f"fw-{labels % 3}/fw-a", "fw-9/fw-b") if labels % 2 else ()


def both() -> tuple[FlowAssembler, FlowAssembler]:
    return FlowAssembler(decide, via), FlowAssembler(decide, via)


def one_by_one(flows: FlowAssembler, batch: ConntrackBatch) -> list[bytes]:
    return [report_payload(r) for e in batch.events() for r in flows.conntrack(e)]


def assert_same(fast: FlowAssembler, slow: FlowAssembler, batch: ConntrackBatch) -> list[bytes]:
    """``conntrack_batch`` reports what ``conntrack`` of each event does, byte for byte, and
    leaves the assembler in the same state."""
    payloads = fast.conntrack_batch(batch)
    assert sorted(payloads) == sorted(one_by_one(slow, batch))
    assert (fast.unknown_decisions, fast.untracked, fast.open_flows) == (
        slow.unknown_decisions,
        slow.untracked,
        slow.open_flows,
    )
    assert fast.tracked() == slow.tracked()
    return payloads


def test_a_batch_of_untracked_destroys_is_their_reports_in_wire_form() -> None:
    """Twenty connections that began and ended between snapshots: twenty reports, the JSON
    ``FlowReport.to_wire`` gives, decisions from the mark's halves, ``via`` from the label."""
    run = [message(ct_id=i, ports=(40000 + i, 5432), labels=i % 2) for i in range(20)]
    fast, slow = both()
    payloads = assert_same(fast, slow, decode_destroys(run, T0, min_columnar=8))
    assert len(payloads) == 20
    report = FlowReport.from_wire(json.loads(payloads[1]))
    assert report == FlowReport(
        start_ms=1000,
        end_ms=3000,
        src="10.0.0.1",
        dst="10.0.0.2",
        proto=6,
        sport=40001,
        dport=5432,
        packets=3,
        bytes=180,
        rpackets=2,
        rbytes=120,
        egress=end_decision(TO_DB),
        ingress=end_decision(FROM_WEB),
        via=("fw-1/fw-a", "fw-9/fw-b"),
    )
    assert payloads[1] == report_payload(report)


def test_a_batch_reports_tracked_flows_from_their_last_report_and_ignores_mark_zero() -> None:
    """Flows a snapshot reported go on from that report; mark 0 is not tagwall's; an id the
    batch holds twice sends the batch one event at a time, in order."""
    run = [message(ct_id=i, mark=0 if i % 5 == 0 else 0x0007_0003) for i in range(1, 21)]
    fast, slow = both()
    for flows in (fast, slow):
        for i in (2, 3, 4):
            event = ct(EventKind.SNAPSHOT, 0.5, (1, 60, 1, 60), ct_id=i, tcp_state=7)
            assert len(flows.conntrack(event)) == 1
    payloads = assert_same(fast, slow, decode_destroys(run, T0, min_columnar=8))
    assert len(payloads) == 16 and fast.open_flows == 0
    again = decode_destroys([message(ct_id=7), message(ct_id=7)] * 4, T0, min_columnar=2)
    assert len(assert_same(fast, slow, again)) == 8
    unknown = [message(ct_id=100 + i, mark=0x002A_0003) for i in range(10)]
    assert len(assert_same(fast, slow, decode_destroys(unknown, T0, min_columnar=8))) == 10
    assert fast.unknown_decisions == 10  # each report's unknown end, as ``conntrack`` counts


@settings(max_examples=300, deadline=None)
@given(
    st.lists(messages(st.integers(1, 2**32 - 1)), max_size=30),
    st.integers(1, 9),
    st.lists(st.tuples(st.integers(0, 29), st.sampled_from(["new", "snapshot", "restored"]))),
    st.integers(1, 40),
)
def test_any_batch_is_reported_as_its_events_one_by_one(
    run: list[bytes], min_columnar: int, seen: list[tuple[int, str]], max_flows: int
) -> None:
    """Whatever the run (protocols, families, absent counters or times, labels, unknown
    decisions, duplicate ids) and whatever the assembler followed before (NEW, a snapshot
    that reported, a restored row, ``max_flows`` reached)."""
    batch = decode_destroys(run, T0, min_columnar=min_columnar)
    events = batch.events()
    fast, slow = (FlowAssembler(decide, via, max_flows=max_flows) for _ in range(2))
    for which, how in seen:
        if not events:
            break
        event = events[which % len(events)]
        for flows in (fast, slow):
            if how == "restored":
                flows.restore([[event.ct_id, T0, T0, 1, 2, 3, 4]], T0)
            else:
                kind = EventKind.NEW if how == "new" else EventKind.SNAPSHOT
                flows.conntrack(dataclasses.replace(event, kind=kind, tcp_state=7))
    assert_same(fast, slow, batch)
