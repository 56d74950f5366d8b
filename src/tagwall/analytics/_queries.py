"""The questions operators ask of stored flows, as SQL with bound parameters, and the shapes of
the answers.  Pure: builds text and reads result tuples; ``FlowStore`` runs the queries.

Schema read here (written by ``_store.py``): the view ``flows`` (one row per flow record, the
``COLUMNS`` with rule indexes replaced by ``rules`` ids, plus ``src_ep``/``dst_ep`` endpoint ids,
``source`` and ``exporter``), the tables ``endpoints(id, workload, project, tags MAP(VARCHAR,
VARCHAR[]))``, ``rules(id, tier, policy_set, policy, rule)`` and ``flows_rollup``
(:data:`ROLLUP_SELECT`).  Id 0 means "none" in every id column.

Speed: aggregates group by the integer endpoint ids first (millions of rows → one row per
endpoint pair), and only then join the small endpoint table to turn ids into tag values.

Verdict of a flow (DESIGN §2, "Both ends enforce"), from the per-end codes:

* deny: either end denied;  allow: no end denied and at least one end allowed;
* would-deny: an audit policy at either end would deny;  would-allow: an audit policy would
  allow and none would deny.  Collector records carry no verdict and are none of these.

Time ranges are half-open on ``start_ms``: ``since_ms <= start_ms < until_ms``.  A filter
without verdict, policy or rule conditions over a range of at least
:data:`ROLLUP_MIN_SPAN_MS` reads the daily rollup for the whole UTC days inside the range and
the raw flows only for the partial days at its edges; the answer is the same either way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..model import Op, SelectorSyntaxError, parse_selector
from ._batch import Verdict, ip_text

__all__ = [
    "ROLLUP_BUCKET_MS",
    "ROLLUP_COUNTS",
    "ROLLUP_MIN_SPAN_MS",
    "ROLLUP_SELECT",
    "Decision",
    "FilterError",
    "FlowFilter",
    "FlowRecord",
    "FlowSide",
    "FlowVerdict",
    "Graph",
    "GraphEdge",
    "Metric",
    "Query",
    "TagTerm",
    "Talker",
    "Violation",
    "check_count",
    "check_group_type",
    "flow_record",
    "flows_query",
    "graph_of",
    "graph_query",
    "talker_of",
    "top_talkers_query",
    "violation_of",
    "violations_query",
]

# Rollup buckets are UTC days.  Measured (bench/query.py, 10M flows over 7 days, 80k active
# endpoint pairs): hourly buckets kept 7.2M rows (72% of the raw rows) and answered the graph
# slower than the raw flows; a pair is seen every few hours, not every hour, at that density.
ROLLUP_BUCKET_MS = 86_400_000
# A range that covers no whole bucket is answered from the raw flows alone.
ROLLUP_MIN_SPAN_MS = ROLLUP_BUCKET_MS

_DENIED = f"(src_verdict = {Verdict.DENY:d} OR dst_verdict = {Verdict.DENY:d})"
_ALLOWED = (
    f"(NOT {_DENIED} AND (src_verdict = {Verdict.ALLOW:d} OR dst_verdict = {Verdict.ALLOW:d}))"
)
_WOULD_DENY = f"(src_audit = {Verdict.WOULD_DENY:d} OR dst_audit = {Verdict.WOULD_DENY:d})"
_WOULD_ALLOW = (
    f"(NOT {_WOULD_DENY} AND "
    f"(src_audit = {Verdict.WOULD_ALLOW:d} OR dst_audit = {Verdict.WOULD_ALLOW:d}))"
)

# The daily rollup of a relation named ``pending`` holding flow rows; the store inserts it
# into ``flows_rollup`` in the transaction that inserts the rows, so it always agrees with them.
ROLLUP_SELECT = f"""
SELECT start_ms - start_ms % {ROLLUP_BUCKET_MS} AS bucket_ms, src_ep, dst_ep, proto, dst_port,
       count(*) AS flows, sum(packets)::UBIGINT AS packets, sum(bytes)::UBIGINT AS bytes,
       sum(rpackets)::UBIGINT AS rpackets, sum(rbytes)::UBIGINT AS rbytes,
       count(*) FILTER (WHERE {_ALLOWED}) AS allowed,
       count(*) FILTER (WHERE {_DENIED}) AS denied,
       count(*) FILTER (WHERE {_WOULD_DENY}) AS would_deny,
       count(*) FILTER (WHERE {_WOULD_ALLOW}) AS would_allow
