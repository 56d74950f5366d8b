"""Background work on new segment files, so reading them stays cheap: their rows rolled up
into ``flows_rollup``, and small files merged into larger ones so a query opens few files.

Rollup first (``pick_unrolled``): the oldest segments not rolled up, up to ``ROLLUP_ROWS``
rows, aggregated by DuckDB straight from the files (its own cursor) and handed to the writer
thread, which inserts the rows and marks the files in one transaction (``Upkeep._roll_up``).
Until then queries read those rows raw (``flows_unrolled``), with the same answers.  It costs
about what it cost in the flush (~90-135 ns of CPU per row in the ingest benchmark), but off
the ingest path.

Then merging. Every flush writes one file per day it touches, so a quiet store that flushes
each second would add 86,400 small files a day, and DuckDB reads each file's footer for each
query (measured: 1,200 files cost each query ~0.15 s, footers cached). Policy (``pick``),
tiered, over rolled-up files only: files of fewer than ``SMALL_ROWS`` rows of one UTC day and
one level are merged ``FANIN`` at a time into one file of the next level; once a day is over,
its small files are merged ``FANIN`` at a time whatever their levels. So a day holds at most
``FANIN - 1`` small files per level (a day of 86,400 one-second flushes: ~6 levels), and every
row is rewritten about once per level it climbs (a file of level n holds at least
``FANIN ** n`` flushes). Work per merge is bounded: at most ``FANIN`` files of fewer than
``SMALL_ROWS`` rows each (or one flush's file), streamed row group by row group (memory: one
row group). Merged files are Snappy-compressed: rewriting a row so costs ~275 ns of CPU instead
of ~125 uncompressed, and the file shrinks from ~132 to ~55 bytes per row (the flush writes its
files uncompressed, being on the ingest path); DuckDB scanned both as fast (10M rows, grouped
by endpoint pair: 0.30 s and 0.31 s). A flush's file of ``SMALL_ROWS`` rows or more (a busy
store) merges with nothing, so once no merge is due it is rewritten alone, compressed, as a
file of level 1: without that the busiest stores would keep their rows at about twice the bytes
for their whole retention (bench/query.py: 1,041 MB against 537).

A merge is written and fsynced unregistered, then handed to the writer thread, which swaps
it for its inputs in one transaction (``Upkeep._swap``) unless retention dropped an input in
the meantime; the inputs are deleted once no running query reads them. A crash before the
swap leaves an unregistered file that the next open deletes.

Where it runs: its own thread at the lowest CPU priority (``nice`` 19 for that thread), so
under load ingest and queries go first and this work catches up when the machine is idle (a
stream offered faster than the store absorbs for long leaves more rows unrolled: queries slow
down, answers stay the same); ``FlowStore.compact`` runs it to the end in the caller's thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ._segments import Segment, SegmentFiles

__all__ = ["FANIN", "ROLLUP_ROWS", "SMALL_ROWS", "Compactor", "pick", "pick_unrolled"]

FANIN = 8
SMALL_ROWS = 1_000_000  # larger files merge no more (~130 MB as flushed, ~55 compressed)
ROLLUP_ROWS = 4_000_000  # rows rolled up in one step at most (one file may exceed it)
log = logging.getLogger("tagwall.analytics")


def pick_unrolled(segments: Sequence[Segment]) -> list[Segment]:
    """The next files to roll up: the oldest not rolled up, as many as fit in
    ``ROLLUP_ROWS`` (at least one)."""
    picked: list[Segment] = []
    rows = 0
    for s in sorted(segments, key=lambda s: s.sequence):
        if not s.rolled_up:
            if picked and rows + s.rows > ROLLUP_ROWS:
                break
            picked.append(s)
            rows += s.rows
    return picked


def pick(segments: Sequence[Segment], today: int) -> list[Segment]:
    """The next files to merge, oldest first (empty: nothing to do): ``FANIN`` small files
    of one day and level, or of one finished day (before ``today``) whatever their levels;
    else the oldest large file a flush wrote (uncompressed), alone; only files already
    rolled up."""
    groups: dict[tuple[int, int], list[Segment]] = defaultdict(list)
    large: list[Segment] = []
    for s in sorted(segments, key=lambda s: s.sequence):
        if not s.rolled_up:
            continue
        if s.rows < SMALL_ROWS:
            groups[(s.day, s.level if s.day >= today else -1)].append(s)
        elif s.level == 0:
            large.append(s)
    for key in sorted(groups):
        if len(groups[key]) >= FANIN or (key[1] == -1 and len(groups[key]) > 1):
            return groups[key][:FANIN]
    return large[:1]


class Compactor:
    """The background thread.  ``segments`` returns the registered files now; ``swap`` and
    ``roll_up`` run ``Upkeep._swap`` and ``Upkeep._roll_up`` on the writer thread (raising
    once the store closes); ``aggregate`` returns the rollup rows of segment files (any
    thread); ``today`` is the current UTC day number.  ``wake`` after new files appear,
    ``stop`` before closing."""

    def __init__(
        self,
        files: SegmentFiles,
        segments: Callable[[], list[Segment]],
        swap: Callable[[Sequence[Segment], Segment], bool],
        today: Callable[[], int],
        aggregate: Callable[[Sequence[str]], pa.Table],
        roll_up: Callable[[Sequence[str], pa.Table], bool],
    ) -> None:
        self._files = files
        self._segments = segments
        self._swap = swap
        self._today = today
        self._aggregate = aggregate
        self._roll_up = roll_up
        self._stepping = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flow-compact", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (idempotent); ``step`` does nothing afterwards."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # a thread's own niceness (Linux: PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                while not self._stopping.is_set() and self.step():
                    pass
            except Exception:
                if not self._stopping.is_set():
                    log.exception("flow store compaction failed; retried after the next flush")

    def step(self) -> bool:
        """Roll up or else merge one group of files, if any is due; whether it did (any
        thread; one at a time)."""
        with self._stepping:
            if self._stopping.is_set():
                return False
            segments = self._segments()
            unrolled = [s.name for s in pick_unrolled(segments)]
            if unrolled:
                with self._files.reading():
                    rollup = self._aggregate(unrolled)
                return self._roll_up(unrolled, rollup)
            inputs = pick(segments, self._today())
            if not inputs:
                return False
            with self._files.reading():  # retention may unregister them meanwhile
                merged = self._merge(inputs)
            if merged is None:
                return False
            return self._commit(inputs, merged)

    def _commit(self, inputs: Sequence[Segment], merged: Segment) -> bool:
        try:
            swapped = self._swap(inputs, merged)
        except BaseException:
            self._files.delete([merged.name])
            raise
        if not swapped:
            self._files.delete([merged.name])
        return swapped

    def _merge(self, inputs: Sequence[Segment]) -> Segment | None:
        """``inputs`` streamed into one new fsynced file (None when stopped midway)."""
        schema = pq.read_schema(self._files.path(inputs[0].name))
        stopped = False

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal stopped
            for s in inputs:
                source = pq.ParquetFile(self._files.path(s.name))
                for group in range(source.num_row_groups):
                    if self._stopping.is_set():
                        stopped = True
                        return
                    yield from source.read_row_group(group).to_batches()

        name = self._files.write(batches(), schema, inputs[0].day, compression="snappy")
        if stopped:
            self._files.delete([name])
            return None
        self._files.sync()
        return Segment(
            name,
            inputs[0].day,
            sum(s.rows for s in inputs),
            max(s.level for s in inputs) + 1,
            min(s.first_ms for s in inputs),
            max(s.last_ms for s in inputs),
            rolled_up=True,  # as its inputs (``pick`` takes no other)
        )
