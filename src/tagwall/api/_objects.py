"""Objects: list, get, put and delete per kind, and ``apply`` of many manifests at once.

Every write goes through ``LiveConfig.commit``: the whole would-be configuration is validated
and committed as one revision, or refused (422 with every problem) with nothing written.
Routes are generated per kind from ``tagwall.kinds.KIND_OF_PLURAL``; names may contain ``/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from ..errors import NotFoundError, Problem, ValidationError
from ..kinds import KIND_OF_PLURAL, NAMESPACED_KUBERNETES_KINDS, PLURAL_OF_KIND, known_kinds
from ..model import Document
from ..store import Change, CommitResult, Delete, ObjectKey, Put
from ._http import MANIFEST_OPENAPI, manifest_text, parse_manifests
from ._live import LiveConfig, Origin

__all__ = [
    "ApplyOut",
    "ExpectRevision",
    "ResultOut",
    "apply_out",
    "changes_of",
    "object_key",
    "objects_router",
]

ProjectQuery = Annotated[
    str | None,
    Query(
        description="Project (or Kubernetes namespace); omitted: global, or every project "
        "when listing"
    ),
]
ExpectRevision = Annotated[
    int | None,
    Query(alias="expectRevision", description="Refuse with 409 unless this is the revision"),
]


class RevisionOut(BaseModel):
    revision: int


class ListOut(BaseModel):
    revision: int
    items: list[dict[str, Any]]


class ResultOut(BaseModel):
    kind: str
    project: str | None
    name: str
    outcome: str  # created | configured | unchanged | deleted


class ApplyOut(BaseModel):
    """``revision``: the new one, or the current one for a dry run or an all-no-op write."""

    revision: int
    dryRun: bool = False  # the wire name
    results: list[ResultOut]


def apply_out(result: CommitResult, *, dry_run: bool = False) -> ApplyOut:
    return ApplyOut(
        revision=result.revision,
        dryRun=dry_run,
        results=[
            ResultOut(kind=k.kind, project=k.project, name=k.name, outcome=o)
            for k, o in result.outcomes
        ],
    )


def changes_of(
    documents: Sequence[Document], *, kind: str | None = None
) -> tuple[list[Change], dict[ObjectKey, Origin]]:
    """``Put`` changes for ``documents``, each with its origin; every problem at once.

    Refused: a kind the API does not serve (or, with ``kind``, any other kind), a document
    without a key, and two documents with one key (which one should win is not ours to guess).
    """
    problems: list[Problem] = []
    changes: list[Change] = []
    origins: dict[ObjectKey, Origin] = {}
    for doc in documents:
        if kind is not None and doc.kind != kind:
            problems.append(
                Problem(
                    f"this route takes {kind}",
                    path="kind",
                    value=doc.kind or None,
                    source=doc.where,
                    allowed=(kind,),
                )
            )
            continue
        if doc.kind and doc.kind not in PLURAL_OF_KIND:
            problems.append(
                Problem(
                    "unknown kind",
                    path="kind",
                    value=doc.kind,
                    source=doc.where,
                    allowed=known_kinds(),
                )
            )
            continue
        try:
            put = Put(doc.body)
        except ValidationError as exc:
            problems.extend(replace(p, source=doc.where) for p in exc.problems)
            continue
        if put.key in origins:
            first = origins[put.key]
            problems.append(
                Problem(
                    f"{put.key} appears twice (first as document #{first.index})",
                    path="metadata.name",
                    kind=doc.kind,
                    name=doc.name,
                    source=doc.where,
                )
            )
            continue
        origins[put.key] = Origin(doc.source, doc.index)
        changes.append(put)
    if problems:
        raise ValidationError(problems)
    return changes, origins


def object_key(kind: str, project: str | None, name: str) -> ObjectKey:
    """The key of ``kind``/``name`` in ``project``, defaulting as the store's ``key_of`` does."""
    if kind in NAMESPACED_KUBERNETES_KINDS and not project:
        project = "default"
    try:
        return ObjectKey(kind, project or None, name)
    except ValueError as exc:
        raise NotFoundError(kind, name) from exc


