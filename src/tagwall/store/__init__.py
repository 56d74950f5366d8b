"""The configuration store: manifests by key, the global revision, the change feed, drafts.

Owns the persistence of raw manifests (native tagwall kinds and Kubernetes kinds, exactly as
written) and of the revision that every write bumps: ``Store`` is the interface, SQLite the
default backend (an etcd backend will implement the same protocol).  It does not validate:
callers pass a ``check`` that sees the would-be state inside the write transaction.

Must not import fastapi, the compiler or the evaluator; it imports only ``tagwall.errors``
and ``tagwall.model`` (for ``Json``).
"""

from ._base import (
    AgentStatus,
    Body,
    Change,
    Check,
    CommitResult,
    Delete,
    DiffEntry,
    Draft,
    Event,
    Outcome,
    Put,
    Store,
    StoredObject,
    StoreStatistics,
    diff_changes,
)
from ._errors import RevisionCompacted, RevisionMismatch
from ._keys import ALL, ObjectKey, canonical_json, key_of
from ._sqlite import SqliteStore

__all__ = [
    "ALL",
    "AgentStatus",
    "Body",
    "Change",
    "Check",
    "CommitResult",
    "Delete",
    "DiffEntry",
    "Draft",
    "Event",
    "ObjectKey",
    "Outcome",
    "Put",
    "RevisionCompacted",
    "RevisionMismatch",
    "SqliteStore",
    "Store",
    "StoreStatistics",
    "StoredObject",
    "canonical_json",
    "diff_changes",
    "key_of",
]
