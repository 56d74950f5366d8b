"""Drafts: stage changes away from the live configuration, diff them, commit or discard.

Staging checks only that each change names an object the API serves; the whole configuration
is validated when the draft is committed, exactly like ``apply`` (``LiveConfig.commit_draft``),
and the draft disappears in the same transaction.  Drafts never move the live revision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from ..errors import Problem, ValidationError
from ..kinds import PLURAL_OF_KIND, known_kinds
from ..store import Delete, DiffEntry, Draft, ObjectKey
from ._http import MANIFEST_OPENAPI, manifest_text, parse_manifests
from ._live import LiveConfig
from ._objects import ApplyOut, ExpectRevision, apply_out, changes_of, object_key

__all__ = ["drafts_router"]

# Draft names travel in URL paths: one path segment, no surprises.
_DRAFT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
DraftName = Annotated[str, Path(pattern=_DRAFT_NAME, description="Draft name")]


class DraftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_DRAFT_NAME, examples=["tighten-web"])


class KeyIn(BaseModel):
    """The object a staged delete removes; ``project`` omitted = global."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    project: str | None = None


class ChangeOut(BaseModel):
    op: Literal["put", "delete"]
    kind: str
    project: str | None
    name: str
    body: dict[str, Any] | None  # the staged manifest; None for a delete


class DraftOut(BaseModel):
    name: str
    baseRevision: int  # the wire name
    created: datetime
    changes: list[ChangeOut]


class DraftListOut(BaseModel):
    items: list[DraftOut]


class DiffEntryOut(BaseModel):
    """``op``: create | update | delete | unchanged; ``live``/``draft``: both bodies, None
    where the object is absent on that side."""

    op: str
    kind: str
    project: str | None
    name: str
    live: dict[str, Any] | None
    draft: dict[str, Any] | None


class DiffOut(BaseModel):
    draft: str
    baseRevision: int  # the wire name
    revision: int  # the live revision the diff was taken against
    entries: list[DiffEntryOut]


def drafts_router(live: LiveConfig) -> APIRouter:
    router = APIRouter(prefix="/drafts", tags=["drafts"])
    store = live.store

    @router.post("", status_code=201, summary="Create an empty draft")
    def create_draft(request: DraftIn) -> DraftOut:
        return _draft_out(store.create_draft(request.name))

    @router.get("", summary="List drafts")
    def list_drafts() -> DraftListOut:
        return DraftListOut(items=[_draft_out(d) for d in store.list_drafts()])

    @router.get("/{draft}", summary="Show a draft and its staged changes")
    def get_draft(draft: DraftName) -> DraftOut:
        return _draft_out(store.get_draft(draft))

    @router.delete("/{draft}", status_code=204, summary="Discard a draft")
    def discard_draft(draft: DraftName) -> Response:
        store.discard(draft)
        return Response(status_code=204)

    @router.post(
        "/{draft}/apply",
        summary="Stage manifests (create or replace) in a draft",
        openapi_extra=MANIFEST_OPENAPI,
    )
    def stage_apply(draft: DraftName, text: Annotated[str, Depends(manifest_text)]) -> DraftOut:
        documents = parse_manifests(text)
        if not documents:
            raise ValidationError([Problem("the body holds no manifest", source="<api>")])
        changes, _ = changes_of(documents)
        return _draft_out(store.stage(draft, changes))

    @router.post("/{draft}/delete", summary="Stage the deletion of one object in a draft")
    def stage_delete(draft: DraftName, request: KeyIn) -> DraftOut:
        if request.kind not in PLURAL_OF_KIND:
            raise ValidationError(
                [
                    Problem(
                        "unknown kind", path="body.kind", value=request.kind, allowed=known_kinds()
                    )
                ]
            )
        key = object_key(request.kind, request.project, request.name)
        return _draft_out(store.stage(draft, [Delete(key)]))

    @router.get("/{draft}/diff", summary="What committing the draft would change, per object")
    def diff_draft(draft: DraftName) -> DiffOut:
        found = store.get_draft(draft)
        entries = store.draft_diff(draft)
        return DiffOut(
            draft=draft,
            baseRevision=found.base_revision,
            revision=store.revision(),
            entries=[_diff_entry_out(e) for e in entries],
        )

    @router.post("/{draft}/commit", summary="Commit the draft atomically (validated as apply)")
    def commit_draft(draft: DraftName, expect_revision: ExpectRevision = None) -> ApplyOut:
        return apply_out(live.commit_draft(draft, expect_revision=expect_revision))

    return router


def _key_fields(key: ObjectKey) -> dict[str, Any]:
    return {"kind": key.kind, "project": key.project, "name": key.name}


def _draft_out(draft: Draft) -> DraftOut:
    changes = [
        ChangeOut(op="delete", body=None, **_key_fields(c.key))
        if isinstance(c, Delete)
        else ChangeOut(op="put", body=dict(c.body), **_key_fields(c.key))
        for c in draft.changes
    ]
    return DraftOut(
        name=draft.name, baseRevision=draft.base_revision, created=draft.created, changes=changes
    )


def _diff_entry_out(entry: DiffEntry) -> DiffEntryOut:
    return DiffEntryOut(
        op=entry.op,
        live=None if entry.live_body is None else dict(entry.live_body),
        draft=None if entry.draft_body is None else dict(entry.draft_body),
        **_key_fields(entry.key),
    )
