"""Reading manifests: YAML or JSON text → raw documents that remember where they came from.

A source holds one or many documents: YAML separated by ``---``, one JSON object, a JSON list
of objects, or a ``kind: List`` with ``items`` (what ``kubectl get -o yaml`` prints).  Empty
YAML documents are skipped.  Nothing here knows the kinds; ``validate`` does.

Every caller reads untrusted text through here (the CLI's files, the API's bodies), so the
limits live here too, and each is a ``ValidationError``, never a crash:

- YAML aliases are expanded into copies: a few hundred bytes of nested aliases ("billion
  laughs") would expand to billions of nodes.  The node graph is measured before anything is
  built, and input whose aliases expand it past ``MAX_EXPANDED_NODES`` is refused.  Input
  without aliases is bounded by its own length, which the caller bounds (the API's body cap).
- An alias inside its own anchor (``&a [*a]``) would build a cyclic value; it is refused.
- Mappings and lists nested more than ``MAX_NESTING_LEVELS`` deep are refused, so that no
  later stage (validation, storage, rendering) recurses out of stack.  Deeper input that makes
  the parsers themselves recurse out is reported the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from ..errors import Problem, ValidationError

__all__ = ["MAX_EXPANDED_NODES", "MAX_NESTING_LEVELS", "Document", "Json", "parse_documents"]

MAX_EXPANDED_NODES = 1_000_000  # YAML nodes after alias expansion, inclusive
MAX_NESTING_LEVELS = 100  # mappings and lists inside one another, inclusive: {a: [1]} is 2

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
    """Parse every document of ``text``; raises ``ValidationError`` naming ``source``.

    Refuses, with one ``Problem`` naming ``source`` and the reason: text that is neither YAML
    nor JSON, aliases expanding past ``MAX_EXPANDED_NODES``, cyclic aliases, and nesting past
    ``MAX_NESTING_LEVELS``.  Every document that is not a mapping is reported, as
    ``source#index``.
    """
    stripped = text.lstrip()
    raw: list[object]
    try:
        if stripped.startswith(("{", "[")):
            loaded = json.loads(text)
            raw = loaded if isinstance(loaded, list) else [loaded]
            if _json_levels(loaded) > MAX_NESTING_LEVELS:
                raise _too_deep(source)
        else:
            raw = [doc for doc in _load_yaml(text, source) if doc is not None]
    except RecursionError as exc:
        # The parsers recurse per level: input this deep never reaches the level count.
        raise _too_deep(source) from exc
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


# -- limits -----------------------------------------------------------------------------------


def _too_deep(source: str) -> ValidationError:
    return ValidationError(
        [
            Problem(
                f"the input is nested more than {MAX_NESTING_LEVELS} levels deep "
                "(mappings and lists inside one another)",
                source=source,
            )
        ]
    )


def _load_yaml(text: str, source: str) -> list[object]:
    """Every YAML document of ``text``, each measured as a node graph before it is built."""
    loader = yaml.SafeLoader(text)
    docs: list[object] = []
    expanded = written = 0  # over all documents so far: nodes after / before alias expansion
    try:
        while loader.check_node():
            root = loader.get_node()
            if root is None:
                continue
            size, levels, distinct = _measure(root, source)
            expanded += size
            written += distinct
            if expanded > written and expanded > MAX_EXPANDED_NODES:
                raise ValidationError(
                    [
                        Problem(
                            f"YAML aliases expand to {expanded} nodes, over {MAX_EXPANDED_NODES}",
                            source=source,
                        )
                    ]
                )
            if levels > MAX_NESTING_LEVELS:
                raise _too_deep(source)
            docs.append(loader.construct_document(root))
    finally:
        loader.dispose()
    return docs


def _measure(root: yaml.Node, source: str) -> tuple[int, int, int]:
    """``(nodes after alias expansion, nesting levels, distinct nodes)`` of one document.

    Memoised by node identity, so each distinct node is visited once however often aliases
    repeat it (linear time), and iterative, so depth costs no stack.  The memo lives only as
    long as ``root`` keeps its nodes alive: identities are never compared across documents.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, levels)
    open_: set[int] = set()  # nodes whose children are still being measured
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_measured = stack.pop()
        if id(node) in measured:
            continue
        children = _children(node)
        if not children_measured:
            if id(node) in open_:
                raise ValidationError(
                    [Problem("a YAML alias refers to a node that contains it", source=source)]
                )
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in measured)
            continue
        open_.discard(id(node))
        size = 1 + sum(measured[id(child)][0] for child in children)
        levels = 0
        if isinstance(node, yaml.CollectionNode):
            levels = 1 + max((measured[id(child)][1] for child in children), default=0)
        measured[id(node)] = (size, levels)
    size, levels = measured[id(root)]
    return size, levels, len(measured)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _json_levels(value: object) -> int:
    """How many mappings and lists ``value`` nests inside one another (iterative)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_NESTING_LEVELS:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
