"""The store's own refinements of ``ConflictError`` (HTTP 409): both tell the caller to re-read.

They live here rather than in ``tagwall/errors.py`` because only store callers (the API, the
controller's watch loop) need to tell them apart from other conflicts.
"""

from __future__ import annotations

from ..errors import ConflictError

__all__ = ["RevisionCompacted", "RevisionMismatch"]


class RevisionCompacted(ConflictError):
    """The events after ``revision`` are gone; the watcher must resync with ``list()``.

    ``compacted_revision`` is the highest revision whose events were dropped.
    """

    title = "revision compacted"

    def __init__(self, revision: int, compacted_revision: int) -> None:
        self.revision = revision
        self.compacted_revision = compacted_revision
        super().__init__(
            f"events after revision {revision} are compacted (up to {compacted_revision}); "
            "resync from a full list"
        )


class RevisionMismatch(ConflictError):
    """``expect_revision`` was given and the store has moved on: re-read and retry."""

    title = "revision mismatch"

    def __init__(self, expected_revision: int, revision: int) -> None:
        self.expected_revision = expected_revision
        self.revision = revision
        super().__init__(f"expected revision {expected_revision}, the store is at {revision}")
