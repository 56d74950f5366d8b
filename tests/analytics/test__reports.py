"""ReportPairing and reports_batches: the two hosts' halves of a flow become one row, a half
whose partner does not come is stored alone after the window, and audit-mode policies add
would-deny / would-allow to what the kernel decided.

The estate: ``web-1`` (10.0.1.2) and ``app-1`` (10.0.1.4) on host-a, ``db-1`` (10.0.2.3) on
host-b, the external ``payments`` (192.0.2.10); the shop's application tier allows web ↔ db
on tcp/5432 (``web-to-db``) and isolates the rest; the admin tier holds an audit-mode policy
that would deny web → db on tcp/5432 and allow it on tcp/22.
"""

from __future__ import annotations

from typing import Any

import pytest

from tagwall.analytics import FlowBatch, RuleRef, Source, Verdict
from tagwall.analytics._reports import ReportPairing, reports_batches
from tagwall.control import EndDecision, FlowReport
from tagwall.model import Config, load, parse_documents

ESTATE = """\
apiVersion: tagwall/v1
kind: Project
metadata: {name: shop}
spec: {tags: {application: shop}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web-1, project: shop}
spec: {kind: vm, host: host-a, interfaces: [{name: eth0, ips: [10.0.1.2]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: app-1, project: shop}
spec: {kind: vm, host: host-a, interfaces: [{name: eth0, ips: [10.0.1.4]}], tags: {tier: app}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: db-1, project: shop}
spec: {kind: vm, host: host-b, interfaces: [{name: eth0, ips: [10.0.2.3]}], tags: {tier: db}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: payments}
spec: {kind: external, interfaces: [{name: api, ips: [192.0.2.10]}]}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: three-tier, project: shop}
spec:
  rules:
  - name: web-to-db
    sequence: 10
    from: {tags: "tier=web"}
    to: {tags: "tier=db"}
    services: [tcp/5432]
    direction: "<>"
    action: allow
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: apps, project: shop}
spec:
  tier: application
  priority: 100
  selector: "application=shop"
  directions: [ingress, egress]
  policies: [{name: three-tier, sequence: 10}]
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: staged}
spec:
  mode: audit
  rules:
  - {name: no-db, sequence: 10, from: {tags: "tier=web"}, to: {tags: "tier=db"},
     services: [tcp/5432], action: deny}
  - {name: ssh-to-db, sequence: 20, from: {tags: "tier=web"}, to: {tags: "tier=db"},
     services: [tcp/22], action: allow}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: guard}
spec:
  tier: admin
  priority: 10
  all: true
  directions: [ingress, egress]
  policies: [{name: staged, sequence: 10}]
"""

WEB, APP, DB, PAYMENTS, UNKNOWN = "10.0.1.2", "10.0.1.4", "10.0.2.3", "192.0.2.10", "203.0.113.5"
WEB_TO_DB = EndDecision("allow", "application", "shop/apps", "shop/three-tier", "web-to-db")
ISOLATED = EndDecision("deny", "application", None, "application-default-deny", None)
WINDOW_S = 30
NOW_MS = 1_764_150_000_000


def config() -> Config:
    return load(parse_documents(ESTATE, "estate.yaml"))


def report(
    src: str = WEB,
    dst: str = DB,
    *,
    dport: int = 5432,
    at_ms: tuple[int, int] = (NOW_MS - 5000, NOW_MS - 2500),
    counters: tuple[int, int, int, int] = (12, 2100, 10, 5800),
    egress: EndDecision | None = WEB_TO_DB,
    ingress: EndDecision | None = None,
) -> FlowReport:
    """What one agent says of one flow: by default host-a's half of web-1 → db-1."""
    packets, bytes_, rpackets, rbytes = counters
    start_ms, end_ms = at_ms
    return FlowReport(
        start_ms, end_ms, src, dst, 6, 40000, dport, packets, bytes_, rpackets, rbytes,
        egress, ingress,
    )  # fmt: skip


def source_half(**kw: Any) -> FlowReport:
    return report(**{"egress": WEB_TO_DB, "ingress": None, **kw})


def destination_half(**kw: Any) -> FlowReport:
    """host-b's account: it saw fewer of the packets (one was lost on the way)."""
    return report(
        **{
            "egress": None,
            "ingress": WEB_TO_DB,
            "counters": (11, 2050, 10, 5800),
            "at_ms": (NOW_MS - 4900, NOW_MS - 2000),
            **kw,
        }
    )


