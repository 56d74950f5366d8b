"""Tags and tag selectors (DESIGN §2).

A tag is ``type=value``.  The built-in types ``application``, ``tier``, ``deployment`` and
``site`` hold one value each; ``label`` holds many.  Custom types come from ``TagType``
objects.  ``project`` is a pseudo-tag: every workload carries ``project=<its project>`` (global
workloads carry none) and selectors may test it, but it is never written in ``tags``.

Selectors use the Kubernetes label-selector syntax, comma meaning AND::

    tier=web                 tier == web          tier != web
    application in (shop,crm)                     application notin (shop,crm)
    quarantine               (the type is present)
    !quarantine              (the type is absent)

On a many-valued type a requirement holds per value: ``label=pci`` holds when ``pci`` is one of
the values, ``label in (a,b)`` when one of them is, ``label!=pci`` / ``label notin (a,b)`` when
none is.  As in Kubernetes, ``!=`` and ``notin`` also hold when the type is absent.  The empty
selector matches every tagged endpoint.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "BUILTIN_MULTI_TYPES",
    "BUILTIN_SINGLE_TYPES",
    "PROJECT_PSEUDO_TAG",
    "Op",
    "Requirement",
    "Selector",
    "SelectorSyntaxError",
    "Tags",
    "parse_selector",
    "valid_tag_type",
    "valid_tag_value",
]

BUILTIN_SINGLE_TYPES = ("application", "tier", "deployment", "site")
BUILTIN_MULTI_TYPES = ("label",)
PROJECT_PSEUDO_TAG = "project"

# Kubernetes label keys ("prefix/name") are tag types too, so imported labels keep their keys;
# ":" is allowed for the "ns:" namespace-label types the Kubernetes import makes.
_TYPE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:/-]{0,251}[A-Za-z0-9])?$")
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")


def valid_tag_type(name: str) -> bool:
    return _TYPE_RE.fullmatch(name) is not None


def valid_tag_value(value: str) -> bool:
    """Tag values follow Kubernetes label values: ≤ 63 characters, may be empty."""
    return _VALUE_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Tags(Mapping[str, frozenset[str]]):
    """Immutable map from tag type to its values.

    Invariant: ``items`` is sorted by type, every value set is non-empty, and single-valued
    types hold exactly one value (checked by validation, not here).
    """

    items_: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, Iterable[str]]) -> Tags:
        pairs = [(k, frozenset(v)) for k, v in mapping.items()]
        return cls(tuple(sorted((k, v) for k, v in pairs if v)))

    def __getitem__(self, key: str) -> frozenset[str]:
        for k, v in self.items_:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def value(self, key: str) -> str | None:
        """The single value of ``key`` (for single-valued types), or None when absent."""
        vals = self.get(key)
        if not vals:
            return None
        return min(vals)

    def overlay(self, top: Tags) -> Tags:
        """Per type, ``top``'s values replace ours (workload over network over project)."""
        merged = dict(self.items_)
        merged.update(top.items_)
        return Tags(tuple(sorted(merged.items())))

    def to_manifest(self) -> dict[str, str | list[str]]:
        out: dict[str, str | list[str]] = {}
        for k, v in self.items_:
            out[k] = sorted(v) if k in BUILTIN_MULTI_TYPES or len(v) > 1 else next(iter(v))
        return out

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, vals in self.items_ for v in sorted(vals))


