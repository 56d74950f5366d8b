"""The flow store's writer: the one thread that writes the store.

Write path: ``FlowStore.append`` queues the rows (``Rows``); the writer thread gathers queued
rows and stores them once ``flush_rows`` are pending or ``flush_interval_s`` after the oldest
arrived: one segment file per UTC day touched, written and fsynced (``_segments.py``), then
one DuckDB transaction that registers the files and replaces the views ``flows`` and
``flows_unrolled``, with the new endpoints and rules, syslog messages and agents' progress
(layout: ``_schema.py``).  Measured in the ingest benchmark (flushes of ~1M rows): ~150 ns of
the writer's CPU per row for the file, ~10-20 for the transaction.

The daily rollup of the rows is not on this path: ``_compact.py`` aggregates new segments in
the background and hands the result here (``Upkeep._roll_up``: rollup rows inserted and
segments marked rolled up in one transaction); queries count the rows not yet rolled up from the raw
rows (``flows_unrolled``), so every answer is the same before and after.  In the flush it cost
~100-150 ns of CPU per row (DuckDB aggregating the Arrow rows with 30,000 rollup keys per
flush, on two threads), as much as the file.  Retention rolls up an expired segment that is
not yet rolled up before dropping it.

It also runs work handed to it (``Call``: flushes, a compaction's swap, a rollup, retention)
and maintenance every ``maintenance_interval_s``; those changes are ``_upkeep.py``.  Every
write runs here, so writes never conflict.

Agents' progress commits with the rows it covers: ``Rows.progress`` travels in the same
queue item as those rows, so one transaction holds both.  A crash before that commit stores
neither (the agent sends the batch again), after it both (a resend is recognised).

``Writer`` (with ``Upkeep``) is ``FlowStore``'s writer half: ``FlowStore.__init__`` sets the
attributes declared on it and starts ``_run`` on a thread; only that thread calls its
methods.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.compute as pc  # type: ignore[import-untyped]

from ._batch import RuleRef
from ._enrich import Endpoint, Endpoints
from ._schema import (
    DAY_MS,
    view_sql,
)
from ._segments import Segment, SegmentFiles

__all__ = ["STOP", "Call", "Rows", "Writer"]


@dataclass(frozen=True, slots=True)
class Rows:
    """Work for one flush: flow rows, syslog messages, and agents' progress
    ``(host, spool, stored_through)`` to commit together with these rows."""

    table: pa.Table
    messages: pa.Table | None = None
    progress: tuple[str, str, int] | None = None


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
    _segments: dict[str, Segment]
    _files: SegmentFiles
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
    _compactions: int
    _queue: queue.SimpleQueue[Rows | Call | object]
    _writer: duckdb.DuckDBPyConnection
    _wake_compactor: Callable[[], None]

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
            # Take the rows queued behind it too: under load one flush stores them all, in
            # fewer and larger files and with fewer commits.
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
        """Store ``pending``: its segment files, then one transaction with their registration,
        the new endpoints and rules, messages and progress.  On failure nothing is committed,
        the files are deleted and the counters stay."""
        if not pending:
            return
        tables = [p.table for p in pending if p.table.num_rows]
        messages = [p.messages for p in pending if p.messages is not None]
        progress = [p.progress for p in pending if p.progress is not None]
        with self._lock:
            rules = self._rules[self._rules_stored :]
        endpoints = [] if self._endpoints is None else self._endpoints.since(self._endpoints_stored)
        flows = pa.concat_tables(tables) if tables else None
        written: list[Segment] = []
        try:
            if flows is not None:
                written = self._write_segments(flows)
            with self._transaction() as w:
                self._insert(w, "endpoints", _endpoints_table(endpoints))
                self._insert(w, "rules", _rules_table(rules, self._rules_stored))
                segments = self._register(w, added=written) if written else None
                for table in messages:
                    self._insert(w, "messages", table)
                for host, spool, stored_through in progress:
                    w.execute(
                        "INSERT OR REPLACE INTO agent_progress VALUES (?, ?, ?)",
                        [host, spool, stored_through],
                    )
        except Exception:
            self._files.delete(s.name for s in written)
            with self._lock:
                self._failed += 1
            raise
        self._endpoints_stored += len(endpoints)
        n = 0 if flows is None else flows.num_rows
        with self._lock:
            if segments is not None:
                self._segments = segments
            self._rules_stored += len(rules)
            self._pending -= n
            self._stored += n
            self._messages += sum(t.num_rows for t in messages)
            self._flushes += 1
            self._lock.notify_all()
        if written:
            self._wake_compactor()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The writer's connection in a transaction, committed at the end of the block, or
        rolled back (if one was open) when the block raises."""
        w = self._writer
        try:
            w.begin()
            yield w
            self._commit(w)
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # no transaction open (begin failed)
                w.rollback()
            raise

    def _commit(self, w: duckdb.DuckDBPyConnection) -> None:
        """Commit the writer's transaction (its own method: the crash tests stop here)."""
        w.commit()

    def _write_segments(self, rows: pa.Table) -> list[Segment]:
        """One fsynced file per UTC day of ``rows`` (not yet registered)."""
        start = rows.column("start_ms").to_numpy()
        days = start // DAY_MS
        first, last = int(days.min()), int(days.max())
        parts = [(first, rows)] if first == last else _by_day(rows, days)
        written: list[Segment] = []
        try:
            for day, part in parts:
                name = self._files.write(part.to_batches(), part.schema, day)
                low, high = pc.min_max(part.column("start_ms")).values()
                written.append(Segment(name, day, part.num_rows, 0, low.as_py(), high.as_py()))
            self._files.sync()
        except BaseException:
            self._files.delete(s.name for s in written)
            raise
        return written

    def _register(
        self,
        w: duckdb.DuckDBPyConnection,
        *,
        added: Sequence[Segment] = (),
        removed: Sequence[str] = (),
        rolled: Sequence[str] = (),
    ) -> dict[str, Segment]:
        """In the writer's transaction: ``added`` registered, ``removed`` not, ``rolled`` marked
        rolled up, the views over the result; the registered segments as they will be once
        the transaction commits (the caller installs them as ``_segments`` then)."""
        if removed:
            w.execute("DELETE FROM flow_segments WHERE list_contains(?, name)", [list(removed)])
        if rolled:
            w.execute(
                "UPDATE flow_segments SET rolled_up = true WHERE list_contains(?, name)",
                [list(rolled)],
            )
        if added:
            fields = ("name", "day", "rows", "level", "first_ms", "last_ms", "rolled_up")
            table = pa.table({f: [getattr(s, f) for s in added] for f in fields})
            self._insert(w, "flow_segments", table)
        with self._lock:
            after = dict(self._segments)
        for name in removed:
            del after[name]
        for name in rolled:
            after[name] = replace(after[name], rolled_up=True)
        after.update((s.name, s) for s in added)
        every = [self._files.path(n) for n in sorted(after)]
        unrolled = [self._files.path(n) for n in sorted(after) if not after[n].rolled_up]
        for statement in view_sql(self._days, every, unrolled):
            w.execute(statement)
        return after

    @staticmethod
    def _insert(w: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
        if rows.num_rows:
            w.register("pending", rows)
            w.execute(f"INSERT INTO {table} SELECT * FROM pending")  # table: our own names
            w.unregister("pending")

    def _maintain(self, now_ms: int) -> tuple[str, ...]:
        raise NotImplementedError  # Upkeep's (_upkeep.py)


def _by_day(rows: pa.Table, days: npt.NDArray[np.int64]) -> list[tuple[int, pa.Table]]:
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.flatnonzero(np.diff(sorted_days)) + 1
    taken = rows.take(pa.array(order))
    return [
        (int(sorted_days[a]), taken.slice(a, b - a))
        for a, b in zip([0, *bounds], [*bounds, len(order)], strict=True)
    ]


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
