"""``SqliteStore``: the default ``Store``, one SQLite file in WAL mode.

This module owns locking, transactions and wake-ups; the SQL lives in ``_objects`` (objects,
events, meta) and ``_drafts`` (drafts), whose ``*_locked`` functions run inside a transaction
opened here.

Who may mutate what:
- ``_conn`` is used only while holding ``_lock``: one connection per store object, and the
  lock keeps each BEGIN..COMMIT on one thread.  Readers therefore wait for a writer of the
  same store object (including its ``check``); other store objects and processes read the
  last committed state meanwhile (WAL).
- Writes run in ``BEGIN IMMEDIATE`` transactions, which take the file's write lock before the
  first read: the revision read, the ``check`` callback and the writes see one state that no
  other connection or process can change until COMMIT.  Any exception rolls everything back.
- ``_notifier.notify()`` runs after COMMIT, never before, so a woken watcher sees the data.
- ``_closed`` goes False → True once, under ``_lock``, and then ``_conn`` is closed.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from ..errors import StoreError
from . import _drafts, _objects
from ._base import (
    AgentStatus,
    Body,
    Change,
    Check,
    CommitResult,
    DiffEntry,
    Draft,
    Event,
    StoredObject,
    StoreStatistics,
    diff_changes,
)
from ._keys import ALL, ObjectKey, _All
from ._schema import connect, read_meta
from ._watch import Notifier, awatch_events, watch_events

__all__ = ["SqliteStore"]


class SqliteStore:
    """A ``Store`` in the SQLite file at ``path`` (created if missing).  Thread-safe.

    Several ``SqliteStore`` objects, in this or other processes, may share one file: writes
    serialise on SQLite's write lock (waiting up to ``busy_timeout_s``, then ``StoreError``),
    and watchers notice foreign commits within ``poll_interval_s``; commits made through this
    object wake its watchers at once.  ``clock`` returns epoch seconds (injected for tests).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 5.0,
        poll_interval_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._lock = threading.RLock()
        self._notifier = Notifier()
        self._conn = connect(self.path, busy_timeout_s)
        self._closed = False

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError(f"store {str(self.path)!r} is closed")
            if self._conn.in_transaction:  # re-entered from a check: leave its transaction be
                raise StoreError("a check must not call the store; it gets the bodies it needs")
            try:
                self._conn.execute(begin)
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(self.path)!r}: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"store {str(self.path)!r}: {exc}") from exc
                raise

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A snapshot: every statement inside sees the same committed state."""
        return self._transaction("BEGIN")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN IMMEDIATE")

    # --- objects ------------------------------------------------------------------------------

    def revision(self) -> int:
        with self._read() as conn:
            return read_meta(conn, "revision")

    def get(self, key: ObjectKey) -> StoredObject | None:
        with self._read() as conn:
            return _objects.get_locked(conn, key)

    def list(
        self, kind: str | None = None, project: str | _All | None = ALL
    ) -> builtins.list[StoredObject]:
        with self._read() as conn:
            return _objects.list_locked(conn, kind, project)

    def commit(
        self,
        changes: Sequence[Change],
        *,
        expect_revision: int | None = None,
        check: Check | None = None,
    ) -> CommitResult:
        """See ``Store.commit``: one transaction, one revision, ``check`` under the lock."""
        with self._write() as conn:
            result, bumped = _objects.commit_locked(conn, changes, expect_revision, check)
        if bumped:
            self._notifier.notify()
        return result

    # --- change feed --------------------------------------------------------------------------

    def changes_since(self, revision: int) -> builtins.list[Event]:
        with self._read() as conn:
            return _objects.changes_since_locked(conn, revision)

    def watch(
        self,
        from_revision: int,
        *,
        timeout_s: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        return watch_events(
            self.changes_since,
            self._notifier,
            from_revision,
            closed=lambda: self._closed,
            poll_interval_s=self._poll_interval_s,
            timeout_s=timeout_s,
            stop=stop,
        )

    def awatch(self, from_revision: int, *, timeout_s: float | None = None) -> AsyncIterator[Event]:
        return awatch_events(
            self.changes_since,
            self._notifier,
            from_revision,
            closed=lambda: self._closed,
            poll_interval_s=self._poll_interval_s,
            timeout_s=timeout_s,
        )

    def compact(self, before_revision: int) -> None:
        with self._write() as conn:
            _objects.compact_locked(conn, before_revision)

    # --- drafts -------------------------------------------------------------------------------

    def create_draft(self, name: str) -> Draft:
        with self._write() as conn:
            return _drafts.create_draft_locked(
                conn, name, read_meta(conn, "revision"), self._clock()
            )

    def list_drafts(self) -> builtins.list[Draft]:
        with self._read() as conn:
            return [_drafts.draft_locked(conn, name) for name in _drafts.draft_names_locked(conn)]

    def get_draft(self, name: str) -> Draft:
        with self._read() as conn:
            return _drafts.draft_locked(conn, name)

    def stage(self, name: str, changes: Sequence[Change]) -> Draft:
        with self._write() as conn:
            _drafts.stage_locked(conn, name, changes)
            return _drafts.draft_locked(conn, name)

    def discard(self, name: str) -> None:
        with self._write() as conn:
            _drafts.delete_draft_locked(conn, name)

    def draft_diff(self, name: str) -> builtins.list[DiffEntry]:
        with self._read() as conn:
            draft = _drafts.draft_locked(conn, name)

            def live(key: ObjectKey) -> Body | None:
                stored = _objects.get_locked(conn, key)
                return None if stored is None else stored.body

            return diff_changes(draft.changes, live)

    def commit_draft(
        self, name: str, *, expect_revision: int | None = None, check: Check | None = None
    ) -> CommitResult:
        with self._write() as conn:
            draft = _drafts.draft_locked(conn, name)
            result, bumped = _objects.commit_locked(conn, draft.changes, expect_revision, check)
            _drafts.delete_draft_locked(conn, name)
        if bumped:
            self._notifier.notify()
        return result

    # --- agent status -------------------------------------------------------------------------

    def put_agent_statuses(self, statuses: Sequence[tuple[AgentStatus, bool]]) -> None:
        with self._write() as conn:
            for status, only_if_held in statuses:
                if only_if_held:
                    held = conn.execute(
                        "SELECT controller FROM agents WHERE host = ?", (status.host,)
                    ).fetchone()
                    if held is not None and held[0] != status.controller:
                        continue
                conn.execute(
                    "INSERT OR REPLACE INTO agents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        status.host,
                        status.controller,
                        int(status.connected),
                        status.state,
                        status.desired_revision,
                        status.realized_revision,
                        status.error,
                        status.updated.timestamp(),
                    ),
                )

    def agent_statuses(self) -> builtins.list[AgentStatus]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM agents ORDER BY host").fetchall()
        return [
            AgentStatus(
                host,
                controller,
                bool(connected),
                state,
                desired,
                realized,
                error,
                datetime.fromtimestamp(updated_s, UTC),
            )
            for host, controller, connected, state, desired, realized, error, updated_s in rows
        ]

    # --- lifecycle ----------------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        with self._read() as conn:
            return _objects.statistics_locked(conn)

    def close(self) -> None:
        """Close the file; idempotent.  Watchers end; other calls raise ``StoreError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
        self._notifier.notify()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}{', closed' if self._closed else ''})"
