"""Which flows a query reads: ``FlowFilter`` (built from what a user typed, every mistake a
``FilterError`` naming the field), the other query arguments (``Metric``) and their checks,
and the SQL ``WHERE`` terms a filter becomes.  Pure: builds text; ``_queries.py`` puts the
terms into queries.

Verdict of a flow (DESIGN §2, "Both ends enforce"), from the per-end codes:

* deny: either end denied;  allow: no end denied and at least one end allowed;
* would-deny: an audit policy at either end would deny;  would-allow: an audit policy would
  allow and none would deny.  Collector records carry no verdict and are none of these.

Time ranges are half-open on ``start_ms``: ``since_ms <= start_ms < until_ms``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..model import Op, SelectorSyntaxError, parse_selector
from ._batch import Verdict

__all__ = [
    "ALLOWED",
    "DENIED",
    "PROTOCOLS",
    "WORKLOAD",
    "WOULD_ALLOW",
    "WOULD_DENY",
    "FilterError",
    "FlowFilter",
    "FlowVerdict",
    "Metric",
    "TagTerm",
    "check_count",
    "check_group_type",
    "conditions",
    "raw_where",
]

# The verdicts of the module docstring as SQL conditions on a flow row.
DENIED = f"(src_verdict = {Verdict.DENY:d} OR dst_verdict = {Verdict.DENY:d})"
ALLOWED = f"(NOT {DENIED} AND (src_verdict = {Verdict.ALLOW:d} OR dst_verdict = {Verdict.ALLOW:d}))"
WOULD_DENY = f"(src_audit = {Verdict.WOULD_DENY:d} OR dst_audit = {Verdict.WOULD_DENY:d})"
WOULD_ALLOW = (
    f"(NOT {WOULD_DENY} AND "
    f"(src_audit = {Verdict.WOULD_ALLOW:d} OR dst_audit = {Verdict.WOULD_ALLOW:d}))"
)


class FilterError(ValueError):
    """A query argument is wrong; the API answers 4xx with these attributes."""

    def __init__(self, field: str, value: object, reason: str, allowed: Sequence[str] = ()) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.allowed = tuple(allowed)
        hint = f" (allowed: {', '.join(self.allowed)})" if self.allowed else ""
        super().__init__(f"flow query field {field!r} = {value!r}: {reason}{hint}")


class FlowVerdict(enum.Enum):
    """A flow's verdict as a filter names it (see the module docstring)."""

    ALLOW = "allow"
    DENY = "deny"
    WOULD_DENY = "would-deny"
    WOULD_ALLOW = "would-allow"


class Metric(enum.Enum):
    """What ranks top talkers."""

    BYTES = "bytes"  # both directions
    FLOWS = "flows"


@dataclass(frozen=True, slots=True)
class TagTerm:
    """``key=value``: the end carries ``value`` among its values of tag type ``key``."""

    key: str
    value: str

    @classmethod
    def parse(cls, field: str, text: str) -> TagTerm:
        try:
            requirements = parse_selector(text).requirements
        except SelectorSyntaxError as exc:
            raise FilterError(field, text, exc.reason) from exc
        if len(requirements) != 1 or requirements[0].op is not Op.IN or "!=" in text:
            raise FilterError(field, text, "expected one tag as type=value")
        (value,) = requirements[0].values
        return cls(requirements[0].key, value)


