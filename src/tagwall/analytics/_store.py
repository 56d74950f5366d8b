"""``FlowStore``: flow records in one DuckDB file, written by one thread, read by any.

Layout (one database file):

* ``flows_dYYYYMMDD``: the flows whose ``start_ms`` falls on that UTC day, in arrival order;
  the view ``flows`` is their ``UNION ALL`` (plus the empty ``flows_template``).  Retention is
  ``DROP TABLE`` of whole days.  Measured here with 10M rows over 30 days: after dropping
  the oldest day, appending a 1M-row day grew the file by 2.4 MB (the freed blocks were
  reused), while ``DELETE`` of that day from one big table left partly deleted row groups
  behind and the same append grew it by 9.2 MB; both answered a one-day query in 23-28 ms
  (zone maps on ``start_ms``) and the whole range in 0.9-1.1 s.
* ``flows_rollup``: the daily rollup (``ROLLUP_SELECT``).  Each flush inserts the rollup of
  its rows in the same transaction as the rows, so rollup and raw flows always agree; partial
  rows of one day are merged by maintenance once the day is over.  Kept
  ``rollup_retention_days`` (longer than the raw flows).
* ``endpoints(id, workload, project, tags)`` and ``rules(id, tier, policy_set, policy, rule)``:
  append-only dictionaries the id columns point into (id 0: none).  A flush inserts the new
  entries before the rows that use them, in the same transaction.
* ``messages``: syslog lines that carry no flow.

Write path: ``append`` enriches in the caller's thread (endpoint ids, rule ids, Arrow
columns: no per-record Python) and queues the rows; the writer thread gathers queued rows and
inserts them with one ``INSERT … SELECT`` per day touched once ``flush_rows`` are pending or
``flush_interval_s`` after the oldest arrived.  ``flush`` and ``close`` return once everything
accepted before them is committed.  Every write (DDL, retention, maintenance) runs on the
writer thread, so writes never conflict; queries use their own cursors on the same database
instance and read the last committed state (DuckDB is MVCC), so they never block ingest.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ..errors import StoreError
from ..model import Config, Tags
from ._batch import COLUMNS, FlowBatch, RuleRef
from ._enrich import Endpoint, Endpoints
from ._queries import (
    ROLLUP_BUCKET_MS,
    ROLLUP_COUNTS,
    ROLLUP_SELECT,
    FilterError,
    FlowFilter,
    FlowRecord,
    Graph,
    Metric,
    Query,
    Talker,
    Violation,
    check_count,
    check_group_type,
    flow_record,
    flows_query,
    graph_of,
    graph_query,
    talker_of,
    top_talkers_query,
    violation_of,
    violations_query,
)
from .collectors import SyslogMessage

__all__ = ["FlowStore", "StoreStatistics"]

DAY_MS = 86_400_000
log = logging.getLogger("tagwall.analytics")

_EVERY_FLOW = FlowFilter()
_SQL_TYPES = {"int64": "BIGINT", "uint64": "UBIGINT", "int32": "INTEGER", "uint8": "UTINYINT"}
_SQL_TYPES["uint16"] = "USMALLINT"
_RULE_COLUMNS = ("src_rule", "dst_rule", "src_audit_rule", "dst_audit_rule")
_FLOW_DDL = ", ".join(
    [f"{name} {_SQL_TYPES[dtype.name]}" for name, dtype in COLUMNS.items()]
    + ["src_ep INTEGER", "dst_ep INTEGER", "source VARCHAR", "exporter VARCHAR", "via VARCHAR"]
)
_DAY_TABLE = re.compile(r"flows_d(\d{8})")
_ROLLUP_KEY = "bucket_ms BIGINT, src_ep INTEGER, dst_ep INTEGER, proto UTINYINT, dst_port USMALLINT"
_SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS flows_template ({_FLOW_DDL})",
    "CREATE TABLE IF NOT EXISTS endpoints (id INTEGER, workload VARCHAR, project VARCHAR, "
    "tags MAP(VARCHAR, VARCHAR[]))",
    "CREATE TABLE IF NOT EXISTS rules (id INTEGER, tier VARCHAR, policy_set VARCHAR, "
    "policy VARCHAR, rule VARCHAR)",
    f"CREATE TABLE IF NOT EXISTS flows_rollup ({_ROLLUP_KEY}, "
    + ", ".join(f"{c} UBIGINT" for c in ROLLUP_COUNTS)
    + ")",
    "CREATE TABLE IF NOT EXISTS messages (received_ms BIGINT, exporter VARCHAR, "
    "facility UTINYINT, severity UTINYINT, timestamp_ms BIGINT, hostname VARCHAR, "
    "app VARCHAR, text VARCHAR)",
    # How far each agent's spool (host, spool identity) is stored: agents' reports are
    # numbered, so a batch sent again after a lost answer or a restart is stored once.
    "CREATE TABLE IF NOT EXISTS agent_progress (host VARCHAR, spool VARCHAR, "
    "stored_through BIGINT, PRIMARY KEY (host, spool))",
]


def _day_table(day: int) -> str:
    """``flows_dYYYYMMDD`` of day number ``day`` (days since the epoch, UTC)."""
    return "flows_d" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def _day_of(table: str) -> int | None:
    match = _DAY_TABLE.fullmatch(table)
    if match is None:
        return None
    moment = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(moment.timestamp()) // 86_400


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    stored_rows: int  # flow rows committed by this FlowStore object since it opened
    batches: int  # non-empty batches accepted
    pending_rows: int  # accepted, not yet committed
    dropped_rows: int  # decoders' drops (FlowBatch.dropped) plus rows append_nowait refused
    messages: int  # syslog messages committed
    flushes: int
    failed_flushes: int  # flushes that raised; their rows stay pending and are retried


@dataclass(frozen=True, slots=True)
class _Rows:
    table: pa.Table
    messages: pa.Table | None = None


@dataclass(slots=True)
class _Call:
    """Work for the writer thread; ``done`` is set once ``result`` or ``error`` is."""

    fn: Callable[[], object]
    done: threading.Event
    result: object = None
    error: BaseException | None = None


_STOP = object()


class FlowStore:
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
        for statement in _SCHEMA:
            self._db.execute(statement)
        tables = self._db.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        self._days = {d for (name,) in tables if (d := _day_of(name)) is not None}
        # Files written before flows had ``via`` get it (NULL): the view needs one shape.
        for table in ["flows_template", *(_day_table(d) for d in self._days)]:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS via VARCHAR")
        self._db.execute(self._view_sql(self._days))
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
        self._queue: queue.SimpleQueue[_Rows | _Call | object] = queue.SimpleQueue()
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
                self._queue.put(_Rows(rows))
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
            self._queue.put(_Rows(pa.table({}), table))

    def _check_open_locked(self) -> None:
        if self._closed:
            raise StoreError("the flow store is closed")

    # -- the writer thread --------------------------------------------------------------------

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
        self._queue.put(_STOP)
        self._thread.join()
        self._writer.close()
        self._db.close()
        if self._unsaved:
            raise StoreError(f"flow store closed with {self._unsaved} rows it could not insert")

    def _call(self, fn: Callable[[], object]) -> object:
        call = _Call(fn, threading.Event())
        with self._lock:
            self._check_open_locked()
            self._queue.put(call)
        call.done.wait()
        if call.error is not None:
            raise StoreError(f"flow store: {call.error}") from call.error
        return call.result

    def _run(self) -> None:
        pending: list[_Rows] = []
        rows = 0
        deadline: float | None = None
        next_maintenance = (
            None if self._maintenance_s is None else time.monotonic() + self._maintenance_s
        )
        while True:
            wakes = [t for t in (deadline, next_maintenance) if t is not None]
            timeout = max(0.0, min(wakes) - time.monotonic()) if wakes else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            # Take the rows queued behind it too: under load one flush inserts them all,
            # and DuckDB's insert uses more cores and commits less often for a large batch.
            while isinstance(item, _Rows):
                pending.append(item)
                rows += item.table.num_rows
                deadline = deadline or time.monotonic() + self._flush_interval_s
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            due = deadline is not None and time.monotonic() >= deadline
            if item is _STOP or isinstance(item, _Call) or rows >= self._flush_rows or due:
                try:
                    self._flush(pending)
                    pending, rows, deadline = [], 0, None
                except Exception as exc:  # retried at the next deadline; flush() reports it
                    deadline = time.monotonic() + self._flush_interval_s
                    if isinstance(item, _Call):
                        item.error = exc
                        item.done.set()
                        continue
            if isinstance(item, _Call):
                try:
                    item.result = item.fn()
                except Exception as exc:
                    item.error = exc
                item.done.set()
            if item is _STOP:
                self._unsaved = rows
                return
            if next_maintenance is not None and time.monotonic() >= next_maintenance:
                try:
                    self._maintain(int(self._clock() * 1000))
                except Exception:
                    log.exception("flow store maintenance failed; retried next interval")
                next_maintenance = time.monotonic() + (self._maintenance_s or 0.0)

    def _flush(self, pending: list[_Rows]) -> None:
        """Insert ``pending`` in one transaction: new endpoints and rules, the rows of each
        day, their rollup, messages.  On failure nothing is committed and the counters stay."""
        if not pending:
            return
        tables = [p.table for p in pending if p.table.num_rows]
        messages = [p.messages for p in pending if p.messages is not None]
        with self._lock:
            rules = self._rules[self._rules_stored :]
        endpoints = [] if self._endpoints is None else self._endpoints.since(self._endpoints_stored)
        w = self._writer
        w.begin()
        try:
            self._insert(w, "endpoints", _endpoints_table(endpoints))
            self._insert(w, "rules", _rules_table(rules, self._rules_stored))
            flows = pa.concat_tables(tables) if tables else None
            created = set() if flows is None else self._insert_flows(w, flows)
            for table in messages:
                self._insert(w, "messages", table)
            w.commit()
        except Exception:
            w.rollback()
            with self._lock:
                self._failed += 1
            raise
        self._days |= created
        self._endpoints_stored += len(endpoints)
        n = 0 if flows is None else flows.num_rows
        with self._lock:
            self._rules_stored += len(rules)
            self._pending -= n
            self._stored += n
            self._messages += sum(t.num_rows for t in messages)
            self._flushes += 1
            self._lock.notify_all()

    @staticmethod
    def _insert(w: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
        if rows.num_rows:
            w.register("pending", rows)
            w.execute(f"INSERT INTO {table} SELECT * FROM pending")  # table: our own names
            w.unregister("pending")

    def _insert_flows(self, w: duckdb.DuckDBPyConnection, rows: pa.Table) -> set[int]:
        """Insert ``rows`` into their day tables and their rollup; the days it created (the
        caller adds them to ``_days`` once the transaction commits)."""
        days = rows.column("start_ms").to_numpy() // DAY_MS
        touched = np.unique(days).tolist()
        created = set(touched) - self._days
        for day in created:
            w.execute(f"CREATE TABLE IF NOT EXISTS {_day_table(day)} ({_FLOW_DDL})")
        if created:
            w.execute(self._view_sql(self._days | created))
        for day in touched:
            part = rows if len(touched) == 1 else rows.filter(pa.array(days == day))
            self._insert(w, _day_table(day), part)
        w.register("pending", rows)
        w.execute(f"INSERT INTO flows_rollup {ROLLUP_SELECT}")
        w.unregister("pending")
        return created

    @staticmethod
    def _view_sql(days: Iterable[int]) -> str:
        parts = ["SELECT * FROM flows_template"]
        parts += [f"SELECT * FROM {_day_table(day)}" for day in sorted(days)]
        return "CREATE OR REPLACE VIEW flows AS " + " UNION ALL ".join(parts)

    # -- maintenance (writer thread) ----------------------------------------------------------

    def _maintain(self, now_ms: int) -> tuple[str, ...]:
        """Retention and rollup merging as of ``now_ms``; see ``enforce_retention``."""
        raw_cutoff = now_ms - self._retention_ms
        expired = sorted(d for d in self._days if (d + 1) * DAY_MS <= raw_cutoff)
        w = self._writer
        w.begin()
        try:
            if expired:
                w.execute(self._view_sql(self._days - set(expired)))
                for day in expired:
                    w.execute(f"DROP TABLE {_day_table(day)}")
            w.execute("DELETE FROM messages WHERE received_ms < ?", [raw_cutoff])
            w.execute(
                "DELETE FROM flows_rollup WHERE bucket_ms < ?",
                [now_ms - self._rollup_retention_ms],
            )
            merge_until = now_ms // ROLLUP_BUCKET_MS * ROLLUP_BUCKET_MS  # today is not over
            if merge_until > self._merged_until_ms:
                self._merge_rollups_locked(w, self._merged_until_ms, merge_until)
            w.commit()
        except Exception:
            w.rollback()
            raise
        self._days -= set(expired)
        self._merged_until_ms = max(self._merged_until_ms, merge_until)
        return tuple(_day_table(day) for day in expired)

    @staticmethod
    def _merge_rollups_locked(w: duckdb.DuckDBPyConnection, since_ms: int, until_ms: int) -> None:
        """One row per rollup key for the buckets in [since_ms, until_ms) (caller holds the
        writer's transaction)."""
        sums = ", ".join(f"sum({c})::UBIGINT" for c in ROLLUP_COUNTS)
        where = "WHERE bucket_ms >= ? AND bucket_ms < ?"
        w.execute(
            "CREATE TEMP TABLE merged AS SELECT bucket_ms, src_ep, dst_ep, proto, dst_port, "
            f"{sums} FROM flows_rollup {where} GROUP BY ALL",
            [since_ms, until_ms],
        )
        w.execute(f"DELETE FROM flows_rollup {where}", [since_ms, until_ms])
        w.execute("INSERT INTO flows_rollup SELECT * FROM merged")
        w.execute("DROP TABLE merged")

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


def _endpoints_table(endpoints: Sequence[Endpoint]) -> pa.Table:
    tags = pa.map_(pa.string(), pa.list_(pa.string()))
    return pa.table(
        {
            "id": pa.array([e.id for e in endpoints], pa.int32()),
            "workload": pa.array([e.workload for e in endpoints], pa.string()),
            "project": pa.array([e.project for e in endpoints], pa.string()),
            "tags": pa.array(
                [[(k, sorted(v)) for k, v in e.tags.items()] for e in endpoints], tags
            ),
        }
    )


def _rules_table(rules: Sequence[RuleRef], first_id: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(first_id + 1, first_id + 1 + len(rules)), pa.int32()),
            **{
                name: pa.array([getattr(r, name) for r in rules], pa.string())
                for name in ("tier", "policy_set", "policy", "rule")
            },
        }
    )
