"""The flow store's writer: the one thread that writes the DuckDB file.

Write path: ``FlowStore.append`` queues the rows (``Rows``); the writer thread gathers queued
rows and inserts them with one ``INSERT … SELECT`` per day touched once ``flush_rows`` are
pending or ``flush_interval_s`` after the oldest arrived, creating day tables and extending the
view ``flows`` as days appear, and inserting the rollup of the rows in the same transaction
(layout: ``_schema.py``).  It also runs work handed to it (``Call``: flushes, agent progress,
retention) and maintenance: dropping expired days, rollup days and messages, merging the
partial rollup rows of finished days.  Every write runs here, so writes never conflict.

``Writer`` is ``FlowStore``'s writer half: ``FlowStore.__init__`` sets the attributes declared
on it and starts ``_run`` on a thread; only that thread calls its methods.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ._batch import RuleRef
from ._enrich import Endpoint, Endpoints
from ._schema import (
    DAY_MS,
    FLOW_DDL,
    ROLLUP_BUCKET_MS,
    ROLLUP_COUNTS,
    ROLLUP_SELECT,
    day_table,
    view_sql,
)

__all__ = ["STOP", "Call", "Rows", "Writer"]


@dataclass(frozen=True, slots=True)
class Rows:
    table: pa.Table
    messages: pa.Table | None = None


@dataclass(slots=True)
class Call:
    """Work for the writer thread; ``done`` is set once ``result`` or ``error`` is."""

    fn: Callable[[], object]
    done: threading.Event
    result: object = None
    error: BaseException | None = None


STOP = object()
log = logging.getLogger("tagwall.analytics")


class Writer:
    """The writer thread's half of ``FlowStore`` (see the module docstring)."""

    # Set by FlowStore.__init__ (its invariants are stated there).
    _retention_ms: int
    _rollup_retention_ms: int
    _flush_rows: int
    _flush_interval_s: float
    _maintenance_s: float | None
    _clock: Callable[[], float]
    _days: set[int]
    _endpoints: Endpoints | None
    _endpoints_stored: int
    _rules: list[RuleRef]
    _rules_stored: int
    _merged_until_ms: int
    _lock: threading.Condition
    _unsaved: int
    _pending: int
    _stored: int
    _messages: int
    _flushes: int
    _failed: int
    _queue: queue.SimpleQueue[Rows | Call | object]
    _writer: duckdb.DuckDBPyConnection

    def _run(self) -> None:
        pending: list[Rows] = []
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
            while isinstance(item, Rows):
                pending.append(item)
                rows += item.table.num_rows
                deadline = deadline or time.monotonic() + self._flush_interval_s
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            due = deadline is not None and time.monotonic() >= deadline
            if item is STOP or isinstance(item, Call) or rows >= self._flush_rows or due:
                try:
                    self._flush(pending)
                    pending, rows, deadline = [], 0, None
                except Exception as exc:  # retried at the next deadline; flush() reports it
                    deadline = time.monotonic() + self._flush_interval_s
                    if isinstance(item, Call):
                        item.error = exc
                        item.done.set()
                        continue
            if isinstance(item, Call):
                try:
                    item.result = item.fn()
                except Exception as exc:
                    item.error = exc
                item.done.set()
            if item is STOP:
                self._unsaved = rows
                return
            if next_maintenance is not None and time.monotonic() >= next_maintenance:
                try:
                    self._maintain(int(self._clock() * 1000))
                except Exception:
                    log.exception("flow store maintenance failed; retried next interval")
                next_maintenance = time.monotonic() + (self._maintenance_s or 0.0)

    def _flush(self, pending: list[Rows]) -> None:
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
            w.execute(f"CREATE TABLE IF NOT EXISTS {day_table(day)} ({FLOW_DDL})")
        if created:
            w.execute(view_sql(self._days | created))
        for day in touched:
            part = rows if len(touched) == 1 else rows.filter(pa.array(days == day))
            self._insert(w, day_table(day), part)
        w.register("pending", rows)
        w.execute(f"INSERT INTO flows_rollup {ROLLUP_SELECT}")
        w.unregister("pending")
        return created

    # -- maintenance (writer thread) ----------------------------------------------------------

    def _maintain(self, now_ms: int) -> tuple[str, ...]:
        """Retention and rollup merging as of ``now_ms``; see ``enforce_retention``."""
        raw_cutoff = now_ms - self._retention_ms
        expired = sorted(d for d in self._days if (d + 1) * DAY_MS <= raw_cutoff)
        w = self._writer
        w.begin()
        try:
            if expired:
                w.execute(view_sql(self._days - set(expired)))
                for day in expired:
                    w.execute(f"DROP TABLE {day_table(day)}")
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
        return tuple(day_table(day) for day in expired)

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
