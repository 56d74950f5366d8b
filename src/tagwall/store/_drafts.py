"""Drafts in the SQLite file: staged changes that live beside the objects, outside the revision.

Every function here runs inside a transaction the caller opened on ``conn`` (``SqliteStore``
holds its lock around them); none of them touches ``objects``, ``events`` or ``meta``, so
drafts never move the global revision.  Committing a draft is ``SqliteStore.commit_draft``:
the store's commit plus ``delete_draft_locked`` in one transaction.

Order: ``draft_changes.seq`` grows with every stage; re-staging a key replaces its change and
moves it to the end, so a draft's changes read back in the order they were last staged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from ..errors import ConflictError, NotFoundError, Problem, ValidationError
from ._base import Change, Delete, Draft
from ._schema import change_from_row, encode_body, key_columns

__all__ = [
    "create_draft_locked",
    "delete_draft_locked",
    "draft_locked",
    "draft_names_locked",
    "stage_locked",
    "validate_draft_name",
]


def validate_draft_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError([Problem("a draft name must be a non-empty string", value=name)])
    return name


def create_draft_locked(
    conn: sqlite3.Connection, name: str, base_revision: int, created_s: float
) -> Draft:
    validate_draft_name(name)
    row = conn.execute("SELECT 1 FROM drafts WHERE name = ?", (name,)).fetchone()
    if row is not None:
        raise ConflictError(f"draft {name!r} already exists")
    conn.execute("INSERT INTO drafts VALUES (?, ?, ?)", (name, base_revision, created_s))
    return Draft(name, base_revision, (), datetime.fromtimestamp(created_s, UTC))


def draft_locked(conn: sqlite3.Connection, name: str) -> Draft:
    row = conn.execute(
        "SELECT base_revision, created_s FROM drafts WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise NotFoundError("draft", name)
    rows = conn.execute(
        "SELECT op, kind, project, name, body FROM draft_changes WHERE draft = ? ORDER BY seq",
        (name,),
    ).fetchall()
    changes = tuple(change_from_row(*r) for r in rows)
    return Draft(name, int(row[0]), changes, datetime.fromtimestamp(float(row[1]), UTC))


def draft_names_locked(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT name FROM drafts ORDER BY name")]


def stage_locked(conn: sqlite3.Connection, name: str, changes: Sequence[Change]) -> None:
    """Add ``changes`` to the draft; a change to an already staged key replaces it."""
    draft_locked(conn, name)  # NotFoundError if missing
    (seq,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM draft_changes WHERE draft = ?", (name,)
    ).fetchone()
    for change in changes:
        seq += 1
        if isinstance(change, Delete):
            op, body = "delete", None
        else:
            op, body = "put", encode_body(change.body)
        conn.execute(
            "INSERT INTO draft_changes (draft, kind, project, name, seq, op, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (draft, kind, project, name) "
            "DO UPDATE SET seq = excluded.seq, op = excluded.op, body = excluded.body",
            (name, *key_columns(change.key), seq, op, body),
        )


def delete_draft_locked(conn: sqlite3.Connection, name: str) -> None:
    # draft_changes rows go with it: ON DELETE CASCADE (foreign_keys is on).
    if conn.execute("DELETE FROM drafts WHERE name = ?", (name,)).rowcount == 0:
        raise NotFoundError("draft", name)