FROM pending GROUP BY ALL"""

# The counted columns of flows_rollup, after its key (bucket_ms, src_ep, dst_ep, proto, dst_port).
ROLLUP_COUNTS = (
    *("flows", "packets", "bytes", "rpackets", "rbytes"),
    *("allowed", "denied", "would_deny", "would_allow"),
)


# -- filters ----------------------------------------------------------------------------------


class FilterError(ValueError):
    """A query argument is wrong; the API answers 4xx with these attributes."""

    def __init__(self, field: str, value: object, reason: str, allowed: Sequence[str] = ()) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.allowed = tuple(allowed)
        hint = f" (allowed: {', '.join(self.allowed)})" if self.allowed else ""
        super().__init__(f"flow query field {field!r} = {value!r}: {reason}{hint}")


class FlowVerdict(enum.Enum):
    """A flow's verdict as a filter names it (see the module docstring)."""

    ALLOW = "allow"
    DENY = "deny"
    WOULD_DENY = "would-deny"
    WOULD_ALLOW = "would-allow"


class Metric(enum.Enum):
    """What ranks top talkers."""

    BYTES = "bytes"  # both directions
    FLOWS = "flows"


@dataclass(frozen=True, slots=True)
class TagTerm:
    """``key=value``: the end carries ``value`` among its values of tag type ``key``."""

    key: str
    value: str

    @classmethod
    def parse(cls, field: str, text: str) -> TagTerm:
        try:
            requirements = parse_selector(text).requirements
        except SelectorSyntaxError as exc:
            raise FilterError(field, text, exc.reason) from exc
        if len(requirements) != 1 or requirements[0].op is not Op.IN or "!=" in text:
            raise FilterError(field, text, "expected one tag as type=value")
        (value,) = requirements[0].values
        return cls(requirements[0].key, value)