def stored(rows: list[Any]) -> list[tuple[str, FlowReport]]:
    return [(row.host, row.report) for row in rows]


@pytest.fixture
def pairing() -> ReportPairing:
    return ReportPairing(window_s=WINDOW_S)


# -- pairing ----------------------------------------------------------------------------------


def test_a_flow_between_workloads_of_one_host_is_stored_at_once(pairing: ReportPairing) -> None:
    same_host = report(WEB, APP, ingress=ISOLATED)
    assert stored(pairing.take(config(), "host-a", [same_host], NOW_MS)) == [("host-a", same_host)]
    assert pairing.waiting == 0


@pytest.mark.parametrize("source_first", [True, False], ids=["source-first", "dest-first"])
def test_the_two_hosts_halves_of_a_flow_become_one_row(
    pairing: ReportPairing, source_first: bool
) -> None:
    """Whatever arrives first waits; the second completes it: one row, the source side's
    host and counters, the destination's ingress decision, the earliest start and latest end."""
    estate = config()
    halves = [("host-a", source_half()), ("host-b", destination_half())]
    first, second = halves if source_first else halves[::-1]
    assert pairing.take(estate, first[0], [first[1]], NOW_MS) == []
    assert pairing.waiting == 1
    rows = stored(pairing.take(estate, second[0], [second[1]], NOW_MS + 1000))
    assert rows == [
        (
            "host-a",
            report(
                at_ms=(NOW_MS - 5000, NOW_MS - 2000),
                counters=(12, 2100, 10, 5800),
                egress=WEB_TO_DB,
                ingress=WEB_TO_DB,
            ),
        )
    ]
    assert pairing.waiting == 0
    assert pairing.expire(NOW_MS + 3600_000) == []


def test_a_flow_denied_at_the_destination_pairs_with_its_source_half(
    pairing: ReportPairing,
) -> None:
    """host-b dropped the SYNs (NFLOG, no egress end); host-a's conntrack saw them leave."""
    estate = config()
    refused = destination_half(ingress=ISOLATED, dport=22, counters=(3, 180, 0, 0))
    assert pairing.take(estate, "host-b", [refused], NOW_MS) == []
    (row,) = pairing.take(
        estate, "host-a", [source_half(dport=22, counters=(3, 180, 0, 0))], NOW_MS
    )
    assert (row.host, row.report.egress, row.report.ingress) == ("host-a", WEB_TO_DB, ISOLATED)


def test_later_reports_of_a_paired_flow_are_completed_from_what_was_learned(
    pairing: ReportPairing,
) -> None:
    """A long flow's next periods: the source side's rows take the learned ingress decision
    at once; the destination side's are dropped and counted, the source's count their packets."""
    estate = config()
    pairing.take(estate, "host-a", [source_half()], NOW_MS)
    pairing.take(estate, "host-b", [destination_half()], NOW_MS)
    later = (NOW_MS + 55_000, NOW_MS + 60_000)
    assert pairing.take(estate, "host-b", [destination_half(at_ms=later)], NOW_MS + 60_000) == []
    assert pairing.dropped_duplicates == 1
    rows = stored(pairing.take(estate, "host-a", [source_half(at_ms=later)], NOW_MS + 60_000))
    assert rows == [("host-a", report(at_ms=later, ingress=WEB_TO_DB))]
    assert pairing.waiting == 0


def test_a_half_without_partner_waits_the_window_then_is_stored_alone(
    pairing: ReportPairing,
) -> None:
    alone = source_half()
    assert pairing.take(config(), "host-a", [alone], NOW_MS) == []
    assert pairing.expire(NOW_MS + WINDOW_S * 1000 - 1) == []
    assert pairing.waiting == 1
    assert stored(pairing.expire(NOW_MS + WINDOW_S * 1000)) == [("host-a", alone)]
    assert pairing.waiting == 0
    assert pairing.expire(NOW_MS + 2 * WINDOW_S * 1000) == []