PROTOCOLS: Mapping[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
WORKLOAD = "workload"  # the group type that names the workload itself


@dataclass(frozen=True, slots=True)
class FlowFilter:
    """Which flows a query reads; every condition given must hold (AND).

    ``tags`` hold at either end, ``src_tags``/``dst_tags`` at that end; ``workload`` names
    either end's workload; ``policy``/``rule`` match the deciding policy or rule at either
    end, enforced or audited; ``port`` is the destination port.  Build it from text with
    :meth:`of`; the constructor checks ranges.  Raises ``FilterError`` naming the field.
    """

    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    tags: tuple[TagTerm, ...] = ()
    src_tags: tuple[TagTerm, ...] = ()
    dst_tags: tuple[TagTerm, ...] = ()
    workload: str | None = None
    verdict: FlowVerdict | None = None
    policy: str | None = None
    rule: str | None = None
    proto: int | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and until < since:
            raise FilterError("until_ms", self.until_ms, "is before since_ms")
        if self.proto is not None and not 0 <= self.proto <= 255:
            raise FilterError("proto", self.proto, "is not an IP protocol number (0-255)")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise FilterError("port", self.port, "is not a port number (0-65535)")

    @classmethod
    def of(
        cls,
        *,
        since_ms: int | str | None = None,
        until_ms: int | str | None = None,
        tags: Sequence[str] = (),
        src_tags: Sequence[str] = (),
        dst_tags: Sequence[str] = (),
        workload: str | None = None,
        verdict: str | None = None,
        policy: str | None = None,
        rule: str | None = None,
        proto: int | str | None = None,
        port: int | str | None = None,
    ) -> FlowFilter:
        """A filter from what a user typed (query parameters, CLI options)."""
        allowed = [v.value for v in FlowVerdict]
        if verdict is not None and verdict not in allowed:
            raise FilterError("verdict", verdict, "is not a verdict", allowed)
        if isinstance(proto, str) and not proto.isdigit():
            if proto.lower() not in PROTOCOLS:
                raise FilterError("proto", proto, "is not a protocol", list(PROTOCOLS))
            proto = PROTOCOLS[proto.lower()]
        return cls(
            since_ms=_integer("since_ms", since_ms),
            until_ms=_integer("until_ms", until_ms),
            tags=tuple(TagTerm.parse("tags", t) for t in tags),
            src_tags=tuple(TagTerm.parse("src_tags", t) for t in src_tags),
            dst_tags=tuple(TagTerm.parse("dst_tags", t) for t in dst_tags),
            workload=workload,
            verdict=None if verdict is None else FlowVerdict(verdict),
            policy=policy,
            rule=rule,
            proto=_integer("proto", proto),
            port=_integer("port", port),
        )

    @property
    def rollup_compatible(self) -> bool:
        """The rollup keeps no verdict codes nor rules, so it answers only filters on
        time, tags, workload, protocol and port."""
        return self.verdict is None and self.policy is None and self.rule is None


def _integer(field: str, value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise FilterError(field, value, "is not an integer") from None


def check_group_type(field: str, name: str) -> str:
    """``name`` if it is ``workload`` or a syntactically valid tag type."""
    if name == WORKLOAD:
        return name
    try:
        requirements = parse_selector(name).requirements
    except SelectorSyntaxError as exc:
        raise FilterError(field, name, exc.reason) from exc
    if len(requirements) != 1 or requirements[0].op is not Op.EXISTS:
        raise FilterError(field, name, "is not a tag type (nor 'workload')")
    return name


def check_count(field: str, value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise FilterError(field, value, f"must be between 1 and {maximum}")
    return value


_VERDICT_SQL = {
    FlowVerdict.ALLOW: ALLOWED,
    FlowVerdict.DENY: DENIED,
    FlowVerdict.WOULD_DENY: WOULD_DENY,
    FlowVerdict.WOULD_ALLOW: WOULD_ALLOW,
}


def conditions(f: FlowFilter) -> tuple[list[str], list[object]]:
    """WHERE terms that need no time column (they hold on raw rows and on rollup rows, except
    verdict, policy and rule, which only raw rows carry)."""
    terms: list[str] = []
    params: list[object] = []
    tag_ids = "(SELECT id FROM endpoints WHERE list_contains(tags[?], ?))"
    for term in f.tags:
        terms.append(f"(src_ep IN {tag_ids} OR dst_ep IN {tag_ids})")
        params += [term.key, term.value, term.key, term.value]
    for column, ends in (("src_ep", f.src_tags), ("dst_ep", f.dst_tags)):
        for term in ends:
            terms.append(f"{column} IN {tag_ids}")
            params += [term.key, term.value]
    if f.workload is not None:
        named = "(SELECT id FROM endpoints WHERE workload = ?)"
        terms.append(f"(src_ep IN {named} OR dst_ep IN {named})")
        params += [f.workload, f.workload]
    if f.proto is not None:
        terms.append("proto = ?")
        params.append(f.proto)
    if f.port is not None:
        terms.append("dst_port = ?")
        params.append(f.port)
    if f.verdict is not None:
        terms.append(_VERDICT_SQL[f.verdict])
    for field, value in (("policy", f.policy), ("rule", f.rule)):
        if value is not None:
            ids = f"(SELECT id FROM rules WHERE {field} = ?)"  # field: one of two literals
            columns = ("src_rule", "dst_rule", "src_audit_rule", "dst_audit_rule")
            terms.append("(" + " OR ".join(f"{c} IN {ids}" for c in columns) + ")")
            params += [value] * len(columns)
    return terms, params


def raw_where(
    f: FlowFilter, since_ms: int | None, until_ms: int | None
) -> tuple[str, list[object]]:
    terms, params = conditions(f)
    if since_ms is not None:
        terms.insert(0, "start_ms >= ?")
        params.insert(0, since_ms)
    if until_ms is not None:
        terms.insert(1 if since_ms is not None else 0, "start_ms < ?")
        params.insert(1 if since_ms is not None else 0, until_ms)
    return (" WHERE " + " AND ".join(terms)) if terms else "", params
