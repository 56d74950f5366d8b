"""Agents' flow reports → flow rows: one row per flow and period with both ends' decisions,
the audit policies' verdicts added.

Why pairing: a flow between workloads of two hosts is seen by both agents, and each knows
only its own end: the source's host what decided at egress, the destination's host what
decided at ingress.  Stored as they come, such a flow would count twice and show each end
undecided once.  So a report that lacks an end another agent enforces waits (up to
``window_s``) for its partner, the report of the same 5-tuple from that end's host, and the
two become one row:

* the counters and times are the source side's (what left the source and came back to it);
  the destination side adds its decision only;
* once a 5-tuple was paired, its later reports are completed at once from what was learned
  (``remember_s`` after last use): the source side's rows take the learned ingress decision,
  the destination side's rows are dropped, their packets being counted by the source side's;
* a report whose partner did not come within ``window_s`` (that agent is down, or its report
  is late) is stored alone, the other end undecided.

Ends that need no partner: an end that is no enforced workload (an external or unknown
address), an end on the reporting host itself, and the destination of a flow the source's
egress denied (it never got there).

Audit: with policies in ``audit`` mode in the configuration, each decided end is evaluated
with and without them (``evaluator.decide``); where the two disagree, the row says would-deny
or would-allow, and which rule.

Not thread-safe: ``Analytics`` holds a lock around it.  Pending reports live in memory: a
controller that crashes loses those of the last ``window_s`` (a clean stop stores them).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..control import EndDecision, FlowReport
from ..evaluator import Decision, Flow, FlowEnd, Reason, decide, end_of_ip
from ..model import Config, FlowService, Mode, Protocol, TrafficDirection
from ._batch import FlowBatch, RuleRef, Source, Verdict, ip_columns

__all__ = ["ReportPairing", "reports_batches"]

_Key = tuple[str, str, int, int, int]  # src, dst, proto, sport, dport
_PROTOCOLS = {6: Protocol.TCP, 17: Protocol.UDP, 132: Protocol.SCTP}
_VERDICT = {"allow": Verdict.ALLOW, "deny": Verdict.DENY}


@dataclass(frozen=True, slots=True)
class _Pending:
    host: str
    report: FlowReport
    deadline_ms: int
    missing_src: bool  # else it misses the destination's decision


@dataclass(slots=True)
class _Learned:
    egress: EndDecision | None
    ingress: EndDecision | None
    used_ms: int


@dataclass(frozen=True, slots=True)
class Row:
    """A report ready to store, by the host whose counters it carries."""

    host: str
    report: FlowReport


class ReportPairing:
    def __init__(self, *, window_s: float = 30.0, remember_s: float = 600.0) -> None:
        self._window_ms = int(window_s * 1000)
        self._remember_ms = int(remember_s * 1000)
        self._pending: dict[_Key, deque[_Pending]] = defaultdict(deque)
        self._learned: dict[_Key, _Learned] = {}
        self.dropped_duplicates = 0  # destination-side reports whose packets the source's count

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def take(
        self, config: Config, host: str, reports: Iterable[FlowReport], now_ms: int
    ) -> list[Row]:
        """The rows ``reports`` (from ``host``) complete now; the rest wait for a partner."""
        out: list[Row] = []
        for report in reports:
            key = (report.src, report.dst, report.proto, report.sport, report.dport)
            missing_src, missing_dst = _missing(config, host, report)
            if not (missing_src or missing_dst):
                out.append(Row(host, report))
                continue
            learned = self._learned.get(key)
            if learned is not None:
                learned.used_ms = now_ms
                out.extend(self._complete(learned, host, report, missing_src))
                continue
            partner = self._partner(key, host, missing_src)
            if partner is None:
                deadline = now_ms + self._window_ms
                self._pending[key].append(_Pending(host, report, deadline, missing_src))
                continue
            src_side = Row(host, report) if missing_dst else Row(partner.host, partner.report)
            dst_side = partner.report if missing_dst else report
            merged = replace(
                src_side.report,
                start_ms=min(report.start_ms, partner.report.start_ms),
                end_ms=max(report.end_ms, partner.report.end_ms),
                ingress=dst_side.ingress,
                via=src_side.report.via or dst_side.via,  # whichever host steered it
            )
            learned = self._learned[key] = _Learned(merged.egress, merged.ingress, now_ms)
            out.append(Row(src_side.host, merged))
            for waiting in self._pending.pop(key, ()):
                out.extend(
                    self._complete(learned, waiting.host, waiting.report, waiting.missing_src)
                )
        return out

    def _complete(
        self, learned: _Learned, host: str, report: FlowReport, missing_src: bool
    ) -> list[Row]:
        if missing_src:  # a destination-side report: the source side's count these packets
            self.dropped_duplicates += 1
            return []
        return [Row(host, replace(report, ingress=learned.ingress))]

    def _partner(self, key: _Key, host: str, missing_src: bool) -> _Pending | None:
        queue = self._pending.get(key)
        if not queue:
            return None
        for i, pending in enumerate(queue):
            # The partner saw the end this report lacks, from another host.
            saw = pending.report.egress if missing_src else pending.report.ingress
            if pending.host != host and saw is not None:
                del queue[i]
                if not queue:
                    del self._pending[key]
                return pending
        return None

    def expire(self, now_ms: int) -> list[Row]:
        """Reports whose partner did not come in time, to be stored alone."""
        out: list[Row] = []
        for key in list(self._pending):
            queue = self._pending[key]
            while queue and queue[0].deadline_ms <= now_ms:
                gone = queue.popleft()
                out.append(Row(gone.host, gone.report))
            if not queue:
                del self._pending[key]
        for key in [k for k, v in self._learned.items() if now_ms - v.used_ms >= self._remember_ms]:
            del self._learned[key]
        return out

    def drain(self) -> list[Row]:
        """Every waiting report, to be stored alone (the controller is stopping)."""
        out = [Row(p.host, p.report) for queue in self._pending.values() for p in queue]
        self._pending.clear()
        return out


def _missing(config: Config, host: str, report: FlowReport) -> tuple[bool, bool]:
    """Which ends another host's agent enforces and this report does not decide."""
    missing_src = report.egress is None and _elsewhere(config, report.src, host)
    reached = report.egress is None or report.egress.verdict == "allow"
    missing_dst = report.ingress is None and reached and _elsewhere(config, report.dst, host)
    return missing_src, missing_dst


