"""Object keys: which (kind, project, name) a raw manifest is stored under.

The store holds manifests as the user wrote them, native tagwall kinds and Kubernetes kinds
alike, so it cannot lean on validated model objects to name them.  ``key_of`` reads only
``kind``, ``apiVersion`` and ``metadata``; everything else is the validator's business.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import Problem, ValidationError
from ..model import Json

__all__ = ["ALL", "KUBERNETES_KINDS", "ObjectKey", "canonical_json", "key_of"]


class _All(enum.Enum):
    ALL = "ALL"

    def __repr__(self) -> str:
        return "ALL"


ALL = _All.ALL
"""Sentinel for ``list(project=ALL)``: every project and the global objects (``None``)."""

# The Kubernetes kinds tagwall imports (``tagwall.model.KUBERNETES_KINDS``; a test keeps the
# two equal).  Pod and NetworkPolicy live in a namespace, "default" when metadata.namespace is
# absent or empty, as kubectl does; the others are cluster-scoped.
_NAMESPACED = frozenset({"Pod", "NetworkPolicy"})
_CLUSTER_SCOPED = frozenset(
    {"Namespace", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"}
)
KUBERNETES_KINDS = _NAMESPACED | _CLUSTER_SCOPED


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class ObjectKey:
    """Identity of one stored manifest.

    ``project`` is the tagwall project (``metadata.project``) or the Kubernetes namespace
    (``metadata.namespace``); ``None`` means global / cluster-scoped.  Keys sort by
    (kind, project, name) with ``None`` before every project.

    Invariant: ``kind`` and ``name`` are non-empty; ``project`` is ``None`` or non-empty (so
    the SQLite encoding of ``None`` as ``""`` is unambiguous).
    """

    kind: str
    project: str | None
    name: str

    def __post_init__(self) -> None:
        if not self.kind or not self.name or self.project == "":
            raise ValueError(f"invalid ObjectKey {self.kind!r}, {self.project!r}, {self.name!r}")

    def sort_tuple(self) -> tuple[str, str, str]:
        return (self.kind, self.project or "", self.name)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ObjectKey):
            return NotImplemented
        return self.sort_tuple() < other.sort_tuple()

    @property
    def qualified_name(self) -> str:
        """``project/name`` or ``name``: how kubectl and the CLI print it."""
        return f"{self.project}/{self.name}" if self.project else self.name

    def __str__(self) -> str:
        return f"{self.kind}/{self.qualified_name}"


def _is_kubernetes(body: Mapping[str, Json], kind: str) -> bool:
    # As the model decides it: a Kubernetes kind not written with a tagwall apiVersion.
    api_version = body.get("apiVersion")
    tagwall = isinstance(api_version, str) and api_version.startswith("tagwall/")
    return kind in KUBERNETES_KINDS and not tagwall


def key_of(body: Mapping[str, Json]) -> ObjectKey:
    """The key ``body`` is stored under; ``ValidationError`` if it cannot have one.

    Cases:
    - native (any kind but the Kubernetes ones, or those with ``apiVersion: tagwall/...``):
      project = ``metadata.project``, absent or empty = global (``None``);
    - Kubernetes cluster-scoped kinds (Namespace, AdminNetworkPolicy,
      BaselineAdminNetworkPolicy, ClusterNetworkPolicy): project = ``None``;
    - Pod and NetworkPolicy: project = ``metadata.namespace``, absent or empty =
      ``"default"``.

    Example: ``{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}}`` →
    ``ObjectKey("Pod", "default", "web")``.
    """
    kind = body.get("kind")
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    raw_kind = kind if isinstance(kind, str) else ""
    problems: list[Problem] = []
    if not isinstance(kind, str) or not kind:
        problems.append(Problem("kind must be a non-empty string", path="kind", value=kind))
    if not isinstance(meta, dict):
        problems.append(Problem("metadata must be a mapping", path="metadata", kind=raw_kind))
    elif not isinstance(name, str) or not name:
        problems.append(
            Problem(
                "metadata.name must be a non-empty string",
                path="metadata.name",
                kind=raw_kind,
                value=name,
            )
        )
    if problems or not isinstance(meta, dict) or not isinstance(name, str):
        raise ValidationError(problems)
    if _is_kubernetes(body, raw_kind):
        if raw_kind in _CLUSTER_SCOPED:
            return ObjectKey(raw_kind, None, name)
        field, default = "namespace", "default"
    else:
        field, default = "project", ""
    project = meta.get(field)
    if project is not None and not isinstance(project, str):
        raise ValidationError(
            [
                Problem(
                    f"metadata.{field} must be a string",
                    path=f"metadata.{field}",
                    kind=raw_kind,
                    name=name,
                    value=project,
                )
            ]
        )
    return ObjectKey(raw_kind, project or default or None, name)


def canonical_json(body: Mapping[str, Json]) -> str:
    """Order-independent JSON text: two bodies are "unchanged" iff their canonical texts match.

    Unlike ``==`` on dicts it keeps ``true`` apart from ``1`` and ``1`` apart from ``1.0``.
    Raises ``ValueError`` for NaN/infinity and ``TypeError`` for non-JSON values.
    """
    return json.dumps(dict(body), sort_keys=True, separators=(",", ":"), allow_nan=False)
