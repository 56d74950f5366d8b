"""The one store interface: revisioned manifests, a change feed, drafts.

Backends (SQLite now, etcd later) implement ``Store``; nothing in it mentions SQL.  The
records below are the whole vocabulary between the store and its callers.

Revision guarantees (every backend):
- The global revision starts at 0 and grows by exactly one per commit that changes something,
  however many documents the commit touches.  Drafts never move it.
- Each changed document of revision R produces exactly one ``Event`` with ``revision == R``;
  ``changes_since(r)`` returns every event of every revision > r, ordered by revision and then
  by position in the commit, until ``compact`` drops them.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ..errors import Problem, ValidationError
from ..model import Json
from ._keys import ALL, ObjectKey, _All, canonical_json, key_of

__all__ = [
    "AgentStatus",
    "Body",
    "Change",
    "Check",
    "CommitResult",
    "Delete",
    "DiffEntry",
    "Draft",
    "Event",
    "Outcome",
    "Put",
    "Store",
    "StoreStatistics",
    "StoredObject",
    "diff_changes",
]

Body = Mapping[str, Json]  # a manifest as written: JSON types only
Outcome = Literal["created", "configured", "unchanged", "deleted"]
DiffOp = Literal["create", "update", "delete", "unchanged"]

Check = Callable[[builtins.list[Body]], None]
"""Validates a would-be state: every stored body after the changes, sorted by key.

Runs on every commit that passes one (even a batch of only no-ops), inside the write
transaction, after the changes are applied and before they become visible.  Raising
anything (typically ``ValidationError``) aborts the commit with nothing written.  It must not
call the store (that raises ``StoreError``) and should be quick: other writers wait for it.
"""


@dataclass(frozen=True, slots=True)
class Put:
    """Create or replace one manifest.  Raises ``ValidationError`` if it has no key or is not
    JSON (NaN, non-string keys, ...)."""

    body: Body

    def __post_init__(self) -> None:
        key_of(self.body)
        try:
            canonical_json(self.body)
        except (TypeError, ValueError) as exc:
            raise ValidationError([Problem(f"not JSON-serialisable: {exc}")]) from exc

    @property
    def key(self) -> ObjectKey:
        return key_of(self.body)


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one manifest; committing it when the key is absent raises ``NotFoundError``."""

    key: ObjectKey


Change = Put | Delete


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One manifest as stored.  ``revision_created`` is reset when a key is deleted and
    recreated; ``revision_modified`` is the last revision that changed the body."""

    key: ObjectKey
    body: Body
    revision_created: int
    revision_modified: int


@dataclass(frozen=True, slots=True)
class CommitResult:
    """``revision`` is the new revision, or the unchanged one if every change was a no-op
    (a Put of a body canonically equal to the stored one is "unchanged").  ``outcomes`` has
    one entry per change, in the order given."""

    revision: int
    outcomes: tuple[tuple[ObjectKey, Outcome], ...]


@dataclass(frozen=True, slots=True)
class Event:
    """One document changed at ``revision``.  ``body`` is the new body for "put", ``None``
    for "delete"."""

    revision: int
    key: ObjectKey
    type: Literal["put", "delete"]
    body: Body | None


@dataclass(frozen=True, slots=True)
class Draft:
    """Staged changes, at most one per key (later stages replace earlier ones), in staging
    order.  ``base_revision`` is the global revision when the draft was created."""

    name: str
    base_revision: int
    changes: tuple[Change, ...]
    created: datetime  # timezone-aware, UTC


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """What committing one staged change would do to the live object.

    A "delete" of a key that is not live has ``live_body=None``; committing it raises
    ``NotFoundError`` unless the key appears first.
    """

    key: ObjectKey
    op: DiffOp
    live_body: Body | None
    draft_body: Body | None


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    revision: int
    objects: int
    events: int  # retained, i.e. not compacted
    drafts: int
    compacted_revision: int  # events of revisions <= this are gone; 0 = none


def diff_changes(
    changes: Sequence[Change], live: Callable[[ObjectKey], Body | None]
) -> list[DiffEntry]:
    """Diff staged ``changes`` against ``live`` (a lookup of current bodies), sorted by key."""
    out: list[DiffEntry] = []
    for change in changes:
        current = live(change.key)
        if isinstance(change, Delete):
            out.append(DiffEntry(change.key, "delete", current, None))
        elif current is None:
            out.append(DiffEntry(change.key, "create", None, change.body))
        elif canonical_json(current) == canonical_json(change.body):
            out.append(DiffEntry(change.key, "unchanged", current, change.body))
        else:
            out.append(DiffEntry(change.key, "update", current, change.body))
    return sorted(out, key=lambda entry: entry.key)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What the controller holding an agent's connection last said about it.

    Kept beside the manifests but outside revisions: reporting it never moves the global
    revision nor feeds the change feed.  ``updated`` (UTC) is refreshed while the agent stays
    connected, so a reader can tell a row whose controller stopped reporting.
    """

    host: str
    controller: str  # the controller's identity, e.g. its URL
    connected: bool
    state: str  # in-sync | pending | rejected | disconnected
    desired_revision: int | None
    realized_revision: int | None
    error: str | None
    updated: datetime