def _elsewhere(config: Config, address: str, host: str) -> bool:
    ip = config.parse_ip(address)
    workload = config.workload_at(ip) if ip is not None else None
    if workload is None:
        return False
    enforcing = config.host_of(workload)
    return enforcing is not None and enforcing != host


def reports_batches(config: Config, rows: Sequence[Row]) -> list[FlowBatch]:
    """One ``FlowBatch`` per host of ``rows``, audit verdicts added."""
    audit = any(p.mode is Mode.AUDIT for p in config.policies.values())
    by_host: dict[str, list[FlowReport]] = defaultdict(list)
    for row in rows:
        by_host[row.host].append(row.report)
    return [_batch(config, host, reports, audit) for host, reports in by_host.items()]


def _batch(config: Config, host: str, reports: list[FlowReport], audit: bool) -> FlowBatch:
    rules: dict[RuleRef, int] = {}
    n = len(reports)
    verdicts = {name: np.zeros(n, np.uint8) for name in ("src", "dst", "src_a", "dst_a")}
    rule_ids = {name: np.full(n, -1, np.int32) for name in verdicts}
    # Many reports share a pair and a service (a client's repeated connections): evaluate
    # the audit policies once per (pair, service, ends decided) in a batch.
    audited: dict[tuple[object, ...], list[tuple[str, Verdict, RuleRef]]] = {}
    for i, r in enumerate(reports):
        for end, decision in (("src", r.egress), ("dst", r.ingress)):
            if decision is not None:
                verdicts[end][i] = _VERDICT[decision.verdict]
                ref = RuleRef(decision.tier, decision.policy_set, decision.policy, decision.rule)
                rule_ids[end][i] = rules.setdefault(ref, len(rules))
        if audit:
            key = (r.src, r.dst, r.proto, r.dport, r.egress is None, r.ingress is None)
            if key not in audited:
                audited[key] = list(_audits(config, r))
            for end, would, ref in audited[key]:
                verdicts[end + "_a"][i] = would
                rule_ids[end + "_a"][i] = rules.setdefault(ref, len(rules))
    src_hi, src_lo = ip_columns([r.src for r in reports])
    dst_hi, dst_lo = ip_columns([r.dst for r in reports])
    columns: dict[str, Any] = {
        "start_ms": [r.start_ms for r in reports],
        "end_ms": [r.end_ms for r in reports],
        "src_hi": src_hi,
        "src_lo": src_lo,
        "dst_hi": dst_hi,
        "dst_lo": dst_lo,
        "proto": [r.proto for r in reports],
        "src_port": [r.sport for r in reports],
        "dst_port": [r.dport for r in reports],
        "packets": [r.packets for r in reports],
        "bytes": [r.bytes for r in reports],
        "rpackets": [r.rpackets for r in reports],
        "rbytes": [r.rbytes for r in reports],
        "src_verdict": verdicts["src"],
        "dst_verdict": verdicts["dst"],
        "src_rule": rule_ids["src"],
        "dst_rule": rule_ids["dst"],
        "src_audit": verdicts["src_a"],
        "dst_audit": verdicts["dst_a"],
        "src_audit_rule": rule_ids["src_a"],
        "dst_audit_rule": rule_ids["dst_a"],
    }
    via = [",".join(r.via) or None for r in reports] if any(r.via for r in reports) else None
    return FlowBatch.of(
        Source.AGENT, host, columns, rules=sorted(rules, key=rules.__getitem__), via=via
    )