PROTOCOLS: Mapping[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
WORKLOAD = "workload"  # the group type that names the workload itself


@dataclass(frozen=True, slots=True)
class FlowFilter:
    """Which flows a query reads; every condition given must hold (AND).

    ``tags`` hold at either end, ``src_tags``/``dst_tags`` at that end; ``workload`` names
    either end's workload; ``policy``/``rule`` match the deciding policy or rule at either
    end, enforced or audited; ``port`` is the destination port.  Build it from text with
    :meth:`of`; the constructor checks ranges.  Raises ``FilterError`` naming the field.
    """

    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    tags: tuple[TagTerm, ...] = ()
    src_tags: tuple[TagTerm, ...] = ()
    dst_tags: tuple[TagTerm, ...] = ()
    workload: str | None = None
    verdict: FlowVerdict | None = None
    policy: str | None = None
    rule: str | None = None
    proto: int | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and until < since:
            raise FilterError("until_ms", self.until_ms, "is before since_ms")
        if self.proto is not None and not 0 <= self.proto <= 255:
            raise FilterError("proto", self.proto, "is not an IP protocol number (0-255)")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise FilterError("port", self.port, "is not a port number (0-65535)")

    @classmethod
    def of(
        cls,
        *,
        since_ms: int | str | None = None,
        until_ms: int | str | None = None,
        tags: Sequence[str] = (),
        src_tags: Sequence[str] = (),
        dst_tags: Sequence[str] = (),
        workload: str | None = None,
        verdict: str | None = None,
        policy: str | None = None,
        rule: str | None = None,
        proto: int | str | None = None,
        port: int | str | None = None,
    ) -> FlowFilter:
        """A filter from what a user typed (query parameters, CLI options)."""
        allowed = [v.value for v in FlowVerdict]
        if verdict is not None and verdict not in allowed:
            raise FilterError("verdict", verdict, "is not a verdict", allowed)
        if isinstance(proto, str) and not proto.isdigit():
            if proto.lower() not in PROTOCOLS:
                raise FilterError("proto", proto, "is not a protocol", list(PROTOCOLS))
            proto = PROTOCOLS[proto.lower()]
        return cls(
            since_ms=_integer("since_ms", since_ms),
            until_ms=_integer("until_ms", until_ms),
            tags=tuple(TagTerm.parse("tags", t) for t in tags),
            src_tags=tuple(TagTerm.parse("src_tags", t) for t in src_tags),
            dst_tags=tuple(TagTerm.parse("dst_tags", t) for t in dst_tags),
            workload=workload,
            verdict=None if verdict is None else FlowVerdict(verdict),
            policy=policy,
            rule=rule,
            proto=_integer("proto", proto),
            port=_integer("port", port),
        )

    @property
    def rollup_compatible(self) -> bool:
        """The rollup keeps no verdict codes nor rules, so it answers only filters on
        time, tags, workload, protocol and port."""
        return self.verdict is None and self.policy is None and self.rule is None


def _integer(field: str, value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise FilterError(field, value, "is not an integer") from None


def check_group_type(field: str, name: str) -> str:
    """``name`` if it is ``workload`` or a syntactically valid tag type."""
    if name == WORKLOAD:
        return name
    try:
        requirements = parse_selector(name).requirements
    except SelectorSyntaxError as exc:
        raise FilterError(field, name, exc.reason) from exc
    if len(requirements) != 1 or requirements[0].op is not Op.EXISTS:
        raise FilterError(field, name, "is not a tag type (nor 'workload')")
    return name


def check_count(field: str, value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise FilterError(field, value, f"must be between 1 and {maximum}")
    return value


@dataclass(frozen=True, slots=True)
class Query:
    """SQL with ``?`` placeholders and their values, in order."""

    sql: str
    params: tuple[object, ...]
    rollup: bool = False  # reads flows_rollup for some of the range


_VERDICT_SQL = {
    FlowVerdict.ALLOW: _ALLOWED,
    FlowVerdict.DENY: _DENIED,
    FlowVerdict.WOULD_DENY: _WOULD_DENY,
    FlowVerdict.WOULD_ALLOW: _WOULD_ALLOW,
}


# -- SQL -------------------------------------------------------------------------------


def _conditions(f: FlowFilter) -> tuple[list[str], list[object]]:
    """WHERE terms that need no time column (they hold on raw rows and on rollup rows, except
    verdict, policy and rule, which only raw rows carry)."""
    terms: list[str] = []
    params: list[object] = []
    tag_ids = "(SELECT id FROM endpoints WHERE list_contains(tags[?], ?))"
    for term in f.tags:
        terms.append(f"(src_ep IN {tag_ids} OR dst_ep IN {tag_ids})")
        params += [term.key, term.value, term.key, term.value]
    for column, ends in (("src_ep", f.src_tags), ("dst_ep", f.dst_tags)):
        for term in ends:
            terms.append(f"{column} IN {tag_ids}")
            params += [term.key, term.value]
    if f.workload is not None:
        named = "(SELECT id FROM endpoints WHERE workload = ?)"
        terms.append(f"(src_ep IN {named} OR dst_ep IN {named})")
        params += [f.workload, f.workload]
    if f.proto is not None:
        terms.append("proto = ?")
        params.append(f.proto)
    if f.port is not None:
        terms.append("dst_port = ?")
        params.append(f.port)
    if f.verdict is not None:
        terms.append(_VERDICT_SQL[f.verdict])
    for field, value in (("policy", f.policy), ("rule", f.rule)):
        if value is not None:
            ids = f"(SELECT id FROM rules WHERE {field} = ?)"  # field: one of two literals
            columns = ("src_rule", "dst_rule", "src_audit_rule", "dst_audit_rule")
            terms.append("(" + " OR ".join(f"{c} IN {ids}" for c in columns) + ")")
            params += [value] * len(columns)
    return terms, params


def _raw_where(
    f: FlowFilter, since_ms: int | None, until_ms: int | None
) -> tuple[str, list[object]]:
    terms, params = _conditions(f)
    if since_ms is not None:
        terms.insert(0, "start_ms >= ?")
        params.insert(0, since_ms)
    if until_ms is not None:
        terms.insert(1 if since_ms is not None else 0, "start_ms < ?")
        params.insert(1 if since_ms is not None else 0, until_ms)
    return (" WHERE " + " AND ".join(terms)) if terms else "", params


def _raw_pairs(
    f: FlowFilter, since_ms: int | None, until_ms: int | None
) -> tuple[str, list[object]]:
    where, params = _raw_where(f, since_ms, until_ms)
    sql = f"""SELECT src_ep, dst_ep, count(*) AS flows, sum(bytes + rbytes) AS bytes,
        count(*) FILTER (WHERE {_ALLOWED}) AS allowed, count(*) FILTER (WHERE {_DENIED}) AS denied,
        count(*) FILTER (WHERE {_WOULD_DENY}) AS would_deny
        FROM flows{where} GROUP BY src_ep, dst_ep"""
    return sql, params


def _pairs(f: FlowFilter, allow_rollup: bool) -> tuple[str, list[object], bool]:
    """Per endpoint pair: flows, bytes (both ways), allowed, denied, would_deny counts."""
    first = None if f.since_ms is None else -(-f.since_ms // ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS
    last = None if f.until_ms is None else f.until_ms // ROLLUP_BUCKET_MS * ROLLUP_BUCKET_MS
    span_ok = first is None or last is None or last - first >= ROLLUP_MIN_SPAN_MS
    if not (allow_rollup and f.rollup_compatible and span_ok):
        return (*_raw_pairs(f, f.since_ms, f.until_ms), False)
    parts: list[str] = []
    params: list[object] = []
    if f.since_ms is not None and first is not None and f.since_ms < first:
        sql, p = _raw_pairs(f, f.since_ms, first)
        parts.append(sql)
        params += p
    terms, p = _conditions(f)
    buckets: list[object] = []
    if first is not None:
        terms.insert(0, "bucket_ms >= ?")
        buckets.append(first)
    if last is not None:
        terms.insert(len(buckets), "bucket_ms < ?")
        buckets.append(last)
    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    parts.append(
        "SELECT src_ep, dst_ep, sum(flows) AS flows, sum(bytes + rbytes) AS bytes, "
        "sum(allowed) AS allowed, sum(denied) AS denied, sum(would_deny) AS would_deny "
        f"FROM flows_rollup{where} GROUP BY src_ep, dst_ep"
    )
    params += buckets + p
    if f.until_ms is not None and last is not None and last < f.until_ms:
        sql, p = _raw_pairs(f, last, f.until_ms)
        parts.append(sql)
        params += p
    union = " UNION ALL ".join(f"({part})" for part in parts)
    sql = f"""SELECT src_ep, dst_ep, sum(flows) AS flows, sum(bytes) AS bytes,
        sum(allowed) AS allowed, sum(denied) AS denied, sum(would_deny) AS would_deny
        FROM ({union}) GROUP BY src_ep, dst_ep"""
    return sql, params, True


# Endpoint id → node: one label per requested type ('workload' is the workload's name; a
# many-valued type's values are sorted and joined with ','), 'unknown' where the endpoint has
# no such tag, 'external' for id 0 (no workload).
_NODES = """SELECT id, list_transform(?::VARCHAR[], lambda t: CASE WHEN t = 'workload'
        THEN workload ELSE coalesce(array_to_string(list_sort(tags[t]), ','), 'unknown') END)
        AS node FROM endpoints
    UNION ALL SELECT 0, list_transform(?::VARCHAR[], lambda t: 'external')"""


def graph_query(by: Sequence[str], f: FlowFilter, *, allow_rollup: bool = True) -> Query:
    """Rows ``(src node, dst node, flows, bytes, allowed, denied, would_deny)``; nodes are
    lists of labels, one per type of ``by`` (validated by ``FlowFilter.group_types``)."""
    pairs, params, rollup = _pairs(f, allow_rollup)
    sql = f"""WITH pairs AS ({pairs}), nodes AS ({_NODES})
        SELECT s.node, d.node, sum(p.flows), sum(p.bytes), sum(p.allowed), sum(p.denied),
               sum(p.would_deny)
        FROM pairs p JOIN nodes s ON s.id = p.src_ep JOIN nodes d ON d.id = p.dst_ep
        GROUP BY s.node, d.node ORDER BY s.node, d.node"""
    return Query(sql, (*params, list(by), list(by)), rollup)


def top_talkers_query(
    by: str, f: FlowFilter, n: int, metric: Metric, *, allow_rollup: bool = True
) -> Query:
    """Rows ``(label, flows, bytes)``, the ``n`` largest by ``metric``.  A flow counts once
    for each distinct label at its ends (a flow inside one group counts once)."""
    pairs, params, rollup = _pairs(f, allow_rollup)
    order = {Metric.BYTES: "bytes", Metric.FLOWS: "flows"}[metric]
    sql = f"""WITH pairs AS ({pairs}), nodes AS ({_NODES}),
        ends AS (
            SELECT s.node[1] AS label, p.flows, p.bytes
            FROM pairs p JOIN nodes s ON s.id = p.src_ep
            UNION ALL
            SELECT d.node[1], p.flows, p.bytes
            FROM pairs p JOIN nodes s ON s.id = p.src_ep JOIN nodes d ON d.id = p.dst_ep
            WHERE d.node <> s.node)
        SELECT label, sum(flows) AS flows, sum(bytes) AS bytes FROM ends
        GROUP BY label ORDER BY {order} DESC, label LIMIT ?"""
    return Query(sql, (*params, [by], [by], n), rollup)


_RULE_COLUMNS = "r.tier, r.policy_set, r.policy, r.rule"


def violations_query(f: FlowFilter, limit: int) -> Query:
    """Rows ``(kind, workload, project, hi, lo, tier, policy_set, policy, rule, flows, bytes,
    first_ms, last_ms)``.  Each denied or would-deny flow counts in one group: its violator
    (the source workload, else the source address) and the rule that denied it, at the end
    that denied (the source's first); ``kind`` is 'deny' when enforcement denied it, else
    'would-deny'."""
    where, params = _raw_where(f, f.since_ms, f.until_ms)
    violating = f"({_DENIED} OR {_WOULD_DENY})"
    where = f"{where} AND {violating}" if where else f" WHERE {violating}"
    d = Verdict.DENY.value
    wd = Verdict.WOULD_DENY.value
    sql = f"""WITH v AS (
        SELECT CASE WHEN {_DENIED} THEN 'deny' ELSE 'would-deny' END AS kind, src_ep,
            CASE WHEN src_ep = 0 THEN src_hi END AS hi, CASE WHEN src_ep = 0 THEN src_lo END AS lo,
            CASE WHEN src_verdict = {d} THEN src_rule WHEN dst_verdict = {d} THEN dst_rule
                 WHEN src_audit = {wd} THEN src_audit_rule ELSE dst_audit_rule END AS rule_id,
            count(*) AS flows, sum(bytes + rbytes) AS bytes,
            min(start_ms) AS first_ms, max(end_ms) AS last_ms
        FROM flows{where} GROUP BY ALL)
        SELECT v.kind, e.workload, e.project, v.hi, v.lo, {_RULE_COLUMNS},
            sum(v.flows) AS flows, sum(v.bytes), min(v.first_ms), max(v.last_ms)
        FROM v LEFT JOIN endpoints e ON e.id = v.src_ep LEFT JOIN rules r ON r.id = v.rule_id
        GROUP BY ALL ORDER BY flows DESC, v.kind, e.workload NULLS LAST, v.hi, v.lo LIMIT ?"""
    return Query(sql, (*params, limit))


def flows_query(f: FlowFilter, limit: int) -> Query:
    """The newest ``limit`` flows (by ``start_ms``, newest first), with both ends' endpoint
    and the four deciding rules joined; see :func:`_results.flow_record` for the row."""
    where, params = _raw_where(f, f.since_ms, f.until_ms)
    rule_joins = " ".join(
        f"LEFT JOIN rules {alias} ON {alias}.id = f.{column}"
        for alias, column in (
            ("sr", "src_rule"),
            ("dr", "dst_rule"),
            ("sa", "src_audit_rule"),
            ("da", "dst_audit_rule"),
        )
    )
    rules = ", ".join(
        f"{a}.tier, {a}.policy_set, {a}.policy, {a}.rule" for a in ("sr", "dr", "sa", "da")
    )
    sql = f"""SELECT f.start_ms, f.end_ms, f.proto, f.source, f.exporter,
            f.packets, f.bytes, f.rpackets, f.rbytes,
            f.src_hi, f.src_lo, f.src_port, se.workload, se.project, se.tags,
            f.src_verdict, f.src_audit,
            f.dst_hi, f.dst_lo, f.dst_port, de.workload, de.project, de.tags,
            f.dst_verdict, f.dst_audit, {rules}, f.via
        FROM (SELECT * FROM flows{where} ORDER BY start_ms DESC LIMIT ?) f
        LEFT JOIN endpoints se ON se.id = f.src_ep LEFT JOIN endpoints de ON de.id = f.dst_ep
        {rule_joins}
        ORDER BY f.start_ms DESC, f.end_ms DESC"""
    return Query(sql, (*params, limit))


# -- results ----------------------------------------------------------------------------------


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
