"""``FlowStore``: flow records in a DuckDB file and the segment files beside it, written by
one thread, read by any.

This module is the store's public face: opening a store (schema, upgrades and recovery;
``_schema.py`` says the layout), hand-offs to the writer thread (``flush``, agents' progress,
retention, ``compact``, ``close``) and statistics.  Its halves: appending (endpoints,
``append``, agents' reports) is ``_append.py``; the writer thread (flushes and segment files)
``_writer.py``, its other changes (rollups, merges, retention) ``_upkeep.py``; the queries
``_reader.py``; the files ``_segments.py``; the background thread that rolls them up and
merges them ``_compact.py``.

Write path: ``append`` enriches in the caller's thread (endpoint ids, rule ids, Arrow
columns: no per-record Python) and queues the rows for the writer thread.  ``flush`` and
``close`` return once everything accepted before them is durable: its segment files fsynced
and registered by a committed transaction.  Every write (DDL, retention, maintenance, a
compaction's swap) runs on the writer thread, so writes never conflict; queries use their own
cursors on the same database instance and read the last committed state (DuckDB is MVCC), so
they never block ingest, and the files they read stay on disk until they end.

Upgrade: a file written before segments existed keeps its day tables ``flows_dYYYYMMDD``;
the view ``flows`` reads them beside the segments, and retention drops them as their days
expire.  New rows go to segments only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ..errors import StoreError
from ..model import Tags
from ._append import Appender
from ._batch import RuleRef
from ._compact import Compactor
from ._enrich import Endpoint, Endpoints
from ._reader import Reader
from ._schema import (
    DAY_MS,
    ROLLUP_BUCKET_MS,
    SCHEMA,
    day_of,
    day_table,
    rollup_of_files_sql,
    view_sql,
)
from ._segments import Segment, SegmentFiles, segment_directory
from ._upkeep import Upkeep
from ._writer import STOP, Call, Rows

__all__ = ["FlowStore", "StoreStatistics"]


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    stored_rows: int  # flow rows committed by this FlowStore object since it opened
    batches: int  # non-empty batches accepted
    pending_rows: int  # accepted, not yet committed
    dropped_rows: int  # decoders' drops (FlowBatch.dropped) plus rows append_nowait refused
    messages: int  # syslog messages committed
    flushes: int
    failed_flushes: int  # flushes that raised; their rows stay pending and are retried
    segments: int  # raw flow files registered now (legacy day tables not counted)
    compactions: int  # merges of segment files committed since it opened
    unrolled_rows: int  # stored flow rows the daily rollup does not hold yet (see _compact)


class FlowStore(Appender, Upkeep, Reader):
    """Flow records, endpoints, rules, rollups and syslog messages in the DuckDB file ``path``
    and its segment directory ``<path>.segments`` (``_segments.py``).

    Raw flows are kept ``retention_days`` whole UTC days (a day goes once all of it is older),
    rollups ``rollup_retention_days``.  Maintenance (retention, rollup merging) runs on the
    writer every ``maintenance_interval_s`` of ``clock`` (None: only when
    ``enforce_retention`` is called).  ``append`` waits while ``max_pending_rows`` are
    pending; ``append_nowait`` refuses instead and counts the rows as dropped.  ``compaction``:
    roll up and merge new segment files in a background thread (``_compact.py``; without it,
    only ``compact`` does).

    Raises ``duckdb.IOException`` when another process holds the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_days: int = 30,
        rollup_retention_days: int = 400,
        flush_rows: int = 1_000_000,  # ~130 MB a file; 200,000: ~30 ns per row more
        flush_interval_s: float = 1.0,
        max_pending_rows: int = 2_000_000,
        maintenance_interval_s: float | None = 600.0,
        clock: Callable[[], float] = time.time,
        compaction: bool = True,
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
        self._db = duckdb.connect(str(path))  # first: it locks the store against others
        self._db.execute("SET GLOBAL parquet_metadata_cache = true")  # segments never change
        for statement in SCHEMA:
            self._db.execute(statement)
        tables = self._db.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        # Invariant: _days are the legacy day tables (written before segments existed).
        self._days = {d for (name,) in tables if (d := day_of(name)) is not None}
        # Files written before flows had ``via`` get it (NULL): the view needs one shape.
        for table in ["flows_template", *(day_table(d) for d in self._days)]:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS via VARCHAR")
        self._files = SegmentFiles(segment_directory(path))
        # Invariant: _segments are the registered files, as committed (the writer thread
        # replaces the dict, under _lock, never mutates it).
        self._segments = _open_segments(self._db, self._files)
        every = sorted(self._segments)
        unrolled = [n for n in every if not self._segments[n].rolled_up]
        paths = self._files.path
        for statement in view_sql(self._days, list(map(paths, every)), list(map(paths, unrolled))):
            self._db.execute(statement)
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
        self._flushes = self._failed = self._compactions = 0
        self._queue: queue.SimpleQueue[Rows | Call | object] = queue.SimpleQueue()
        self._writer = self._db.cursor()
        self._compactor = Compactor(
            self._files,
            self._registered,
            lambda inputs, merged: bool(self._call(lambda: self._swap(inputs, merged))),
            lambda: int(self._clock() * 1000) // DAY_MS,
            self._aggregate,
            lambda names, rollup: bool(self._call(lambda: self._roll_up(names, rollup))),
        )
        self._thread = threading.Thread(target=self._run, name="flow-store", daemon=True)
        self._thread.start()
        if compaction:
            self._compactor.start()
            self._compactor.wake()  # files left small by the last run

    def _wake_compactor(self) -> None:
        self._compactor.wake()

    def _registered(self) -> list[Segment]:
        with self._lock:
            return list(self._segments.values())

    def _aggregate(self, names: Sequence[str]) -> pa.Table:
        """The rollup rows of the segments ``names`` (any thread, its own cursor)."""
        with self._lock:
            self._check_open_locked()
            cursor = self._db.cursor()
        try:
            sql = rollup_of_files_sql([self._files.path(n) for n in names])
            return cursor.sql(sql).to_arrow_table()
        finally:
            cursor.close()

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

    def enforce_retention(self, now_ms: int) -> tuple[str, ...]:
        """Drop the raw days, rollup days and messages that retention lets go as of
        ``now_ms``, merge finished days' partial rollups; the dropped days, named as their
        day tables (``flows_dYYYYMMDD``, whether segments or a legacy table held them)."""
        result = self._call(lambda: self._maintain(now_ms))
        assert isinstance(result, tuple)
        return result

    def compact(self) -> int:
        """Roll up new segments and merge small ones until nothing is due, in the caller's
        thread (the background thread does the same at low priority); the steps it took."""
        merges = 0
        while self._compactor.step():
            merges += 1
        return merges

    def close(self) -> None:
        """Commit everything accepted, stop the writer and close the file (idempotent)."""
        self._compactor.stop()  # first: its last swap needs the writer
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._queue.put(STOP)
        self._thread.join()
        self._writer.close()
        self._db.close()
        self._files.close()
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
                len(self._segments),
                self._compactions,
                sum(s.rows for s in self._segments.values() if not s.rolled_up),
            )


def _open_segments(db: duckdb.DuckDBPyConnection, files: SegmentFiles) -> dict[str, Segment]:
    """The registered segments, less those missing or torn (``SegmentFiles.recover``, which
    also deletes the files nobody registered)."""
    registered = [
        Segment(*row)
        for row in db.execute(
            "SELECT name, day, rows, level, first_ms, last_ms, rolled_up FROM flow_segments"
        ).fetchall()
    ]
    bad = files.recover(registered)
    if bad:
        names = [s.name for s in bad]
        db.execute("DELETE FROM flow_segments WHERE list_contains(?, name)", [names])
    return {s.name: s for s in registered if s not in bad}
