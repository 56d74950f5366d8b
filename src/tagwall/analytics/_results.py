"""The shapes of the answers to flow queries, and the parsers that build them from the rows of
the queries in ``_queries.py`` (one parser per query, which names its row layout).  Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._batch import Verdict, ip_text

__all__ = [
    "Decision",
    "FlowRecord",
    "FlowSide",
    "Graph",
    "GraphEdge",
    "Talker",
    "Violation",
    "flow_record",
    "graph_of",
    "talker_of",
    "violation_of",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """What decided at one end (a ``rules`` row); ``rule`` is None for a default."""

    tier: str
    policy_set: str | None
    policy: str | None
    rule: str | None


def _decision(tier: str | None, *rest: str | None) -> Decision | None:
    return None if tier is None else Decision(tier, *rest)


def _verdict_name(code: int) -> str:
    return Verdict(code).name.lower().replace("_", "-")


def _tags(raw: Mapping[str, list[str]] | None) -> dict[str, list[str]]:
    return {} if raw is None else {k: sorted(v) for k, v in sorted(raw.items())}


@dataclass(frozen=True, slots=True)
class FlowSide:
    """One end of a stored flow, with the workload and tags it had when the flow arrived."""

    address: str
    port: int
    workload: str | None
    project: str | None
    tags: dict[str, list[str]]
    verdict: str  # none | allow | deny
    decided_by: Decision | None
    audit: str  # none | would-allow | would-deny
    audit_by: Decision | None


@dataclass(frozen=True, slots=True)
class FlowRecord:
    start_ms: int
    end_ms: int
    proto: int
    source: str
    exporter: str
    packets: int
    bytes: int
    rpackets: int
    rbytes: int
    src: FlowSide
    dst: FlowSide
    via: str | None = None  # the service instances that carried it: "fw-1/fw-a", hops by ","

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flow_record(row: Sequence[Any]) -> FlowRecord:
    """A row of :func:`flows_query`."""
    sides = []
    for offset in (9, 17):
        hi, lo, port, workload, project, tags, verdict, audit = row[offset : offset + 8]
        rules = 25 + (0 if offset == 9 else 4)
        sides.append(
            FlowSide(
                ip_text(hi, lo),
                port,
                workload,
                project,
                _tags(tags),
                _verdict_name(verdict),
                _decision(*row[rules : rules + 4]),
                _verdict_name(audit),
                _decision(*row[rules + 8 : rules + 12]),
            )
        )
    start_ms, end_ms, proto, source, exporter, packets, bytes_, rpackets, rbytes = row[:9]
    return FlowRecord(
        start_ms,
        end_ms,
        proto,
        source,
        exporter,
        packets,
        bytes_,
        rpackets,
        rbytes,
        sides[0],
        sides[1],
        row[41],
    )


@dataclass(frozen=True, slots=True)
class GraphEdge:
    src: tuple[str, ...]
    dst: tuple[str, ...]
    flows: int
    bytes: int
    allowed: int
    denied: int
    would_deny: int


@dataclass(frozen=True, slots=True)
class Graph:
    """Nodes are label tuples, one label per type of ``by``; see ``_NODES`` for labels."""

    by: tuple[str, ...]
    nodes: tuple[tuple[str, ...], ...]
    edges: tuple[GraphEdge, ...]
    rollup: bool  # the daily rollup answered part of the range

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def graph_of(by: Sequence[str], rows: Sequence[Sequence[Any]], rollup: bool) -> Graph:
    edges = tuple(GraphEdge(tuple(r[0]), tuple(r[1]), *map(int, r[2:])) for r in rows)
    nodes = sorted({e.src for e in edges} | {e.dst for e in edges})
    return Graph(tuple(by), tuple(nodes), edges, rollup)


@dataclass(frozen=True, slots=True)
class Talker:
    label: str  # a workload name or tag value; 'external' / 'unknown' as in graph nodes
    flows: int
    bytes: int


def talker_of(row: Sequence[Any]) -> Talker:
    return Talker(row[0], int(row[1]), int(row[2]))


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # deny | would-deny
    violator: str  # the source workload's name, else the source address
    workload: str | None
    project: str | None
    address: str | None  # set iff workload is None
    decided_by: Decision | None
    flows: int
    bytes: int
    first_seen_ms: int  # earliest start
    last_seen_ms: int  # latest end

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def violation_of(row: Sequence[Any]) -> Violation:
    kind, workload, project, hi, lo = row[:5]
    address = None if workload is not None else ip_text(hi, lo)
    return Violation(
        kind,
        workload if workload is not None else str(address),
        workload,
        project,
        address,
        _decision(*row[5:9]),
        int(row[9]),
        int(row[10]),
        int(row[11]),
        int(row[12]),
    )