def _audits(config: Config, r: FlowReport) -> Iterable[tuple[str, Verdict, RuleRef]]:
    """(end, would-verdict, rule) at each end this report decided, where the configuration
    with its audit policies in force decides otherwise than without them (what ``trace``
    calls the shadow verdict).  Both come from the evaluator on the configuration of now: a
    flow that a since removed rule allowed is no audit finding."""
    service = _service(r)
    if service is None:
        return
    src, dst = _end(config, r.src), _end(config, r.dst)
    if src is None or dst is None:
        return
    flow = Flow(src, dst, service)
    for end, direction, observed in (
        ("src", TrafficDirection.EGRESS, r.egress),
        ("dst", TrafficDirection.INGRESS, r.ingress),
    ):
        if observed is None:
            continue
        shadow = decide(config, flow, direction, include_audit=True)
        if shadow.allows == decide(config, flow, direction, include_audit=False).allows:
            continue
        would = Verdict.WOULD_ALLOW if shadow.allows else Verdict.WOULD_DENY
        yield end, would, _rule_ref(shadow)


def _end(config: Config, address: str) -> FlowEnd | None:
    ip = config.parse_ip(address)
    return end_of_ip(config, ip) if ip is not None else None


def _service(r: FlowReport) -> FlowService | None:
    if r.proto in _PROTOCOLS:
        return FlowService(_PROTOCOLS[r.proto], port=r.dport)
    if r.proto == 1:
        return FlowService(Protocol.ICMP, icmp_type=r.dport >> 8)
    if r.proto == 58:
        return FlowService(Protocol.ICMPV6, icmp_type=r.dport >> 8)
    return None


def _rule_ref(decision: Decision) -> RuleRef:
    if decision.reason is Reason.RULE and decision.rule is not None and decision.tier:
        rule = decision.rule
        return RuleRef(decision.tier.value, str(rule.policy_set), str(rule.policy), rule.rule)
    if decision.reason is Reason.ISOLATED:
        return RuleRef("application", None, "application-default-deny", None)
    return RuleRef("posture", None, "default-posture", None)
