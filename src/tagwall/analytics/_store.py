"""``FlowStore``: flow records in one DuckDB file, written by one thread, read by any.

This module is the store's public face: opening a file (schema and upgrades, ``_schema.py``
says the layout), the endpoints and rules the rows point into, ``append``, hand-offs to the
writer thread (``flush``, agent progress, retention, ``close``) and the queries.  The writer
thread itself — flushes, day tables, rollups, retention and maintenance — is ``_writer.py``.

Write path: ``append`` enriches in the caller's thread (endpoint ids, rule ids, Arrow
columns: no per-record Python) and queues the rows for the writer thread.  ``flush`` and
``close`` return once everything accepted before them is committed.  Every write (DDL,
retention, maintenance) runs on the writer thread, so writes never conflict; queries use their
own cursors on the same database instance and read the last committed state (DuckDB is MVCC),
so they never block ingest.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ..errors import StoreError
from ..model import Config, Tags
from ._batch import COLUMNS, FlowBatch, RuleRef
from ._enrich import Endpoint, Endpoints
from ._filters import FilterError, FlowFilter, Metric, check_count, check_group_type
from ._queries import Query, flows_query, graph_query, top_talkers_query, violations_query
from ._results import (
    FlowRecord,
    Graph,
    Talker,
    Violation,
    flow_record,
    graph_of,
    talker_of,
    violation_of,
)
from ._schema import DAY_MS, ROLLUP_BUCKET_MS, SCHEMA, day_of, day_table, view_sql
from ._writer import STOP, Call, Rows, Writer
from .collectors import SyslogMessage

__all__ = ["FlowStore", "StoreStatistics"]

_EVERY_FLOW = FlowFilter()
_RULE_COLUMNS = ("src_rule", "dst_rule", "src_audit_rule", "dst_audit_rule")


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    stored_rows: int  # flow rows committed by this FlowStore object since it opened
    batches: int  # non-empty batches accepted
    pending_rows: int  # accepted, not yet committed
    dropped_rows: int  # decoders' drops (FlowBatch.dropped) plus rows append_nowait refused
    messages: int  # syslog messages committed
    flushes: int
    failed_flushes: int  # flushes that raised; their rows stay pending and are retried


class FlowStore(Writer):
    """Flow records, endpoints, rules, rollups and syslog messages in the DuckDB file ``path``.

    Raw flows are kept ``retention_days`` whole UTC days (a day goes once all of it is older),
    rollups ``rollup_retention_days``.  Maintenance (retention, rollup merging) runs on the
    writer every ``maintenance_interval_s`` of ``clock`` (None: only when
    ``enforce_retention`` is called).  ``append`` waits while ``max_pending_rows`` are
    pending; ``append_nowait`` refuses instead and counts the rows as dropped.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_days: int = 30,
        rollup_retention_days: int = 400,
        flush_rows: int = 200_000,
        flush_interval_s: float = 1.0,
        max_pending_rows: int = 2_000_000,
        maintenance_interval_s: float | None = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days < 1 or rollup_retention_days < retention_days:
            raise ValueError(
                f"retention_days={retention_days}, rollup_retention_days="
                f"{rollup_retention_days}: want 1 <= retention_days <= rollup_retention_days"
            )
        self._retention_ms = retention_days * DAY_MS
        self._rollup_retention_ms = rollup_retention_days * DAY_MS
        self._flush_rows = flush_rows
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending_rows
        self._maintenance_s = maintenance_interval_s
        self._clock = clock
        self._db = duckdb.connect(str(path))
        for statement in SCHEMA:
            self._db.execute(statement)
        tables = self._db.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        self._days = {d for (name,) in tables if (d := day_of(name)) is not None}
        # Files written before flows had ``via`` get it (NULL): the view needs one shape.
        for table in ["flows_template", *(day_table(d) for d in self._days)]:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS via VARCHAR")
        self._db.execute(view_sql(self._days))
        known = self._db.execute(
            "SELECT id, workload, project, tags FROM endpoints ORDER BY id"
        ).fetchall()
        self._known = [Endpoint(i, w, p, Tags.of(t)) for i, w, p, t in known]
        self._endpoints: Endpoints | None = None
        rules = self._db.execute("SELECT tier, policy_set, policy, rule FROM rules ORDER BY id")
        # Invariant: _rules[i] has id i + 1; the first _rules_stored are in the database.
        self._rules = [RuleRef(*row) for row in rules.fetchall()]
        self._rule_ids = {r: i + 1 for i, r in enumerate(self._rules)}
        self._rules_stored = len(self._rules)
        self._endpoints_stored = len(self._known)
        # Merge partial rollup rows from two buckets back on the first maintenance run.
        today = int(clock() * 1000) // ROLLUP_BUCKET_MS * ROLLUP_BUCKET_MS
        self._merged_until_ms = today - 2 * ROLLUP_BUCKET_MS
        self._lock = threading.Condition()  # guards the counters below and _rules
        self._closed = False
        self._unsaved = 0  # rows the last flush before closing failed to insert
        self._pending = 0
        self._stored = self._batches = self._dropped = self._messages = 0
        self._flushes = self._failed = 0
        self._queue: queue.SimpleQueue[Rows | Call | object] = queue.SimpleQueue()
        self._writer = self._db.cursor()
        self._thread = threading.Thread(target=self._run, name="flow-store", daemon=True)
        self._thread.start()

    # -- endpoints and the write path ---------------------------------------------------------

    def endpoints(self, config: Config) -> Endpoints:
        """This store's ``Endpoints``, seeded with its persisted table, updated to ``config``.

        Call it on every revision (it updates the same object); ``append`` takes only it.
        """
        with self._lock:
            if self._endpoints is None:
                self._endpoints = Endpoints(config, self._known)
                return self._endpoints
        self._endpoints.update(config)
        return self._endpoints

    def append(self, batch: FlowBatch, endpoints: Endpoints) -> None:
        """Accept ``batch``, waiting while ``max_pending_rows`` rows are pending."""
        self._accept(batch, endpoints, wait=True)

    def append_nowait(self, batch: FlowBatch, endpoints: Endpoints) -> bool:
        """Accept ``batch`` unless that would exceed ``max_pending_rows``; False (and the
        rows counted as dropped) when refused."""
        return self._accept(batch, endpoints, wait=False)

    def _accept(self, batch: FlowBatch, endpoints: Endpoints, *, wait: bool) -> bool:
        if endpoints is not self._endpoints:
            raise ValueError("append: endpoints must be the ones FlowStore.endpoints returned")
        n = len(batch)
        rows = self._arrow(batch, endpoints) if n else None
        with self._lock:
            self._check_open_locked()
            self._dropped += batch.dropped
            while wait and self._pending and self._pending + n > self._max_pending:
                self._lock.wait()
                self._check_open_locked()
            if self._pending and self._pending + n > self._max_pending:
                self._dropped += n
                return False
            if rows is not None:
                self._pending += n
                self._batches += 1
                self._queue.put(Rows(rows))
        return True

    def _arrow(self, batch: FlowBatch, endpoints: Endpoints) -> pa.Table:
        """The batch as the day tables' columns (rule indexes → rule ids, ends → endpoints)."""
        with self._lock:
            ids = [self._rule_ids.get(r) or self._new_rule_locked(r) for r in batch.rules]
        remap = np.array([*ids, 0], np.int32)  # index -1 picks the trailing 0: no rule
        columns = {name: pa.array(batch.columns[name]) for name in COLUMNS}
        for name in _RULE_COLUMNS:
            columns[name] = pa.array(remap[batch.columns[name]])
        c = batch.columns
        columns["src_ep"] = pa.array(endpoints.lookup(c["src_hi"], c["src_lo"]))
        columns["dst_ep"] = pa.array(endpoints.lookup(c["dst_hi"], c["dst_lo"]))
        zeros = pa.array(np.zeros(len(batch), np.int8))
        columns["source"] = pa.DictionaryArray.from_arrays(zeros, [batch.source.value])
        columns["exporter"] = pa.DictionaryArray.from_arrays(zeros, [batch.exporter])
        columns["via"] = (
            pa.nulls(len(batch), pa.string())
            if batch.via is None
            else pa.array(batch.via, pa.string())
        )
        return pa.table(columns)

    def _new_rule_locked(self, rule: RuleRef) -> int:
        self._rules.append(rule)
        self._rule_ids[rule] = len(self._rules)
        return len(self._rules)

    def append_messages(self, messages: Iterable[SyslogMessage]) -> None:
        """Accept syslog lines that carry no flow; stored with the next flush."""
        items = list(messages)
        if not items:
            return
        table = pa.table(
            {
                name: pa.array([getattr(m, name) for m in items])
                for name in SyslogMessage.__dataclass_fields__
            }
        )
        with self._lock:
            self._check_open_locked()
            self._queue.put(Rows(pa.table({}), table))

    def _check_open_locked(self) -> None:
        if self._closed:
            raise StoreError("the flow store is closed")

    # -- hand-offs to the writer thread (``_writer.py``) ---------------------------------------

    def flush(self) -> None:
        """Return once every row accepted before this call is committed.  Raises
        ``StoreError`` when the insert fails (the rows stay pending and are retried)."""
        self._call(lambda: None)

    def agent_progress(self) -> dict[tuple[str, str], int]:
        """(host, spool identity) → the last report sequence number stored."""
        rows = self._call(
            lambda: self._writer.execute(
                "SELECT host, spool, stored_through FROM agent_progress"
            ).fetchall()
        )
        assert isinstance(rows, list)
        return {(host, spool): seq for host, spool, seq in rows}

    def commit_agent_progress(self, host: str, spool: str, stored_through: int) -> None:
        """Commit every row accepted before this call, then record that ``host``'s spool
        ``spool`` is stored up to ``stored_through`` (a crash between the two stores that
        batch twice on its resend, never loses it)."""
        self._call(
            lambda: self._writer.execute(
                "INSERT OR REPLACE INTO agent_progress VALUES (?, ?, ?)",
                [host, spool, stored_through],
            )
        )

    def enforce_retention(self, now_ms: int) -> tuple[str, ...]:
        """Drop the raw days, rollup days and messages that retention lets go as of
        ``now_ms``, merge finished days' partial rollups; the dropped day tables' names."""
        result = self._call(lambda: self._maintain(now_ms))
        assert isinstance(result, tuple)
        return result

    def close(self) -> None:
        """Commit everything accepted, stop the writer and close the file (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._queue.put(STOP)
        self._thread.join()
        self._writer.close()
        self._db.close()
        if self._unsaved:
            raise StoreError(f"flow store closed with {self._unsaved} rows it could not insert")

    def _call(self, fn: Callable[[], object]) -> object:
        call = Call(fn, threading.Event())
        with self._lock:
            self._check_open_locked()
            self._queue.put(call)
        call.done.wait()
        if call.error is not None:
            raise StoreError(f"flow store: {call.error}") from call.error
        return call.result

    # -- queries (any thread, own cursor) -----------------------------------------------------

    def _rows(self, query: Query) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open_locked()
            cursor = self._db.cursor()
        try:
            return cursor.execute(query.sql, list(query.params)).fetchall()
        finally:
            cursor.close()

    def flows(self, filter: FlowFilter | None = None, limit: int = 100) -> list[FlowRecord]:
        """The newest ``limit`` (1-10,000) flows that ``filter`` picks, newest first."""
        query = flows_query(filter or _EVERY_FLOW, check_count("limit", limit, 10_000))
        return [flow_record(row) for row in self._rows(query)]

    def top_talkers(
        self,
        by: str = "workload",
        filter: FlowFilter | None = None,
        n: int = 10,
        metric: Metric | str = Metric.BYTES,
        *,
        use_rollups: bool = True,
    ) -> list[Talker]:
        """The ``n`` (1-1,000) workloads or values of tag type ``by`` with the most traffic."""
        if isinstance(metric, str):
            metric = _metric(metric)
        by = check_group_type("by", by)
        query = top_talkers_query(
            by, filter or _EVERY_FLOW, check_count("n", n, 1_000), metric, allow_rollup=use_rollups
        )
        return [talker_of(row) for row in self._rows(query)]

    def graph(
        self, by: Sequence[str], filter: FlowFilter | None = None, *, use_rollups: bool = True
    ) -> Graph:
        """Traffic between groups of endpoints, a group per tuple of values of ``by``."""
        types = [check_group_type(f"by[{i}]", t) for i, t in enumerate(by)]
        if not types:
            raise FilterError("by", list(by), "names no tag type")
        query = graph_query(types, filter or _EVERY_FLOW, allow_rollup=use_rollups)
        return graph_of(types, self._rows(query), query.rollup)

    def violations(self, filter: FlowFilter | None = None, limit: int = 100) -> list[Violation]:
        """Denied and would-deny flows by violator and deciding rule, most flows first."""
        query = violations_query(filter or _EVERY_FLOW, check_count("limit", limit, 10_000))
        return [violation_of(row) for row in self._rows(query)]

    def statistics(self) -> StoreStatistics:
        with self._lock:
            return StoreStatistics(
                self._stored,
                self._batches,
                self._pending,
                self._dropped,
                self._messages,
                self._flushes,
                self._failed,
            )


def _metric(text: str) -> Metric:
    try:
        return Metric(text)
    except ValueError:
        raise FilterError("metric", text, "is not a metric", [m.value for m in Metric]) from None
