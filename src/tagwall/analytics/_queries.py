"""The questions operators ask of stored flows, as SQL with bound parameters.  Pure: builds
text; ``FlowStore`` runs the queries and ``_results.py`` reads their rows.

Schema read here (laid out in ``_schema.py``, written by ``_writer.py``): the view ``flows``
(one row per flow record, the ``COLUMNS`` with rule indexes replaced by ``rules`` ids, plus
``src_ep``/``dst_ep`` endpoint ids, ``source`` and ``exporter``), the tables
``endpoints(id, workload, project, tags MAP(VARCHAR, VARCHAR[]))``,
``rules(id, tier, policy_set, policy, rule)`` and ``flows_rollup`` (:data:`ROLLUP_SELECT`).
Id 0 means "none" in every id column.

Speed: aggregates group by the integer endpoint ids first (millions of rows → one row per
endpoint pair), and only then join the small endpoint table to turn ids into tag values.

Verdicts and time ranges are as ``_filters.py`` defines them (ranges half-open on
``start_ms``).  A filter without verdict, policy or rule conditions over a range of at least
:data:`ROLLUP_MIN_SPAN_MS` reads the daily rollup (``_schema.py``) for the whole UTC days
inside the range, plus the raw rows not yet rolled up (the view ``flows_unrolled``), and the
raw flows only for the partial days at its edges; the answer is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._batch import Verdict
from ._filters import ALLOWED, DENIED, WOULD_DENY, FlowFilter, Metric, conditions, raw_where
from ._schema import ROLLUP_BUCKET_MS

__all__ = [
    "ROLLUP_MIN_SPAN_MS",
    "Query",
    "flows_query",
    "graph_query",
    "oldest_of_newest_query",
    "top_talkers_query",
    "violations_query",
]

# A range that covers no whole bucket is answered from the raw flows alone.
ROLLUP_MIN_SPAN_MS = ROLLUP_BUCKET_MS


@dataclass(frozen=True, slots=True)
class Query:
    """SQL with ``?`` placeholders and their values, in order.  ``after``: the query runs
    after another in the same snapshot and its first value is the first value of that
    query's single row (``flows_query``)."""

    sql: str
    params: tuple[object, ...]
    rollup: bool = False  # reads flows_rollup for some of the range
    after: bool = False

    def bind(self, previous: Sequence[Sequence[object]]) -> tuple[object, ...]:
        """The values to run with, given the previous query's rows."""
        return (previous[0][0], *self.params) if self.after else self.params


def _raw_pairs(
    f: FlowFilter, since_ms: int | None, until_ms: int | None, relation: str = "flows"
) -> tuple[str, list[object]]:
    where, params = raw_where(f, since_ms, until_ms)
    sql = f"""SELECT src_ep, dst_ep, count(*) AS flows, sum(bytes + rbytes) AS bytes,
        count(*) FILTER (WHERE {ALLOWED}) AS allowed, count(*) FILTER (WHERE {DENIED}) AS denied,
        count(*) FILTER (WHERE {WOULD_DENY}) AS would_deny
        FROM {relation}{where} GROUP BY src_ep, dst_ep"""
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
    terms, p = conditions(f)
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
    # Rows stored but not yet rolled up (``_compact.py``) count from the raw rows.
    sql, p = _raw_pairs(f, first, last, "flows_unrolled")
    parts.append(sql)
    params += p
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
    where, params = raw_where(f, f.since_ms, f.until_ms)
    violating = f"({DENIED} OR {WOULD_DENY})"
    where = f"{where} AND {violating}" if where else f" WHERE {violating}"
    d = Verdict.DENY.value
    wd = Verdict.WOULD_DENY.value
    sql = f"""WITH v AS (
        SELECT CASE WHEN {DENIED} THEN 'deny' ELSE 'would-deny' END AS kind, src_ep,
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


def oldest_of_newest_query(f: FlowFilter, limit: int) -> Query:
    """The ``start_ms`` of the oldest of the newest ``limit`` flows (NULL: none), which
    ``flows_query`` runs after: why two steps, see there."""
    where, params = raw_where(f, f.since_ms, f.until_ms)
    newest = f"SELECT start_ms FROM flows{where} ORDER BY start_ms DESC LIMIT ?"
    sql = f"SELECT min(start_ms) FROM ({newest})"
    return Query(sql, (*params, limit))


def flows_query(f: FlowFilter, limit: int) -> Query:
    """The newest ``limit`` flows (by ``start_ms``, newest first), with both ends' endpoint
    and the four deciding rules joined; see :func:`_results.flow_record` for the row.

    Runs after :func:`oldest_of_newest_query` (``Query.after``), reading only the flows from
    that time on: DuckDB then skips the segments' row groups of earlier times by their
    statistics, where one ``ORDER BY start_ms DESC LIMIT`` read every column of every row
    group (10M flows: 0.2 s in two steps, 1.0 s in one)."""
    where, params = raw_where(f, f.since_ms, f.until_ms)
    where = " WHERE start_ms >= ?" + (" AND " + where.removeprefix(" WHERE ") if where else "")
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
    return Query(sql, (*params, limit), after=True)
