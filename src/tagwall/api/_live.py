"""Validated writes and the cached live ``Config``: the API's only path to the store.

Every write (apply, PUT, DELETE, draft commit) hands the store a ``check`` that loads the whole
would-be configuration with ``tagwall.model.load``.  The store runs it under its write lock, so
a write that would leave the configuration invalid (a dangling reference after a delete, a
duplicate workload name, ...) is refused with every problem and nothing written, and no other
writer can slip in between validation and commit.

Reads (trace, reach, programs) use the ``Config`` validated for the current store revision.  A
commit through this object caches the ``Config`` its check built, so the read after a write
does not validate again; a revision written by someone else is loaded once, then cached.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import TagwallError
from ..model import Config, Document, WorkloadMemo, load
from ..store import (
    ALL,
    Change,
    CommitResult,
    Delete,
    ObjectKey,
    Store,
    StoredObject,
    canonical_json,
    key_of,
)
from ..store._base import Body, Outcome  # the store's own record aliases

__all__ = ["LiveConfig", "Origin", "Snapshot"]

# Attempts at reading a list whose revision did not move while it was read; see ``snapshot``.
_SNAPSHOT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a document of a write came from, so problems name the request, not the store."""

    source: str  # "<api>", "<draft NAME>"
    index: int  # position in that source


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Objects as of ``revision``.  Invariant: the revision did not move while listing, or
    ``revision`` is the lower bound (a later read then sees a newer revision and reloads)."""

    revision: int
    objects: tuple[StoredObject, ...]


class _DryRun(TagwallError):  # a control-flow signal that never reaches a client
    """Raised by the check of a dry run: validation passed, abort the commit."""


class LiveConfig:
    """The store plus the validated ``Config`` of its current revision.  Thread-safe.

    Invariant: ``_cached`` only ever moves to a higher revision; the ``Config`` cached for
    revision R is exactly ``load`` of the objects stored at R.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cached: tuple[int, Config] | None = None  # guarded by _lock
        self._writing = threading.Lock()  # held by a write from its commit to its caching
        self._memo = WorkloadMemo()  # used by write checks only, one at a time (_writing)
        self._reading = threading.Lock()  # held while loading a revision written elsewhere
        self._read_memo = WorkloadMemo()  # used under _reading only

    # -- reads ---------------------------------------------------------------------------------

    def snapshot(self, kind: str | None = None, project: str | None = None) -> Snapshot:
        """Objects of ``kind`` (None: all) in ``project`` (None: every project) with the
        revision they belong to."""
        before = self.store.revision()
        for _ in range(_SNAPSHOT_ATTEMPTS):
            objects = self.store.list(kind, ALL if project is None else project)
            after = self.store.revision()
            if after == before:
                break
            lower, before = before, after
        else:  # writers kept racing us: label with the lower bound (see ``Snapshot``)
            return Snapshot(lower, tuple(objects))
        return Snapshot(before, tuple(objects))

    def config(self) -> tuple[int, Config]:
        """The validated configuration of the current revision, and that revision."""
        revision = self.store.revision()
        with self._lock:
            cached = self._cached
        if cached is not None and cached[0] == revision:
            return cached
        # A write of this process may have committed and not yet cached what it validated:
        # wait for it rather than validate the same configuration twice.
        with self._writing:
            with self._lock:
                cached = self._cached
            if cached is not None and cached[0] == self.store.revision():
                return cached
        # A revision written elsewhere (another controller on the store): one load at a time,
        # reusing the workloads the previous one built.
        with self._reading:
            with self._lock:
                cached = self._cached
            if cached is not None and cached[0] == self.store.revision():
                return cached
            snap = self.snapshot()
            config = load(_documents([o.body for o in snap.objects], {}), self._read_memo)
            self._remember(snap.revision, config)
        return snap.revision, config

    # -- writes --------------------------------------------------------------------------------

    def commit(
        self,
        changes: Sequence[Change],
        origins: Mapping[ObjectKey, Origin],
        *,
        dry_run: bool = False,
        expect_revision: int | None = None,
    ) -> CommitResult:
        """Commit ``changes`` atomically if the configuration after them is valid.

        ``dry_run`` validates the same way under the store's write lock, then aborts; the
        outcomes are those the commit would have had and the revision is the current one.
        """
        outcomes = tuple((c.key, self._would_be(c)) for c in changes) if dry_run else ()
        built: list[Config] = []

        def check(bodies: list[Body]) -> None:
            built.append(load(_documents(bodies, origins), self._memo))
            if dry_run:
                raise _DryRun("dry run")

        with self._writing:
            try:
                result = self.store.commit(changes, expect_revision=expect_revision, check=check)
            except _DryRun:
                return CommitResult(self.store.revision(), outcomes)
            if dry_run:  # every change was a no-op, so the store had nothing to check
                return CommitResult(result.revision, outcomes)
            if built:
                self._remember(result.revision, built[-1])
        return result

    def commit_draft(self, name: str, *, expect_revision: int | None = None) -> CommitResult:
        """Commit draft ``name`` like ``commit``; problems name the draft's positions."""
        draft = self.store.get_draft(name)
        origins = {c.key: Origin(f"<draft {name}>", i) for i, c in enumerate(draft.changes)}
        built: list[Config] = []

        def check(bodies: list[Body]) -> None:
            built.append(load(_documents(bodies, origins), self._memo))

        with self._writing:
            result = self.store.commit_draft(name, expect_revision=expect_revision, check=check)
            if built:
                self._remember(result.revision, built[-1])
        return result

    def _would_be(self, change: Change) -> Outcome:
        current = self.store.get(change.key)
        if isinstance(change, Delete):
            return "deleted"
        if current is None:
            return "created"
        return "unchanged" if _same(current.body, change.body) else "configured"

    def _remember(self, revision: int, config: Config) -> None:
        with self._lock:
            if self._cached is None or self._cached[0] < revision:
                self._cached = (revision, config)


def _same(a: Body, b: Body) -> bool:
    """The store's notion of "unchanged" (``true`` is not ``1``, key order does not count)."""
    return canonical_json(a) == canonical_json(b)


def _documents(bodies: Sequence[Body], origins: Mapping[ObjectKey, Origin]) -> list[Document]:
    docs: list[Document] = []
    for position, body in enumerate(bodies):
        origin = origins.get(key_of(body))
        if origin is None:
            docs.append(Document(body, "<store>", position))
        else:
            docs.append(Document(body, origin.source, origin.index))
    return docs
