"""Flow reports from what the kernel saw: conntrack entries for allowed flows, NFLOG packets
for denied ones, each turned into ``FlowReport``s that name the deciding rule at the ends this
host enforces.  Pure: events in, reports out (``recorder`` runs the readers).  A batch of
DESTROY events (``conntrack_batch``) comes out as the reports' wire payloads, made from the
decoded columns without a ``FlowReport`` per event: the recorder's steady state, where that
saved ~9 of the ~11 µs a report cost (bench/flow_pipeline.py, runs of 1,024).

Allowed flows (conntrack).  The deciding rules wrote their decision ids into the entry's ``ct
mark`` (``datapath._nft_decisions``); an entry whose mark is 0 was not decided by tagwall (not
a workload's traffic) and is ignored.  A flow is reported, with the packets and bytes since
its previous report:

* when its entry is destroyed (final counters);
* at a snapshot, when TCP has seen a FIN or RST (``TCP_CLOSING_STATES``; the entry itself
  lingers in TIME_WAIT for two minutes), or when it was idle since the previous snapshot, or
  when ``active_timeout_s`` passed since its last report — only if its counters moved.

So a short TCP connection is reported within one snapshot interval of its close, a UDP or ICMP
exchange one interval after it went quiet, and a long transfer every ``active_timeout_s``; the
reports of one flow add up to its counters.  A destroyed entry that was never tracked (it began
before the agent, or more than ``max_flows`` were open) is reported whole at its end.  A flow
whose DESTROY was lost (a receive buffer overrun: the reader does not make the kernel keep
entries for it, see ``_conntrack``) is reported when no snapshot has seen it for
``gone_after_s``, with what the last snapshot counted.

Denied flows (NFLOG).  Each dropped packet names its rule in the prefix (``tw:e:7``).  Packets
of one 5-tuple dropped by one rule are summed into one report, emitted once they paused for
``deny_idle_s`` or after ``active_timeout_s``: a client retrying a refused SYN is one report per
retry burst, not one per packet.

Times are Unix ms; the kernel's conntrack timestamps where it gave them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..control import EndDecision, FlowReport
from ..datapath import DECISION_NONE, CounterKey, parse_log_prefix, split_ct_mark
from ..model import Action, TrafficDirection
from ._ctdecode import (
    TCP_CLOSING_STATES,
    ConntrackBatch,
    ConntrackEvent,
    DestroyColumns,
    EventKind,
    FiveTuple,
)
from ._nflog import NflogRecord

__all__ = ["Decide", "FlowAssembler", "end_decision", "report_payload"]

Decide = Callable[[TrafficDirection, int], EndDecision | None]

_NS_PER_MS = 1_000_000
_ICMP = (1, 58)


def end_decision(key: CounterKey) -> EndDecision:
    """The report form of what one decision id stands for."""
    verdict = "allow" if key.action in (Action.ALLOW, Action.REDIRECT) else "deny"
    tier = key.tier.value if key.tier is not None else "posture"
    if key.policy is None:  # a default: the counter comment names it
        return EndDecision(verdict, tier, None, key.rule, None)
    policy_set = str(key.policy_set) if key.policy_set is not None else None
    return EndDecision(verdict, tier, policy_set, str(key.policy), key.rule)


@dataclass(slots=True)
class _Counters:
    packets: int = 0
    bytes: int = 0
    rpackets: int = 0
    rbytes: int = 0

    @classmethod
    def of(cls, event: ConntrackEvent) -> _Counters:
        return cls(
            event.packets_orig or 0,
            event.bytes_orig or 0,
            event.packets_reply or 0,
            event.bytes_reply or 0,
        )

    def minus(self, other: _Counters) -> _Counters:
        # max(0, …): a counter never shrinks, but an entry re-created under a reused id could.
        return _Counters(
            max(0, self.packets - other.packets),
            max(0, self.bytes - other.bytes),
            max(0, self.rpackets - other.rpackets),
            max(0, self.rbytes - other.rbytes),
        )


@dataclass(slots=True)
class _Tracked:
    flow: FiveTuple
    mark: int
    start_ns: int
    reported: _Counters  # what earlier reports covered
    last_report_ns: int
    seen: _Counters | None = None  # at the previous snapshot
    seen_ns: int = 0
    labels: int = 0  # ct label as last seen: the service workloads carrying the flow

    def since(self) -> int:
        """Where the next report's period starts: the flow's start, or the last report."""
        return self.start_ns if self.reported == _Counters() else self.last_report_ns


@dataclass(slots=True)
class _Denied:
    first_ns: int
    last_ns: int
    packets: int
    bytes: int


class FlowAssembler:
    """Not thread-safe: one caller at a time (the recorder holds a lock)."""

    def __init__(
        self,
        decide: Decide,
        carriers: Callable[[int], tuple[str, ...]] = lambda _labels: (),
        *,
        active_timeout_s: float = 60.0,
        deny_idle_s: float = 2.0,
        max_flows: int = 500_000,
        gone_after_s: float = 30.0,
    ) -> None:
        self._decide = decide
        self._carriers = carriers
        self._active_ns = int(active_timeout_s * 1e9)
        self._deny_idle_ns = int(deny_idle_s * 1e9)
        self._gone_ns = int(gone_after_s * 1e9)
        self._max_flows = max_flows
        self._open: dict[int, _Tracked] = {}
        self._denied: dict[tuple[FiveTuple, TrafficDirection, int], _Denied] = {}
        self.untracked = 0  # flows not tracked because ``max_flows`` were open
        self.ends_lost = 0  # flows that went without a DESTROY (lost in an overrun)
        self.unknown_decisions = 0  # ids the program in force did not know (reported as None)

    @property
    def open_flows(self) -> int:
        return len(self._open)

    # -- conntrack -------------------------------------------------------------------------

    def conntrack(self, event: ConntrackEvent) -> list[FlowReport]:
        if event.mark == 0:
            return []
        if event.kind is EventKind.NEW:
            if len(self._open) >= self._max_flows:
                self.untracked += 1
                return []
            start = event.start_ns or event.observed_ns
            self._open[event.ct_id] = _Tracked(
                event.flow,
                event.mark,
                start,
                _Counters(),
                event.observed_ns,
                None,
                start,
                event.labels,
            )
            return []
        if event.kind is EventKind.DESTROY:
            tracked = self._open.pop(event.ct_id, None)
            counters = _Counters.of(event)
            end_ns = event.stop_ns or event.observed_ns
            if tracked is None:
                start = event.start_ns or end_ns
                return [self._report(event, start, end_ns, counters)]
            delta = counters.minus(tracked.reported)
            if delta == _Counters() and tracked.reported != _Counters():
                return []  # the last report already covered everything
            return [self._report(event, tracked.since(), end_ns, delta)]
        if event.kind is EventKind.SNAPSHOT:
            return self._snapshot(event)
        return []

    def conntrack_batch(self, batch: ConntrackBatch) -> list[bytes]:
        """The ``report_payload``s of the reports ``conntrack`` makes of ``batch.events()``,
        the same ones (and the same counts), without a ``FlowReport`` or a dict per event:
        the DESTROY of a flow not tracked (every connection that began and ended between
        two snapshots, the common case) becomes its payload straight from the columns.
        Reports of distinct flows may come in another order than the events'."""
        ids = batch.ct_ids()
        if len(set(ids)) != len(ids):  # an id twice (reused): one by one, in order
            return [report_payload(r) for e in batch.events() for r in self.conntrack(e)]
        out = [report_payload(r) for _, e in batch.others for r in self.conntrack(e)]
        for group in batch.groups:
            self._destroyed(group, batch.observed_ns, out)
        return out

    def _destroyed(self, g: DestroyColumns, observed_ns: int, out: list[bytes]) -> None:
        """``conntrack`` of each row of ``g`` (DESTROY events of distinct ids), appended to
        ``out`` as payloads; the untracked ones computed column by column, as
        ``conntrack``/``_report`` would for them (start = the kernel's, else the end; end =
        stop, else observed; counters 0 where absent)."""
        mark = g.columns.get("mark")
        if mark is None or not (decided := mark != 0).any():
            return
        if not decided.all():
            g = g.take(decided)
        if self._open:
            ids = g.values("ct_id", 0)
            tracked = np.fromiter((i in self._open for i in ids), np.bool_, len(ids))
            if tracked.any():
                for event in g.take(tracked).events(observed_ns):
                    out += [report_payload(r) for r in self.conntrack(event)]
                if tracked.all():
                    return
                g = g.take(~tracked)
        n, c = len(g), g.columns
        end = _or(c.get("stop_ns"), observed_ns, n)
        start = _or(c.get("start_ns"), end, n)
        start_ms = (start // _NS_PER_MS).tolist()
        end_ms = (np.maximum(start, end) // _NS_PER_MS).tolist()
        if g.icmp is not None:
            kind = _or(c.get("icmp_type"), 0, n) << np.uint64(8)
            sports, dports = [0] * n, (kind | _or(c.get("icmp_code"), 0, n)).tolist()
        else:
            sports, dports = g.values("sport", 0), g.values("dport", 0)
        marks = c["mark"].astype(np.uint32)
        egress = self._fragments(TrafficDirection.EGRESS, marks >> 16 & 0xFFFF)
        ingress = self._fragments(TrafficDirection.INGRESS, marks & 0xFFFF)
        labels = g.labels()
        via = [""] * n if labels is None else self._via(labels)
        rows = zip(
            start_ms,
            end_ms,
            g.addresses("src"),
            g.addresses("dst"),
            g.values("proto", 0),
            sports,
            dports,
            g.values("packets_orig", 0),
            g.values("bytes_orig", 0),
            g.values("packets_reply", 0),
            g.values("bytes_reply", 0),
            egress,
            ingress,
            via,
            strict=True,
        )
        out += [(_PAYLOAD % row).encode() for row in rows]

    def _fragments(self, direction: TrafficDirection, halves: npt.NDArray[np.integer]) -> list[str]:
        """Each row's decision at one end as JSON, looked up once per distinct id (and
        counted in ``unknown_decisions`` once per row, as ``_lookup`` would)."""
        values = halves.tolist()
        known: dict[int, str] = {}
        for value in set(values):
            found = None if value == DECISION_NONE else self._decide(direction, value)
            if found is None and value != DECISION_NONE:
                self.unknown_decisions += values.count(value)
            known[value] = (
                "null" if found is None else json.dumps(found.to_wire(), separators=_COMPACT)
            )
        return [known[v] for v in values]

    def _via(self, labels: list[int]) -> list[str]:
        known: dict[int, str] = {}
        out = []
        for label in labels:
            text = known.get(label)
            if text is None:
                carriers = self._carriers(label) if label else ()
                text = (
                    ',"via":' + json.dumps(list(carriers), separators=_COMPACT) if carriers else ""
                )
                known[label] = text
            out.append(text)
        return out

    def _snapshot(self, event: ConntrackEvent) -> list[FlowReport]:
        now, counters = event.observed_ns, _Counters.of(event)
        tracked = self._open.get(event.ct_id)
        if tracked is None:
            if len(self._open) >= self._max_flows:
                return []
            start = event.start_ns or now
            tracked = _Tracked(event.flow, event.mark, start, _Counters(), start)
            self._open[event.ct_id] = tracked
        previous, tracked.seen, tracked.seen_ns = tracked.seen, counters, now
        # A restored row learns its flow here; the label grows when a member fails over.
        tracked.flow, tracked.mark, tracked.labels = event.flow, event.mark, event.labels
        if counters == tracked.reported:
            return []
        due = (
            event.tcp_state in TCP_CLOSING_STATES
            or counters == previous
            or now - tracked.last_report_ns >= self._active_ns
        )
        if not due:
            return []
        since, delta = tracked.since(), counters.minus(tracked.reported)
        tracked.reported, tracked.last_report_ns = counters, now
        return [self._report(event, since, now, delta)]

    def _report(
        self, seen: ConntrackEvent | _Tracked, start_ns: int, end_ns: int, c: _Counters
    ) -> FlowReport:
        """The report of ``c`` over [start, end] of the flow ``seen`` (an event, or what was
        last seen of a flow that went without one)."""
        flow, halves = seen.flow, split_ct_mark(seen.mark)
        sport, dport = _ports(flow)
        return FlowReport(
            start_ms=start_ns // _NS_PER_MS,
            end_ms=max(end_ns, start_ns) // _NS_PER_MS,
            src=flow.src,
            dst=flow.dst,
            proto=flow.proto,
            sport=sport,
            dport=dport,
            packets=c.packets,
            bytes=c.bytes,
            rpackets=c.rpackets,
            rbytes=c.rbytes,
            egress=self._lookup(TrafficDirection.EGRESS, halves[TrafficDirection.EGRESS]),
            ingress=self._lookup(TrafficDirection.INGRESS, halves[TrafficDirection.INGRESS]),
            via=self._carriers(seen.labels) if seen.labels else (),
        )

    def _lookup(self, direction: TrafficDirection, decision: int) -> EndDecision | None:
        if decision == DECISION_NONE:
            return None
        found = self._decide(direction, decision)
        if found is None:
            self.unknown_decisions += 1
        return found

    # -- NFLOG -----------------------------------------------------------------------------

    def denied(self, record: NflogRecord) -> None:
        """Count one dropped packet (packets tagwall's rules did not log are ignored)."""
        parsed = parse_log_prefix(record.prefix)
        if parsed is None:
            return
        direction, decision = parsed
        now = record.timestamp_ns or record.observed_ns
        key = (record.flow, direction, decision)
        entry = self._denied.get(key)
        if entry is None:
            self._denied[key] = _Denied(now, now, 1, record.length)
        else:
            entry.last_ns = max(entry.last_ns, now)
            entry.packets += 1
            entry.bytes += record.length

    # -- time ------------------------------------------------------------------------------

    def expire(self, now_ns: int) -> list[FlowReport]:
        """Reports of the denied bursts that are over, and of the flows that are gone without
        a DESTROY: not seen by a snapshot for ``gone_after_s`` (a few snapshot intervals).
        Such a flow is reported with what its last snapshot counted and its report did not
        (nothing counted, if no snapshot saw it), and forgotten."""
        out = [
            self._denied_report(key, self._denied.pop(key))
            for key, entry in list(self._denied.items())
            if now_ns - entry.last_ns >= self._deny_idle_ns
            or now_ns - entry.first_ns >= self._active_ns
        ]
        gone = [
            ct_id
            for ct_id, t in self._open.items()
            if now_ns - max(t.seen_ns, t.last_report_ns) >= self._gone_ns
        ]
        for ct_id in gone:
            t = self._open.pop(ct_id)
            if t.mark == 0:  # restored from an earlier agent and never confirmed: nothing new
                continue
            self.ends_lost += 1
            seen = t.seen or _Counters()
            if seen != t.reported or t.reported == _Counters():
                end = max(t.seen_ns, t.start_ns)
                out.append(self._report(t, t.since(), end, seen.minus(t.reported)))
        return out

    def drain(self) -> list[FlowReport]:
        """Every denied burst still open, reported now (the recorder is stopping).  Open
        allowed flows are not: their entries outlive the agent, and a restarted agent that
        ``restore``s what ``tracked`` returned reports them on, from where this one stopped."""
        out = [self._denied_report(key, entry) for key, entry in self._denied.items()]
        self._denied.clear()
        return out

    # -- across restarts -------------------------------------------------------------------

    def tracked(self) -> list[list[int]]:
        """What was reported of each open flow, as JSON-able rows for ``restore``."""
        return [
            [ct_id, t.start_ns, t.last_report_ns, *_fields(t.reported)]
            for ct_id, t in self._open.items()
            if t.reported != _Counters()
        ]

    def restore(self, rows: list[list[int]], now_ns: int) -> None:
        """Take over what an earlier agent reported (``tracked``) at ``now_ns``; a flow is
        known by its conntrack id, which its next snapshot or its end confirms (the 5-tuple
        and mark come from there; a row no snapshot confirms within ``gone_after_s`` of
        ``now_ns`` is forgotten: its entry went while no agent ran)."""
        for ct_id, start_ns, last_ns, *counters in rows:
            self._open[ct_id] = _Tracked(
                FiveTuple("", "", 0), 0, start_ns, _Counters(*counters), last_ns, None, now_ns
            )

    def _denied_report(
        self, key: tuple[FiveTuple, TrafficDirection, int], entry: _Denied
    ) -> FlowReport:
        flow, direction, decision = key
        sport, dport = _ports(flow)
        end = self._lookup(direction, decision)
        return FlowReport(
            start_ms=entry.first_ns // _NS_PER_MS,
            end_ms=entry.last_ns // _NS_PER_MS,
            src=flow.src,
            dst=flow.dst,
            proto=flow.proto,
            sport=sport,
            dport=dport,
            packets=entry.packets,
            bytes=entry.bytes,
            rpackets=0,
            rbytes=0,
            egress=end if direction is TrafficDirection.EGRESS else None,
            ingress=end if direction is TrafficDirection.INGRESS else None,
        )


def report_payload(report: FlowReport) -> bytes:
    """A report as the spool keeps it and the controller reads it: its wire form as compact
    JSON (``control._flow_reports``)."""
    return json.dumps(report.to_wire(), separators=_COMPACT).encode()


_COMPACT = (",", ":")
# ``report_payload`` of a report, field by field (the dict order of ``FlowReport.to_wire``);
# the last ``%s`` is ``,"via":[...]`` or nothing.  Addresses need no JSON escaping.
_PAYLOAD = (
    '{"start_ms":%d,"end_ms":%d,"src":"%s","dst":"%s","proto":%d,"sport":%d,"dport":%d,'
    '"packets":%d,"bytes":%d,"rpackets":%d,"rbytes":%d,"egress":%s,"ingress":%s%s}'
)


def _fields(c: _Counters) -> list[int]:
    return [c.packets, c.bytes, c.rpackets, c.rbytes]


def _or(
    column: npt.NDArray[np.generic] | None, default: npt.NDArray[np.uint64] | int, n: int
) -> npt.NDArray[np.uint64]:
    """``value or default`` of each of ``n`` rows (``default`` where the field is absent)."""
    if column is None:
        return np.full(n, default, np.uint64) if isinstance(default, int) else default
    values = column.astype(np.uint64)
    return np.where(values != 0, values, default)


def _ports(flow: FiveTuple) -> tuple[int, int]:
    if flow.proto in _ICMP:
        return 0, (flow.icmp_type or 0) << 8 | (flow.icmp_code or 0)
    return flow.sport or 0, flow.dport or 0
