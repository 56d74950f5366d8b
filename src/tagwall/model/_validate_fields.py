"""Field readers for ``validate``: typed values out of raw manifest fields, a Problem per bad one.

Validation reports every problem, never only the first (STYLE, Errors).  So every reader here
records what is wrong and hands back a stand-in (None, an empty list or the default) that lets
the caller go on reading the other fields.  The stand-ins never reach a ``Config``: any recorded
problem makes ``validate`` raise.

A ``Reader`` belongs to one document: it stamps each Problem with the document's source, kind
and name.  The ``Scope`` is shared by every reader: it holds what the whole input declares and
what has been built so far, so references resolve against all documents in any order.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..errors import Problem
from ._manifest import Json
from ._objects import IPAddress, IPNetwork, Ref, TagType
from ._tags import PROJECT_PSEUDO_TAG
from ._validate_scope import Scope

__all__ = ["Reader", "describe", "join", "valid_name", "within"]

E = TypeVar("E", bound=enum.Enum)
D = TypeVar("D")

# Object names.  '/' is allowed because imported pods are named "<namespace>/<name>".
_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")
# How many candidate names a "no such object" problem lists before it stops helping.
_MAX_ALLOWED_LISTED = 20


def valid_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None  # "$" would accept a final "\n"


def describe(value: object) -> str:
    """The JSON type of ``value`` as a user wrote it: ``"a string"``, ``"a number"``, …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def join(path: str, key: str) -> str:
    """``join("spec.tags", "team")`` → ``spec.tags.team``; odd keys are quoted in brackets."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is None:
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def within(inner: IPNetwork, outer: IPNetwork) -> bool:
    """Is ``inner`` a subnet of ``outer``?  Prefixes of different families never are."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


