"""The SQLite file: schema, versioning, connection settings and row encodings.

Encodings:
- A key is three TEXT columns ``kind, project, name``; a global / cluster-scoped key (project
  ``None``) stores ``project = ''``, which no ObjectKey can hold otherwise.  So
  ``ObjectKey("Workload", "shop", "web")`` is ``('Workload', 'shop', 'web')`` and
  ``ObjectKey("Namespace", None, "shop")`` is ``('Namespace', '', 'shop')``; ORDER BY on the
  three columns is the ``ObjectKey`` order.
- A body is its JSON text as written (key order kept); "unchanged" compares canonical texts.
- ``agents`` rows: the last status of each agent (not revisioned; added in place, schema 1
  files gain the table when opened).
- ``meta`` rows: ``schema_version``, ``revision`` (the global revision) and ``compacted``
  (events of revisions <= compacted are gone), all integers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import StoreError
from ..model import Json
from ._base import Change, Delete, Put
from ._keys import ObjectKey

__all__ = [
    "SCHEMA_VERSION",
    "change_from_row",
    "connect",
    "decode_body",
    "encode_body",
    "key_columns",
    "key_from_columns",
    "read_meta",
]

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    kind     TEXT NOT NULL,
    project  TEXT NOT NULL,
    name     TEXT NOT NULL,
    body     TEXT NOT NULL,
    created  INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    PRIMARY KEY (kind, project, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    project  TEXT NOT NULL,
    name     TEXT NOT NULL,
    type     TEXT NOT NULL CHECK (type IN ('put', 'delete')),
    body     TEXT,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drafts (
    name          TEXT PRIMARY KEY,
    base_revision INTEGER NOT NULL,
    created_s     REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS draft_changes (
    draft   TEXT NOT NULL REFERENCES drafts (name) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    project TEXT NOT NULL,
    name    TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    op      TEXT NOT NULL CHECK (op IN ('put', 'delete')),
    body    TEXT,
    PRIMARY KEY (draft, kind, project, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agents (
    host       TEXT PRIMARY KEY,
    controller TEXT NOT NULL,
    connected  INTEGER NOT NULL,
    state      TEXT NOT NULL,
    desired    INTEGER,
    realized   INTEGER,
    error      TEXT,
    updated_s  REAL NOT NULL
) WITHOUT ROWID;
"""


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Open ``path`` (creating it and the schema if new) in WAL mode.

    The connection is in autocommit mode (``isolation_level=None``): the store issues BEGIN /
    COMMIT itself so that a write transaction starts with ``BEGIN IMMEDIATE`` and holds the
    file's write lock from its first read.  Raises ``StoreError`` for a newer schema.
    """
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = _journal_mode_wal(conn, busy_timeout_s)
        if str(mode).lower() != "wal":
            raise StoreError(f"store {str(path)!r} cannot use WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _journal_mode_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> object:
    """``PRAGMA journal_mode = WAL``, retried while the file is locked, up to
    ``busy_timeout_s``: SQLite answers "database is locked" at once, without the busy
    handler, when another process converts a new file at the same moment (two controllers
    starting on one fresh store: about 1 in 30 attempts here)."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    # Under the write lock, so two processes opening a new file do not both create it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Not executescript(): it would COMMIT the transaction opened above.
        for statement in _SCHEMA_V1.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", SCHEMA_VERSION), ("revision", 0), ("compacted", 0)],
        )
        version = read_meta(conn, "schema_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {str(path)!r} has schema version {version}; this tagwall reads "
                f"up to {SCHEMA_VERSION}"
            )
        # Future versions: upgrade step by step here, then store the new version.
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def read_meta(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    assert row is not None, f"meta row {key!r} missing"  # created by _migrate
    return int(row[0])


def key_columns(key: ObjectKey) -> tuple[str, str, str]:
    return (key.kind, key.project or "", key.name)


def key_from_columns(kind: str, project: str, name: str) -> ObjectKey:
    return ObjectKey(kind, project or None, name)


def encode_body(body: Mapping[str, Json]) -> str:
    return json.dumps(dict(body), separators=(",", ":"), allow_nan=False)


def decode_body(text: str) -> dict[str, Json]:
    body: dict[str, Json] = json.loads(text)
    return body


def change_from_row(op: str, kind: str, project: str, name: str, body: str | None) -> Change:
    if op == "put":
        assert body is not None  # CHECK constraint + stage() write both together
        return Put(decode_body(body))
    return Delete(key_from_columns(kind, project, name))