class Op(enum.Enum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, tags: Mapping[str, frozenset[str]]) -> bool:
        have = tags.get(self.key, frozenset())
        match self.op:
            case Op.IN:
                return not have.isdisjoint(self.values)
            case Op.NOT_IN:
                return have.isdisjoint(self.values)
            case Op.EXISTS:
                return bool(have)
            case Op.NOT_EXISTS:
                return not have

    def __str__(self) -> str:
        vals = ",".join(sorted(self.values))
        match self.op:
            case Op.IN:
                return f"{self.key}={vals}" if len(self.values) == 1 else f"{self.key} in ({vals})"
            case Op.NOT_IN:
                if len(self.values) == 1:
                    return f"{self.key}!={vals}"
                return f"{self.key} notin ({vals})"
            case Op.EXISTS:
                return self.key
            case Op.NOT_EXISTS:
                return f"!{self.key}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of requirements.  ``str()`` is canonical: equal selectors print equal."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, tags: Mapping[str, frozenset[str]]) -> bool:
        return all(r.matches(tags) for r in self.requirements)

    def keys(self) -> frozenset[str]:
        return frozenset(r.key for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(sorted(str(r) for r in self.requirements))


class SelectorSyntaxError(ValueError):
    """A selector string does not parse; ``position`` is the 0-based character offset."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        super().__init__(f"{reason} at character {position} of {text!r}")


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<op>==|!=|=|\(|\)|,|!)|(?P<word>[A-Za-z0-9_.:/-]+))",
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise SelectorSyntaxError(text, pos, f"unexpected character {text[pos]!r}")
        kind = "op" if m.group("op") else "word"
        start = m.start(kind)
        out.append((kind, m.group(kind), start))
        pos = m.end()
    return out


def parse_selector(text: str) -> Selector:
    """Parse Kubernetes label-selector syntax into a ``Selector``.

    Raises ``SelectorSyntaxError`` naming the position.  Keys and values are checked for
    syntax only; whether a type exists is the validator's business.
    """
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def expect_word(what: str) -> str:
        nonlocal i
        if i >= len(toks) or toks[i][0] != "word":
            pos = toks[i][2] if i < len(toks) else len(text)
            raise SelectorSyntaxError(text, pos, f"expected {what}")
        word = toks[i][1]
        i += 1
        return word

    while i < len(toks):
        negated = False
        if toks[i][:2] == ("op", "!"):
            negated = True
            i += 1
        key_pos = toks[i][2] if i < len(toks) else len(text)
        key = expect_word("a tag type")
        if not valid_tag_type(key):
            raise SelectorSyntaxError(text, key_pos, f"{key!r} is not a valid tag type")
        if negated:
            reqs.append(Requirement(key, Op.NOT_EXISTS))
        elif i >= len(toks) or toks[i][:2] == ("op", ","):
            reqs.append(Requirement(key, Op.EXISTS))
        elif toks[i][0] == "op" and toks[i][1] in ("=", "==", "!="):
            op = Op.NOT_IN if toks[i][1] == "!=" else Op.IN
            i += 1
            value_pos = toks[i][2] if i < len(toks) else len(text)
            value = expect_word("a value") if i < len(toks) and toks[i][0] == "word" else ""
            if not valid_tag_value(value):
                raise SelectorSyntaxError(text, value_pos, f"{value!r} is not a valid tag value")
            reqs.append(Requirement(key, op, frozenset({value})))
        elif toks[i][0] == "word" and toks[i][1] in ("in", "notin"):
            op = Op.IN if toks[i][1] == "in" else Op.NOT_IN
            i += 1
            if i >= len(toks) or toks[i][:2] != ("op", "("):
                pos = toks[i][2] if i < len(toks) else len(text)
                raise SelectorSyntaxError(text, pos, "expected '(' after " + op.value)
            i += 1
            values: set[str] = set()
            while True:
                value_pos = toks[i][2] if i < len(toks) else len(text)
                value = expect_word("a value")
                if not valid_tag_value(value):
                    raise SelectorSyntaxError(
                        text, value_pos, f"{value!r} is not a valid tag value"
                    )
                values.add(value)
                if i < len(toks) and toks[i][:2] == ("op", ","):
                    i += 1
                    continue
                if i < len(toks) and toks[i][:2] == ("op", ")"):
                    i += 1
                    break
                pos = toks[i][2] if i < len(toks) else len(text)
                raise SelectorSyntaxError(text, pos, "expected ',' or ')' in value list")
            reqs.append(Requirement(key, op, frozenset(values)))
        else:
            raise SelectorSyntaxError(text, toks[i][2], f"unexpected {toks[i][1]!r}")
        if i < len(toks):
            if toks[i][:2] != ("op", ","):
                raise SelectorSyntaxError(text, toks[i][2], f"expected ',' before {toks[i][1]!r}")
            i += 1
            if i >= len(toks):
                raise SelectorSyntaxError(text, len(text), "selector ends with ','")
    return Selector(tuple(sorted(set(reqs), key=str)))
