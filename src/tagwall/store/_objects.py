"""The ``objects`` and ``events`` tables: reads, the commit algorithm, the feed, compaction.

Every function runs inside a transaction the caller (``SqliteStore``) opened on ``conn`` and
holds the store's lock around; ``commit_locked`` and ``compact_locked`` need a write
transaction (``BEGIN IMMEDIATE``) so that what they read cannot change before they write.

Revision invariant: ``meta.revision`` equals the highest revision of any event ever written
(0 if none), and only ``commit_locked`` raises it — by one, in the transaction that writes the
objects and the events of that revision.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..errors import NotFoundError
from ._base import (
    Change,
    Check,
    CommitResult,
    Delete,
    Event,
    Outcome,
    StoredObject,
    StoreStatistics,
)
from ._errors import RevisionCompacted, RevisionMismatch
from ._keys import ALL, ObjectKey, _All, canonical_json
from ._schema import decode_body, encode_body, key_columns, key_from_columns, read_meta

__all__ = [
    "changes_since_locked",
    "commit_locked",
    "compact_locked",
    "get_locked",
    "list_locked",
    "statistics_locked",
]

_KEY = "kind = ? AND project = ? AND name = ?"


def get_locked(conn: sqlite3.Connection, key: ObjectKey) -> StoredObject | None:
    row = conn.execute(
        f"SELECT body, created, modified FROM objects WHERE {_KEY}", key_columns(key)
    ).fetchone()
    return None if row is None else StoredObject(key, decode_body(row[0]), row[1], row[2])


def list_locked(
    conn: sqlite3.Connection, kind: str | None, project: str | _All | None
) -> list[StoredObject]:
    where, args = ["1"], list[str]()
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if project is not ALL:
        where.append("project = ?")
        args.append(project or "")
    rows = conn.execute(
        "SELECT kind, project, name, body, created, modified FROM objects "
        f"WHERE {' AND '.join(where)} ORDER BY kind, project, name",
        args,
    )
    return [StoredObject(key_from_columns(*r[:3]), decode_body(r[3]), r[4], r[5]) for r in rows]


def commit_locked(
    conn: sqlite3.Connection,
    changes: Sequence[Change],
    expect_revision: int | None,
    check: Check | None,
) -> tuple[CommitResult, bool]:
    """Apply ``changes`` in order; return the result and whether the revision moved.

    Outcomes, per change: Put of a new key → "created"; Put of a different body →
    "configured"; Put of the canonically equal body → "unchanged" (no event); Delete → "deleted"
    or ``NotFoundError``.  A later change to a key sees the earlier one in the same batch.
    The caller rolls back on any exception, including one raised by ``check``.
    """
    current = read_meta(conn, "revision")
    if expect_revision is not None and expect_revision != current:
        raise RevisionMismatch(expect_revision, current)
    new = current + 1
    outcomes: list[tuple[ObjectKey, Outcome]] = []
    events: list[tuple[object, ...]] = []  # rows of the events table, seq = position
    for change in changes:
        key = change.key
        cols = key_columns(key)
        live = get_locked(conn, key)
        if isinstance(change, Delete):
            if live is None:
                raise NotFoundError(key.kind, key.qualified_name)
            conn.execute(f"DELETE FROM objects WHERE {_KEY}", cols)
            outcomes.append((key, "deleted"))
            events.append((new, len(events), *cols, "delete", None))
            continue
        if live is not None and canonical_json(live.body) == canonical_json(change.body):
            outcomes.append((key, "unchanged"))
            continue
        text = encode_body(change.body)
        conn.execute(
            "INSERT INTO objects (kind, project, name, body, created, modified) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, project, name) "
            "DO UPDATE SET body = excluded.body, modified = excluded.modified",
            (*cols, text, new, new),
        )
        outcomes.append((key, "created" if live is None else "configured"))
        events.append((new, len(events), *cols, "put", text))
    if check is not None:
        rows = conn.execute("SELECT body FROM objects ORDER BY kind, project, name")
        check([decode_body(row[0]) for row in rows])
    if not events:
        return CommitResult(current, tuple(outcomes)), False
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", events)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (new,))
    return CommitResult(new, tuple(outcomes)), True


def changes_since_locked(conn: sqlite3.Connection, revision: int) -> list[Event]:
    if revision < 0:
        raise ValueError(f"revision must be >= 0, not {revision}")
    compacted = read_meta(conn, "compacted")
    if revision < compacted:
        raise RevisionCompacted(revision, compacted)
    rows = conn.execute(
        "SELECT revision, kind, project, name, type, body FROM events "
        "WHERE revision > ? ORDER BY revision, seq",
        (revision,),
    )
    return [
        Event(r[0], key_from_columns(*r[1:4]), r[4], None if r[5] is None else decode_body(r[5]))
        for r in rows
    ]


def compact_locked(conn: sqlite3.Connection, before_revision: int) -> None:
    """Drop events of revisions < ``before_revision``; compacting again lower is a no-op.

    Example: at revision 9, ``compact(5)`` drops revisions 1-4, so ``changes_since(4)`` still
    works and ``changes_since(3)`` raises ``RevisionCompacted(3, 4)``.
    """
    current = read_meta(conn, "revision")
    if before_revision > current + 1:
        raise ValueError(f"cannot compact before {before_revision}: revision is {current}")
    compacted = max(read_meta(conn, "compacted"), before_revision - 1)
    conn.execute("DELETE FROM events WHERE revision <= ?", (compacted,))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'compacted'", (compacted,))


def statistics_locked(conn: sqlite3.Connection) -> StoreStatistics:
    objects, events, drafts = (
        int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        for table in ("objects", "events", "drafts")
    )
    return StoreStatistics(
        read_meta(conn, "revision"), objects, events, drafts, read_meta(conn, "compacted")
    )
