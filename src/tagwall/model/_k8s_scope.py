"""Kubernetes import, shared machinery: reading untrusted fields, reporting, emitting manifests.

A ``Scope`` stands for one Kubernetes document being translated.  It reads fields with their
expected JSON types, turns every surprise into a ``Problem`` naming the document's source, kind,
name, field path and value (reading goes on, so one run reports everything), and emits native
documents that keep the Kubernetes document's ``source`` and ``index``, so a later validation
error still points at the user's file.  The ``Import`` it belongs to collects what the whole run
needs at the end: the problems, the tag types used and the namespaces referenced.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import Problem
from ._manifest import Document, Json

__all__ = ["API_VERSION", "NS_NAME_TYPE", "Import", "Scope", "fit_name"]

API_VERSION = "tagwall/v1"
# Kubernetes sets this label on every namespace; as a project tag it marks every imported pod.
NS_NAME_TYPE = "ns:kubernetes.io/metadata.name"

_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")
_NAME_MAX = 253


def fit_name(name: str) -> str:
    """``name`` if it is a valid object name, else a shortened one ending in a stable hash."""
    if _NAME_RE.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    head = re.sub(r"[^A-Za-z0-9._/-]", "-", name)[: _NAME_MAX - len(digest) - 1].strip("._/-")
    return f"{head}-{digest}" if head else digest


@dataclass
class Import:
    """State of one ``translate`` call, shared by the scopes of all its documents.

    Invariant: ``tag_types`` and ``namespaces`` map each name to the first document that used
    it (the generated TagType or Project points there).
    """

    problems: list[Problem] = field(default_factory=list)
    tag_types: dict[str, Document] = field(default_factory=dict)
    namespaces: dict[str, Document] = field(default_factory=dict)


def at(path: str, key: str | int) -> str:
    """Extend a field path: ``at("spec", "ingress")``, ``at("spec.ingress", 0)``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass
class Scope:
    """One Kubernetes document; ``name`` is ``<namespace>/<name>`` for namespaced kinds."""

    imp: Import
    doc: Document
    name: str

    # -- bookkeeping ------------------------------------------------------------------------

    def problem(
        self, path: str, reason: str, value: object = None, allowed: Sequence[str] = ()
    ) -> None:
        self.imp.problems.append(
            Problem(
                reason,
                path=path,
                kind=self.doc.kind,
                name=self.name,
                source=self.doc.where,
                value=value,
                allowed=tuple(allowed),
            )
        )

    def use_type(self, tag_type: str) -> str:
        self.imp.tag_types.setdefault(tag_type, self.doc)
        return tag_type

    def use_namespace(self, namespace: str) -> str:
        self.imp.namespaces.setdefault(namespace, self.doc)
        return namespace

    def emit(
        self, kind: str, name: str, spec: dict[str, Json], project: str | None = None
    ) -> Document:
        # TagType names are tag types (``ns:team``), not object names: they are never shortened.
        meta: dict[str, Json] = {"name": name if kind == "TagType" else fit_name(name)}
        if project is not None:
            meta["project"] = project
        body: dict[str, Json] = {"apiVersion": API_VERSION, "kind": kind, "metadata": meta}
        if spec:
            body["spec"] = spec
        return Document(body, self.doc.source, self.doc.index)

    # -- reading ----------------------------------------------------------------------------

    def mapping(self, parent: Mapping[str, Json], key: str, path: str) -> dict[str, Json]:
        """``parent[key]`` as a mapping; absent or null reads as ``{}``."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(at(path, key), "must be a mapping", value)
            return {}
        return value

    def listing(self, parent: Mapping[str, Json], key: str, path: str) -> list[Json]:
        """``parent[key]`` as a list; absent or null reads as ``[]``."""
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(at(path, key), "must be a list", value)
            return []
        return value

    def text(
        self, parent: Mapping[str, Json], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.problem(at(path, key), "is required")
            return None
        if not isinstance(value, str) or (required and not value):
            self.problem(at(path, key), "must be a non-empty string", value)
            return None
        return value

    def number(
        self, parent: Mapping[str, Json], key: str, path: str, low: int, high: int
    ) -> int | None:
        """A required integer in ``low..high`` (both inclusive)."""
        value = parent.get(key)
        if value is None:
            self.problem(at(path, key), "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(at(path, key), f"must be an integer in {low}-{high}", value)
            return None
        return value

    def known(
        self,
        parent: Mapping[str, Json],
        allowed: Sequence[str],
        path: str,
        reasons: Mapping[str, str] | None = None,
    ) -> bool:
        """Report every key of ``parent`` outside ``allowed``: ignoring it could change meaning.

        ``reasons`` gives a better reason for some keys.  True when every key is allowed.
        """
        ok = True
        for key in parent:
            if key not in allowed:
                reason = (reasons or {}).get(key, "is not supported")
                self.problem(at(path, key), reason, parent[key], allowed)
                ok = False
        return ok

    def one_of(self, parent: Mapping[str, Json], options: Sequence[str], path: str) -> str | None:
        """The single key of ``options`` set in ``parent`` (API rule "exactly one field")."""
        present = [key for key in options if parent.get(key) is not None]
        if len(present) != 1:
            self.problem(path, "exactly one of these fields must be set", dict(parent), options)
            return None
        return present[0]
