"""The writer thread's changes to what is stored, other than flushes: the background work's
results (a merged segment swapped in for its inputs, segments' rollups), and maintenance
(retention of raw days, rollup days and messages; merging the partial rollup rows of
finished days).  Each is one transaction on the writer thread (``_writer.py`` says why), and
each replaces the registered segments only once it has committed.

Retention drops whole days: the segments of a day (and a legacy day table) go once all of the
day is older than ``retention_days``; a segment not yet rolled up is rolled up in that same
transaction first, since the rollup outlives the raw flows.  So is every segment of a
finished day before that day's partial rollup rows are merged into one per key.  Dropped
files are deleted once no running query reads them (``SegmentFiles.retire``).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ._schema import DAY_MS, ROLLUP_BUCKET_MS, ROLLUP_COUNTS, day_table, rollup_of_files_sql
from ._segments import Segment
from ._writer import Writer

__all__ = ["Upkeep"]


class Upkeep(Writer):
    """``Writer`` with the changes above (only the writer thread calls them)."""

    def _swap(self, inputs: Sequence[Segment], merged: Segment) -> bool:
        """Register ``merged`` in place of ``inputs`` (one transaction); False, changing
        nothing, when some input is no longer registered (retention dropped its day)."""
        if any(s.name not in self._segments for s in inputs):
            return False
        with self._transaction() as w:
            after = self._register(w, added=[merged], removed=[s.name for s in inputs])
        with self._lock:
            self._segments = after
            self._compactions += 1
        self._files.retire([s.name for s in inputs])
        return True

    def _roll_up(self, names: Sequence[str], rollup: pa.Table) -> bool:
        """Insert ``rollup``, the rollup rows of the segments ``names``, and mark them rolled
        up (one transaction); False, changing nothing, when some segment is no longer
        registered as not rolled up (retention or a merge came first)."""
        if any(n not in self._segments or self._segments[n].rolled_up for n in names):
            return False
        with self._transaction() as w:
            self._insert(w, "flows_rollup", rollup)
            after = self._register(w, rolled=names)
        with self._lock:
            self._segments = after
        return True

    def _maintain(self, now_ms: int) -> tuple[str, ...]:
        """Retention and rollup merging as of ``now_ms``; see ``enforce_retention``."""
        raw_cutoff = now_ms - self._retention_ms
        with self._lock:
            segments = list(self._segments.values())
        days = self._days | {s.day for s in segments}
        expired = sorted(d for d in days if (d + 1) * DAY_MS <= raw_cutoff)
        tables = [d for d in expired if d in self._days]
        gone = [s for s in segments if s.day in set(expired)]
        merge_until = now_ms // ROLLUP_BUCKET_MS * ROLLUP_BUCKET_MS  # today is not over
        # Segments not rolled up yet of the days dropped (the rollup outlives the raw flows)
        # or merged below (so that no partial row comes after the merge): rolled up here.
        late = [s for s in segments if not s.rolled_up and (s.day + 1) * DAY_MS <= merge_until]
        after: dict[str, Segment] | None = None
        try:
            with self._transaction() as w:
                if late:
                    paths = [self._files.path(s.name) for s in late]
                    w.execute(f"INSERT INTO flows_rollup {rollup_of_files_sql(paths)}")
                if expired or late:
                    self._days -= set(tables)  # the view _register writes leaves them out
                    removed = [s.name for s in gone]
                    rolled = [s.name for s in late if s.day not in set(expired)]
                    after = self._register(w, removed=removed, rolled=rolled)
                    for day in tables:
                        w.execute(f"DROP TABLE {day_table(day)}")
                w.execute("DELETE FROM messages WHERE received_ms < ?", [raw_cutoff])
                w.execute(
                    "DELETE FROM flows_rollup WHERE bucket_ms < ?",
                    [now_ms - self._rollup_retention_ms],
                )
                if merge_until > self._merged_until_ms:
                    self._merge_rollups_locked(w, self._merged_until_ms, merge_until)
        except Exception:
            self._days |= set(tables)
            raise
        if after is not None:
            with self._lock:
                self._segments = after
        self._files.retire([s.name for s in gone])
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
