"""Raw flow segments: the flow rows as Parquet files in a directory beside the DuckDB file.

Why Parquet files: the flow store's first write of a row must be cheap, since every record
an exporter sends is one.  Measured on this machine (one 1M-row flush of the store's 26
columns, CPU of the writing thread): DuckDB's ``INSERT`` into a table ~540 ns per row; an
uncompressed Parquet file 106 ns with every column but ``via`` non-nullable
(``SEGMENT_SCHEMA``: no definition levels; 137 nullable), 230 with dictionary encoding of
every column, 250 with Snappy, so only the three text columns are dictionary-encoded and
only ``start_ms`` gets statistics, which DuckDB uses to skip row groups of other times; an
Arrow IPC file 40 ns, but DuckDB reads IPC only through an extension (not installable
offline) or as a Python object registered on one connection, not through a view every
cursor sees.  In the ingest benchmark, with the rows fresh from other threads, the file cost
the writer 140-175 ns per row.  DuckDB scanned 10M rows of these files, grouped by endpoint
pair, about as fast as its own table (0.71 s and 0.73 s under load; 0.29 s quiet).

Durability, in this order (``write`` then ``sync``, by the writer thread): the file is
written under its final name and fsynced, the directory fsynced, and only then is the file
registered in DuckDB (``flow_segments``), in the transaction that commits the new endpoints
and rules and agents' progress.  So a file is either registered and complete, or
unregistered: a crash before that commit leaves an unregistered (perhaps torn) file, which
``recover`` deletes on the next open, and whose rows the store never acknowledged (``flush``
had not returned).  A registered file that is missing or does not read back with its
registered row count (a disk that lied about fsync) is reported by ``recover`` and left out,
so the store opens anyway.

File lifetime: a file leaves the view ``flows`` in one transaction (retention, compaction) and
is deleted from disk only once every query that may have started before that commit ended
(``reading`` marks a query, ``retire`` schedules the deletion): DuckDB opens a query's files
by name while it runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.parquet as pq  # type: ignore[import-untyped]

__all__ = ["WRITE_OPTIONS", "Segment", "SegmentFiles", "segment_directory"]

log = logging.getLogger("tagwall.analytics")

# The Parquet writer's options (see the module docstring for the measurements).  Row groups
# of DuckDB's own size: a scan runs one per thread.
WRITE_OPTIONS = {
    "compression": "none",
    "use_dictionary": ["source", "exporter", "via"],
    "write_statistics": ["start_ms"],
}
ROW_GROUP_ROWS = 122_880
_SUFFIX = ".parquet"


@dataclass(frozen=True, slots=True)
class Segment:
    """One registered file of flow rows, all of UTC day ``day`` (days since the epoch).

    ``name`` is ``YYYYMMDD-<sequence>.parquet``, the sequence number unique in the directory;
    ``level`` is 0 for a flush's file and n + 1 for a file merged from files of level n or
    less (``_compact.py``); ``first_ms`` and ``last_ms`` bound its ``start_ms`` (inclusive);
    ``rolled_up``: its rows are in ``flows_rollup`` (``_compact.py`` rolls it up).
    """

    name: str
    day: int
    rows: int
    level: int
    first_ms: int
    last_ms: int
    rolled_up: bool = False

    @property
    def sequence(self) -> int:
        return int(self.name.removesuffix(_SUFFIX).partition("-")[2])


def segment_directory(database: Path) -> Path:
    """Where the segments of the DuckDB file ``database`` live: ``<database>.segments``."""
    return database.with_name(database.name + ".segments")


class SegmentFiles:
    """The segment directory.  ``write``, ``sync``, ``delete`` and ``recover`` are the writer's
    (and the compactor's: ``write`` allocates names under a lock); ``reading`` and ``retire``
    may be called from any thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)  # replaced by ``recover``
        # Invariant: _active counts the running queries by the epoch they began in; each
        # retired batch of files carries the epoch in which it was retired.
        self._epoch = 0
        self._active: Counter[int] = Counter()
        self._retired: list[tuple[int, list[str]]] = []

    def path(self, name: str) -> str:
        return str(self.directory / name)

    # -- open ---------------------------------------------------------------------------------

    def recover(self, registered: Sequence[Segment]) -> list[Segment]:
        """Delete the files nobody registered (torn or uncommitted writes, merges that never
        committed) and return the registered segments that are missing or torn."""
        known = {s.name for s in registered}
        for entry in os.scandir(self.directory):
            if entry.name not in known:
                log.warning("flow store: deleting unregistered segment %s", entry.path)
                os.unlink(entry.path)
        bad = [s for s in registered if not self._complete(s)]
        for segment in bad:
            log.error(
                "flow store: segment %s is missing or torn (%d rows of %s lost); leaving it out",
                segment.name,
                segment.rows,
                datetime.fromtimestamp(segment.day * 86_400, UTC).date(),
            )
        last = max((s.sequence for s in registered), default=0)
        self._sequence = itertools.count(last + 1)
        return bad

    def _complete(self, segment: Segment) -> bool:
        try:
            return bool(pq.read_metadata(self.path(segment.name)).num_rows == segment.rows)
        except (OSError, pa.ArrowException):
            return False

    # -- writing ------------------------------------------------------------------------------

    def write(
        self,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        day: int,
        *,
        compression: str = "none",
    ) -> str:
        """Write ``batches`` (rows of ``day``) to a new file and fsync it; its name.  The caller
        calls ``sync`` before registering it, and ``delete`` if it never does.  Compression
        (``"snappy"``) costs ~150 ns more per row and saves ~60% of the bytes."""
        with self._lock:
            sequence = next(self._sequence)
        stamp = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")
        name = f"{stamp}-{sequence:012d}{_SUFFIX}"
        path = self.path(name)
        try:
            options = {**WRITE_OPTIONS, "compression": compression}
            with pq.ParquetWriter(path, schema, **options) as writer:
                for batch in batches:
                    writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
            _fsync(path, os.O_RDONLY)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return name

    def sync(self) -> None:
        """Make the names of the files written so far durable (fsync of the directory)."""
        _fsync(str(self.directory), os.O_RDONLY | os.O_DIRECTORY)

    def delete(self, names: Iterable[str]) -> None:
        """Delete files no query can see (never registered, or before any query ran)."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))

    # -- queries and retired files ------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around a query: the files it may open are not deleted until it ends."""
        with self._lock:
            epoch = self._epoch
            self._active[epoch] += 1
        try:
            yield
        finally:
            with self._lock:
                self._active[epoch] -= 1
                if not self._active[epoch]:
                    del self._active[epoch]
                doomed = self._reap_locked()
            self.delete(doomed)

    def retire(self, names: Sequence[str]) -> None:
        """Delete ``names`` once the queries running now have ended; call it after the commit
        that took them out of the view (a query that begins later does not read them)."""
        with self._lock:
            self._retired.append((self._epoch, list(names)))
            self._epoch += 1
            doomed = self._reap_locked()
        self.delete(doomed)

    def _reap_locked(self) -> list[str]:
        oldest = min(self._active, default=self._epoch)
        doomed = [name for epoch, names in self._retired if epoch < oldest for name in names]
        self._retired = [(epoch, names) for epoch, names in self._retired if epoch >= oldest]
        return doomed

    def close(self) -> None:
        """Delete every retired file (no query runs any more)."""
        with self._lock:
            doomed = [name for _, names in self._retired for name in names]
            self._retired = []
        self.delete(doomed)


def _fsync(path: str, flags: int) -> None:
    # fsync through another descriptor of the same file flushes its pages too (Linux).
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