def test_two_periods_of_a_flow_waiting_for_their_partner_both_complete(
    pairing: ReportPairing,
) -> None:
    """Two source-side reports came before host-b's first: its one report completes both."""
    estate = config()
    early, late = (NOW_MS - 5000, NOW_MS - 2500), (NOW_MS - 2500, NOW_MS)
    pairing.take(estate, "host-a", [source_half(at_ms=early), source_half(at_ms=late)], NOW_MS)
    assert pairing.waiting == 2
    rows = stored(pairing.take(estate, "host-b", [destination_half(at_ms=early)], NOW_MS))
    assert [(host, r.start_ms, r.end_ms, r.ingress) for host, r in rows] == [
        ("host-a", *early, WEB_TO_DB),
        ("host-a", *late, WEB_TO_DB),
    ]
    assert pairing.waiting == 0


def test_drain_stores_every_waiting_half_alone(pairing: ReportPairing) -> None:
    estate = config()
    waiting = [("host-a", source_half()), ("host-b", destination_half(dport=22))]
    for host, r in waiting:
        pairing.take(estate, host, [r], NOW_MS)
    assert sorted(stored(pairing.drain()), key=lambda row: row[0]) == waiting
    assert pairing.waiting == 0
    assert pairing.drain() == []


@pytest.mark.parametrize("destination", [PAYMENTS, UNKNOWN], ids=["external", "unknown"])
def test_a_flow_to_an_end_no_agent_enforces_does_not_wait(
    pairing: ReportPairing, destination: str
) -> None:
    out = report(WEB, destination, dport=443)
    assert stored(pairing.take(config(), "host-a", [out], NOW_MS)) == [("host-a", out)]
    assert pairing.waiting == 0


def test_a_flow_denied_at_egress_does_not_wait_for_the_destination(
    pairing: ReportPairing,
) -> None:
    """It never reached db-1, so host-b has nothing to say."""
    denied = source_half(egress=ISOLATED, dport=3306, counters=(3, 180, 0, 0))
    assert stored(pairing.take(config(), "host-a", [denied], NOW_MS)) == [("host-a", denied)]
    assert pairing.waiting == 0


def test_a_flow_from_an_external_end_does_not_wait_for_its_source(
    pairing: ReportPairing,
) -> None:
    inbound = report(PAYMENTS, DB, dport=5432, egress=None, ingress=ISOLATED)
    assert stored(pairing.take(config(), "host-b", [inbound], NOW_MS)) == [("host-b", inbound)]


# -- batches ----------------------------------------------------------------------------------


def columns(batch: FlowBatch, i: int) -> dict[str, object]:
    """Row ``i`` of ``batch``: verdicts as ``Verdict``, rule indexes as their ``RuleRef``."""
    out: dict[str, object] = {}
    for name in ("src", "dst"):
        out[f"{name}_verdict"] = Verdict(int(batch.columns[f"{name}_verdict"][i]))
        out[f"{name}_audit"] = Verdict(int(batch.columns[f"{name}_audit"][i]))
        for column in (f"{name}_rule", f"{name}_audit_rule"):
            index = int(batch.columns[column][i])
            out[column] = None if index < 0 else batch.rules[index]
    return out


THREE_TIER = RuleRef("application", "shop/apps", "shop/three-tier", "web-to-db")


def test_reports_batches_carry_each_end_s_verdict_and_rule_per_host() -> None:
    """One batch per host, of source AGENT with the host as exporter, every column from its
    reports; a flow the audit policies do not change has no audit verdict."""
    estate = config()
    pairing = ReportPairing(window_s=WINDOW_S)
    same_host = report(WEB, APP, dport=8080, egress=ISOLATED, counters=(3, 180, 0, 0))
    from_outside = report(PAYMENTS, DB, dport=9000, egress=None, ingress=ISOLATED)
    rows = pairing.take(estate, "host-a", [same_host], NOW_MS)
    rows += pairing.take(estate, "host-b", [from_outside], NOW_MS)
    batches = {b.exporter: b for b in reports_batches(estate, rows)}
    assert sorted(batches) == ["host-a", "host-b"]
    assert {b.source for b in batches.values()} == {Source.AGENT}
    a, b = batches["host-a"], batches["host-b"]
    assert len(a) == len(b) == 1
    assert {name: a.columns[name].tolist() for name in ("start_ms", "dst_port", "rbytes")} == {
        "start_ms": [same_host.start_ms],
        "dst_port": [8080],
        "rbytes": [0],
    }
    isolated = RuleRef("application", None, "application-default-deny", None)
    assert columns(a, 0) == {
        "src_verdict": Verdict.DENY,
        "src_rule": isolated,
        "src_audit": Verdict.NONE,
        "src_audit_rule": None,
        "dst_verdict": Verdict.NONE,
        "dst_rule": None,
        "dst_audit": Verdict.NONE,
        "dst_audit_rule": None,
    }
    assert columns(b, 0) == {
        "src_verdict": Verdict.NONE,
        "src_rule": None,
        "src_audit": Verdict.NONE,
        "src_audit_rule": None,
        "dst_verdict": Verdict.DENY,
        "dst_rule": isolated,
        "dst_audit": Verdict.NONE,
        "dst_audit_rule": None,
    }


