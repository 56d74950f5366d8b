"""Reading manifests: YAML or JSON text → raw documents that remember where they came from.

A source holds one or many documents: YAML separated by ``---``, one JSON object, a JSON list
of objects, or a ``kind: List`` with ``items`` (what ``kubectl get -o yaml`` prints).  Empty
YAML documents are skipped.  Nothing here knows the kinds; ``validate`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from ..errors import Problem, ValidationError

__all__ = ["Document", "Json", "parse_documents"]

Json = dict[str, "Json"] | list["Json"] | str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Document:
    """One manifest as written.  ``index`` is its 0-based position in ``source``."""

    body: Mapping[str, Json]
    source: str = "<input>"
    index: int = 0

    @property
    def where(self) -> str:
        return f"{self.source}#{self.index}"

    @property
    def kind(self) -> str:
        kind = self.body.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        meta = self.body.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""


def parse_documents(text: str, source: str = "<input>") -> list[Document]:
    """Parse every document of ``text``; raises ``ValidationError`` naming ``source``."""
    stripped = text.lstrip()
    raw: list[object]
    try:
        if stripped.startswith(("{", "[")):
            loaded = json.loads(text)
            raw = loaded if isinstance(loaded, list) else [loaded]
        else:
            raw = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise ValidationError([Problem(f"not valid YAML or JSON: {exc}", source=source)]) from exc
    flat: list[object] = []
    for doc in raw:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            flat.extend(doc["items"])
        else:
            flat.append(doc)
    problems: list[Problem] = []
    docs: list[Document] = []
    for index, doc in enumerate(flat):
        if not isinstance(doc, dict):
            problems.append(
                Problem(
                    f"a manifest must be a mapping, not {type(doc).__name__}",
                    source=f"{source}#{index}",
                )
            )
            continue
        docs.append(Document({str(k): _plain(v) for k, v in doc.items()}, source, index))
    if problems:
        raise ValidationError(problems)
    return docs


def _plain(value: object) -> Json:
    """YAML may produce dates and other types; keep JSON types, stringify the rest."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