class Store(Protocol):
    """Manifests by key, a global revision, a change feed and drafts.  Thread-safe.

    Errors: ``NotFoundError`` (missing key or draft), ``ConflictError`` (draft exists;
    ``RevisionMismatch`` for ``expect_revision``), ``RevisionCompacted`` (feed asked below
    the compaction point), ``StoreError`` (backend unavailable or closed); whatever
    ``check`` raises passes through.
    """

    def revision(self) -> int: ...
    def get(self, key: ObjectKey) -> StoredObject | None: ...
    def list(
        self, kind: str | None = None, project: str | _All | None = ALL
    ) -> builtins.list[StoredObject]:
        """Sorted by key.  ``kind=None``: every kind; ``project=ALL``: every project."""
        ...

    def commit(
        self,
        changes: Sequence[Change],
        *,
        expect_revision: int | None = None,
        check: Check | None = None,
    ) -> CommitResult:
        """Apply ``changes`` in order as one transaction and one revision, or not at all.

        Read-validate-write: ``check`` gets every body of the would-be state (see ``Check``)
        while the write lock is held, so no writer can slip in between validation and commit;
        if it raises, nothing is written and the exception propagates.  The API layer does::

            store.commit([Put(b) for b in bodies], check=lambda after: validate(after))

        ``expect_revision`` (optimistic concurrency) must equal the current revision, else
        ``RevisionMismatch``.  Outcomes and no-op rules: see ``CommitResult``.
        """
        ...

    def changes_since(self, revision: int) -> builtins.list[Event]: ...
    def watch(
        self,
        from_revision: int,
        *,
        timeout_s: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        """Events after ``from_revision``: the missed ones, then live ones as they commit.

        Ends when no event came for ``timeout_s``, when ``stop()`` is true, or when the store
        closes; raises ``RevisionCompacted`` if events it needs are compacted.
        """
        ...

    def awatch(self, from_revision: int, *, timeout_s: float | None = None) -> AsyncIterator[Event]:
        """``watch`` for asyncio; cancel the consuming task to stop it."""
        ...

    def compact(self, before_revision: int) -> None:
        """Drop the events of revisions < ``before_revision`` (<= revision() + 1)."""
        ...

    def create_draft(self, name: str) -> Draft: ...
    def list_drafts(self) -> builtins.list[Draft]: ...
    def get_draft(self, name: str) -> Draft: ...
    def stage(self, name: str, changes: Sequence[Change]) -> Draft: ...
    def discard(self, name: str) -> None: ...
    def draft_diff(self, name: str) -> builtins.list[DiffEntry]: ...
    def commit_draft(
        self, name: str, *, expect_revision: int | None = None, check: Check | None = None
    ) -> CommitResult:
        """``commit`` of the staged changes; the draft is removed in the same transaction."""
        ...

    def put_agent_statuses(self, statuses: Sequence[tuple[AgentStatus, bool]]) -> None:
        """Record each status for its host, in one transaction.  A status paired with True is
        written only if the stored row belongs to the same controller (or there is none): a
        controller that lost an agent must not overwrite the row of the controller the agent
        moved to."""
        ...

    def agent_statuses(self) -> builtins.list[AgentStatus]:
        """Every recorded agent status, sorted by host."""
        ...

    def statistics(self) -> StoreStatistics: ...
    def close(self) -> None: ...