@dataclass
class Reader:
    """Reads the fields of one document; every problem lands in ``problems``."""

    scope: Scope
    problems: list[Problem]
    source: str
    kind: str
    name: str
    project: str | None = None
    # False for a document whose name is invalid or taken: it is read for problems only, and
    # claims nothing (such as IP addresses) that a valid object could then collide with.
    registered: bool = True

    def problem(self, path: str, value: object, reason: str, allowed: Iterable[str] = ()) -> None:
        self.problems.append(
            Problem(reason, path, self.kind, self.name, self.source, value, tuple(allowed))
        )

    def wrong_type(self, path: str, value: object, expected: str) -> None:
        self.problem(path, value, f"must be {expected}, not {describe(value)}")

    def missing(self, path: str) -> None:
        self.problem(path, None, "required")

    # -- structure ----------------------------------------------------------------------------

    def fields(
        self, path: str, value: Json, known: Collection[str] | None, *, required: bool = False
    ) -> Mapping[str, Json] | None:
        """A mapping whose keys are all ``known`` (None: any key).  None if absent or wrong."""
        if value is None:
            if required:
                self.missing(path)
            return None
        if not isinstance(value, dict):
            self.wrong_type(path, value, "a mapping")
            return None
        if known is not None:
            for key in value:
                if key not in known:
                    self.problem(join(path, key), key, "unknown field", sorted(known))
        return value

    def element(self, path: str, value: Json, known: Collection[str]) -> Mapping[str, Json] | None:
        """A list element that must be a mapping (a null element is a wrong type, too)."""
        if value is None:
            self.wrong_type(path, value, "a mapping")
            return None
        return self.fields(path, value, known)

    def items(
        self, path: str, value: Json, *, required: bool = False, non_empty: bool = False
    ) -> list[tuple[str, Json]]:
        """The elements of a list, each with its path (``path[i]``)."""
        if value is None:
            if required:
                self.missing(path)
            return []
        if not isinstance(value, list):
            self.wrong_type(path, value, "a list")
            return []
        if non_empty and not value:
            self.problem(path, value, "must not be empty")
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]

    def strings(
        self, path: str, value: Json, *, required: bool = False, non_empty: bool = False
    ) -> list[tuple[str, str]]:
        """The string elements of a list, each with its path; other elements are problems."""
        out: list[tuple[str, str]] = []
        for item_path, item in self.items(path, value, required=required, non_empty=non_empty):
            if isinstance(item, str):
                out.append((item_path, item))
            else:
                self.wrong_type(item_path, item, "a string")
        return out

    # -- scalars ------------------------------------------------------------------------------

    def string(self, path: str, value: Json, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.missing(path)
            return None
        if not isinstance(value, str):
            self.wrong_type(path, value, "a string")
            return None
        return value

    def boolean(self, path: str, value: Json, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.wrong_type(path, value, "true or false")
            return default
        return value

    def integer(
        self, path: str, value: Json, default: D, *, lo: int | None = None, hi: int | None = None
    ) -> int | D:
        """A whole number in ``lo..hi`` (both inclusive).  ``"10"`` and ``true`` are errors:
        Contrail compared sequences as strings, a known defect (DESIGN §2)."""
        if value is None:
            return default
        if isinstance(value, float):
            if not value.is_integer():
                self.problem(path, value, "must be a whole number")
                return default
            value = int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            self.problem(
                path,
                value,
                f"must be a number, not a string (write {value.strip()} without quotes)",
            )
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(path, value, "a number")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if hi is None:
                self.problem(path, value, f"must be at least {lo}")
            elif lo is None:
                self.problem(path, value, f"must be at most {hi}")
            else:
                self.problem(path, value, f"must be in {lo}-{hi}")
            return default
        return value

    def positive(self, path: str, value: Json, default: float) -> float:
        """A number greater than zero (seconds, for instance)."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong_type(path, value, "a number")
            return default
        if value <= 0:
            self.problem(path, value, "must be greater than 0")
            return default
        return float(value)

    def choice(self, path: str, value: Json, enum_type: type[E], default: D) -> E | D:
        """One of the enum's values, spelled exactly (``"enforce"``, ``">"``, …)."""
        text = self.string(path, value)
        if text is None:
            return default
        for member in enum_type:
            if member.value == text:
                return member
        self.problem(path, text, "not an allowed value", [str(m.value) for m in enum_type])
        return default

    def object_name(self, path: str, value: Json, *, required: bool = False) -> str | None:
        text = self.string(path, value, required=required)
        if text is not None and not valid_name(text):
            self.problem(
                path,
                text,
                "not a valid name: 1-253 letters, digits, '.', '_', '/', '-', "
                "starting and ending with a letter or digit",
            )
            return None
        return text

    # -- addresses ----------------------------------------------------------------------------

    def ip(self, path: str, value: Json) -> IPAddress | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            self.problem(path, text, "not an IPv4 or IPv6 address")
            return None

    def cidr(self, path: str, value: Json) -> IPNetwork | None:
        """A prefix such as ``10.0.0.0/8``.  Host bits must be zero: ``10.1.2.3/8`` is a typo
        more often than it is meant, so it is an error that suggests the prefix."""
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return ipaddress.ip_network(text)
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.problem(path, text, "not an IPv4 or IPv6 prefix (CIDR), e.g. 10.0.0.0/8")
            return None
        self.problem(path, text, f"has host bits set; did you mean {loose}")
        return None

    def cidrs(self, path: str, value: Json, *, non_empty: bool = False) -> list[IPNetwork]:
        found = (self.cidr(p, item) for p, item in self.items(path, value, non_empty=non_empty))
        return [net for net in found if net is not None]

    # -- references ---------------------------------------------------------------------------

    def ref(self, path: str, value: Json, kind: str, *, required: bool = False) -> Ref | None:
        """Resolve a name of ``kind``: the reader's own project first, then global."""
        name = self.string(path, value, required=required)
        return None if name is None else self.resolve(path, name, kind)

    def resolve(self, path: str, name: str, kind: str) -> Ref | None:
        found = self.scope.where(kind, name)
        if self.project in found:
            return Ref(name, self.project)
        if None in found:
            return Ref(name)
        if found:
            owner = min(p for p in found if p is not None)
            rule = (
                "a project may use only its own or global objects"
                if self.project is not None
                else "a global object may use only global objects"
            )
            self.problem(path, name, f"{kind} {name!r} belongs to project {owner!r}; {rule}")
            return None
        visible = sorted(
            other
            for other, projects in self.scope.declared.get(kind, {}).items()
            if None in projects or self.project in projects
        )
        listed = visible if len(visible) <= _MAX_ALLOWED_LISTED else []
        self.problem(path, name, f"no {kind} named {name!r}", listed)
        return None

    def workload(self, path: str, value: Json, *, required: bool = False) -> str | None:
        """A workload name.  Workload names are global identities: any project's will do."""
        name = self.string(path, value, required=required)
        if name is None:
            return None
        if not self.scope.where("Workload", name):
            self.problem(path, name, f"no Workload named {name!r}")
            return None
        return name

    def tag_type(self, path: str, key: str, *, pseudo_ok: bool) -> TagType | None:
        """The declared or built-in tag type ``key``; ``project`` only where ``pseudo_ok``."""
        if key == PROJECT_PSEUDO_TAG:
            if pseudo_ok:
                return TagType(PROJECT_PSEUDO_TAG)
            self.problem(
                path,
                key,
                "'project' is a pseudo-tag taken from metadata.project; "
                "it cannot be written as a tag",
            )
            return None
        found = self.scope.tag_types.get(key)
        if found is None:
            known = sorted(self.scope.tag_types)
            self.problem(
                path,
                key,
                f"unknown tag type {key!r}; declare it with a TagType",
                [*known, PROJECT_PSEUDO_TAG] if pseudo_ok else known,
            )
        return found