def objects_router(live: LiveConfig) -> APIRouter:
    router = APIRouter()

    @router.get("/revision", summary="The current configuration revision", tags=["objects"])
    def get_revision() -> RevisionOut:
        return RevisionOut(revision=live.store.revision())

    @router.post(
        "/apply",
        summary="Create or replace many manifests in one atomic, validated commit",
        tags=["objects"],
        openapi_extra=MANIFEST_OPENAPI,
    )
    def apply(
        text: Annotated[str, Depends(manifest_text)],
        dry_run: Annotated[bool, Query(alias="dryRun")] = False,
        expect_revision: ExpectRevision = None,
    ) -> ApplyOut:
        documents = parse_manifests(text)
        if not documents:
            raise ValidationError([Problem("the body holds no manifest", source="<api>")])
        changes, origins = changes_of(documents)
        result = live.commit(changes, origins, dry_run=dry_run, expect_revision=expect_revision)
        return apply_out(result, dry_run=dry_run)

    for plural, kind in KIND_OF_PLURAL.items():
        _add_kind_routes(router, live, plural, kind)
    return router


def _add_kind_routes(router: APIRouter, live: LiveConfig, plural: str, kind: str) -> None:
    """GET list, GET one, PUT and DELETE for ``kind`` at ``/{plural}``."""

    one = f"/{plural}/{{name:path}}"

    @router.get(
        f"/{plural}", summary=f"List {kind}", tags=["objects"], operation_id=f"list_{plural}"
    )
    def list_objects(project: ProjectQuery = None) -> ListOut:
        snap = live.snapshot(kind, project or None)
        return ListOut(revision=snap.revision, items=[dict(o.body) for o in snap.objects])

    @router.get(one, summary=f"Get one {kind}", tags=["objects"], operation_id=f"get_{plural}")
    def get_object(name: str, project: ProjectQuery = None) -> dict[str, Any]:
        stored = live.store.get(object_key(kind, project, name))
        if stored is None:
            raise NotFoundError(kind, f"{project}/{name}" if project else name)
        return dict(stored.body)

    @router.put(
        one,
        summary=f"Create or replace one {kind} (validated with everything else)",
        tags=["objects"],
        operation_id=f"put_{plural}",
        openapi_extra=MANIFEST_OPENAPI,
    )
    def put_object(
        name: str,
        text: Annotated[str, Depends(manifest_text)],
        project: ProjectQuery = None,
        expect_revision: ExpectRevision = None,
    ) -> ApplyOut:
        documents = parse_manifests(text)
        if len(documents) != 1:
            raise ValidationError(
                [Problem(f"PUT takes exactly one manifest, got {len(documents)}", source="<api>")]
            )
        changes, origins = changes_of(documents, kind=kind)
        key = changes[0].key
        problems = []
        if key.name != name:
            problems.append(
                Problem(
                    f"must be {name!r}, the name in the URL",
                    path="metadata.name",
                    kind=kind,
                    value=key.name,
                )
            )
        if project and key.project != project:
            field = "namespace" if kind in NAMESPACED_KUBERNETES_KINDS else "project"
            problems.append(
                Problem(
                    f"must be {project!r}, the project in the URL",
                    path=f"metadata.{field}",
                    kind=kind,
                    name=name,
                    value=key.project,
                )
            )
        if problems:
            raise ValidationError([replace(p, source="<api>#0") for p in problems])
        return apply_out(live.commit(changes, origins, expect_revision=expect_revision))

    @router.delete(
        one,
        summary=f"Delete one {kind} (refused while something refers to it)",
        tags=["objects"],
        operation_id=f"delete_{plural}",
    )
    def delete_object(
        name: str, project: ProjectQuery = None, expect_revision: ExpectRevision = None
    ) -> ApplyOut:
        key = object_key(kind, project, name)
        try:
            return apply_out(live.commit([Delete(key)], {}, expect_revision=expect_revision))
        except ValidationError as exc:  # say why a delete of a valid object can be invalid
            why = Problem(
                f"deleting {key} would leave the objects below invalid",
                kind=kind,
                name=key.qualified_name,
            )
            raise ValidationError([why, *exc.problems]) from exc