def test_an_audit_policy_that_would_deny_an_allowed_flow_marks_it_would_deny() -> None:
    """web-1 → db-1 tcp/5432 is allowed at both ends; the staged ``no-db`` rule (admin tier,
    audit mode, both directions) would deny it at both."""
    estate = config()
    pairing = ReportPairing(window_s=WINDOW_S)
    pairing.take(estate, "host-a", [source_half()], NOW_MS)
    rows = pairing.take(estate, "host-b", [destination_half()], NOW_MS)
    (batch,) = reports_batches(estate, rows)
    no_db = RuleRef("admin", "guard", "staged", "no-db")
    assert columns(batch, 0) == {
        "src_verdict": Verdict.ALLOW,
        "src_rule": THREE_TIER,
        "src_audit": Verdict.WOULD_DENY,
        "src_audit_rule": no_db,
        "dst_verdict": Verdict.ALLOW,
        "dst_rule": THREE_TIER,
        "dst_audit": Verdict.WOULD_DENY,
        "dst_audit_rule": no_db,
    }


def test_an_audit_policy_that_would_allow_a_denied_flow_marks_it_would_allow() -> None:
    """web-1 → db-1 tcp/22 was denied at egress by the application tier's isolation; the
    staged ``ssh-to-db`` rule would allow it.  The undecided destination gets no audit."""
    estate = config()
    ssh = source_half(dport=22, egress=ISOLATED, counters=(3, 180, 0, 0))
    (batch,) = reports_batches(estate, ReportPairing().take(estate, "host-a", [ssh], NOW_MS))
    assert columns(batch, 0) == {
        "src_verdict": Verdict.DENY,
        "src_rule": RuleRef("application", None, "application-default-deny", None),
        "src_audit": Verdict.WOULD_ALLOW,
        "src_audit_rule": RuleRef("admin", "guard", "staged", "ssh-to-db"),
        "dst_verdict": Verdict.NONE,
        "dst_rule": None,
        "dst_audit": Verdict.NONE,
        "dst_audit_rule": None,
    }


def test_without_audit_policies_no_row_has_an_audit_verdict() -> None:
    enforcing = ESTATE.replace("mode: audit", "mode: enforce")
    estate = load(parse_documents(enforcing, "estate.yaml"))
    ssh = source_half(dport=22, egress=ISOLATED, counters=(3, 180, 0, 0))
    (batch,) = reports_batches(estate, ReportPairing().take(estate, "host-a", [ssh], NOW_MS))
    assert batch.columns["src_audit"].tolist() == [Verdict.NONE]
    assert batch.columns["src_audit_rule"].tolist() == [-1]


def test_a_flow_no_audit_policy_matches_gets_no_audit_verdict() -> None:
    """web-1 → app-1 tcp/8080 was allowed at egress by ``web-to-app``, a rule of the revision
    in force when the connection began (removed since; the established flow keeps its ct
    mark).  The staged audit rules match only web → db: this row has no would-verdict, as
    in the same estate without audit policies."""
    web_to_app = EndDecision("allow", "application", "shop/apps", "shop/three-tier", "web-to-app")
    established = report(WEB, APP, dport=8080, egress=web_to_app, ingress=web_to_app)
    enforcing = load(parse_documents(ESTATE.replace("mode: audit", "mode: enforce"), "e.yaml"))
    for estate in (enforcing, config()):
        rows = ReportPairing().take(estate, "host-a", [established], NOW_MS)
        (batch,) = reports_batches(estate, rows)
        # Actually, with the audit estate: WOULD_DENY by application-default-deny at both ends.
        assert (columns(batch, 0)["src_audit"], columns(batch, 0)["dst_audit"]) == (
            Verdict.NONE,
            Verdict.NONE,
        )
