"""Every error tagwall raises on purpose, in one hierarchy.

::

    TagwallError                      base; never raised itself
    ├── ValidationError               input is wrong; carries every Problem found (HTTP 422)
    ├── NotFoundError                 a named object, draft or workload does not exist (HTTP 404)
    ├── ConflictError                 the write races another or breaks a precondition (HTTP 409)
    └── StoreError                    the store cannot do what was asked (HTTP 503)

Errors carry their values as attributes so that the REST API builds problem+json without
parsing messages, and the CLI prints the same facts.  A ``Problem`` names where the bad value
came from (file, object, field path), the value itself and the reason; ``allowed`` lists what
would have been accepted where that helps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "ConflictError",
    "NotFoundError",
    "Problem",
    "StoreError",
    "TagwallError",
    "ValidationError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one field of one input object."""

    reason: str
    path: str = ""  # dotted field path, e.g. "spec.rules[2].from.tags"
    kind: str = ""  # object kind, e.g. "FirewallPolicy"
    name: str = ""  # object name; "<namespace>/<name>" style names are kept as given
    source: str = ""  # file name, "<api>" or "<stdin>", plus "#<document index>"
    value: object = None
    allowed: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        where = ":".join(part for part in (self.source,) if part)
        obj = f"{self.kind}/{self.name}" if self.kind else ""
        head = " ".join(part for part in (where, obj) if part)
        at = f" {self.path}" if self.path else ""
        val = f" = {self.value!r}" if self.value is not None else ""
        allowed = f" (allowed: {', '.join(self.allowed)})" if self.allowed else ""
        return f"{head}{at}{val}: {self.reason}{allowed}".lstrip(": ")

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Problem:
        """The inverse of ``as_dict``: a problem as the API reports it (other keys ignored)."""
        allowed = raw.get("allowed")
        return cls(
            reason=str(raw.get("reason") or ""),
            path=str(raw.get("path") or ""),
            kind=str(raw.get("kind") or ""),
            name=str(raw.get("name") or ""),
            source=str(raw.get("source") or ""),
            value=raw.get("value"),
            allowed=tuple(str(a) for a in allowed) if isinstance(allowed, list) else (),
        )

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"reason": self.reason}
        for key in ("source", "kind", "name", "path"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.value is not None:
            out["value"] = (
                self.value if isinstance(self.value, str | int | float | bool) else repr(self.value)
            )
        if self.allowed:
            out["allowed"] = list(self.allowed)
        return out


class TagwallError(Exception):
    """Base of every error tagwall raises on purpose."""

    status = 500
    title = "tagwall error"


class ValidationError(TagwallError):
    """Input is invalid.  ``problems`` holds every problem found, not only the first."""

    status = 422
    title = "invalid input"

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        lines = [str(p) for p in self.problems] or ["invalid input"]
        super().__init__("\n".join(lines))


class NotFoundError(TagwallError):
    status = 404
    title = "not found"

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} {name!r} does not exist")


class ConflictError(TagwallError):
    status = 409
    title = "conflict"


class StoreError(TagwallError):
    status = 503
    title = "store unavailable"


class DatapathError(TagwallError):
    """A data path refused a program or a delta; the previous program stays in force."""

    status = 422
    title = "data path refused the program"
