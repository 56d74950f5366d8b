"""The firewall's rules: a JSON/YAML-able document in, a validated ``RuleSet`` out; a request
in, a ``Verdict`` naming the deciding rule out.  Pure.

Document shape (the only top-level key is ``deny``)::

    deny:
    - name: no-admin            # required, unique: verdict logs name it
      path_prefix: /admin       # matched against HttpRequest.normalized_path
    - name: sqli
      query_regex: "(?i)union\\s+select"   # re.search on the decoded query
    - name: no-delete
      methods: [DELETE]         # also: host (exact, case-insensitive), path_regex

A rule matches when every condition it gives matches (at least one is required).  Cases of
``decide(rules, request)``:

- the first deny rule that matches → ``Verdict(DENY, rule)``;
- no rule matches → ``Verdict(ALLOW, None)``;
- ``decide_malformed()`` → ``Verdict(DENY, "malformed-request")``: a head the parser
  cannot read safely is never passed (a server might read it differently).

``parse_rules`` collects every problem of a document before raising ``RulesError``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._http import HttpRequest

__all__ = [
    "DEFAULT_RULES",
    "MALFORMED_RULE",
    "SQLI_PATTERN",
    "Action",
    "Rule",
    "RuleProblem",
    "RuleSet",
    "RulesError",
    "Verdict",
    "decide",
    "decide_malformed",
    "parse_rules",
]

SQLI_PATTERN = (
    r"(?i)('\s*(or|and)\s+[\w'\"]+\s*(=|like)"  # ' OR 1=1, ' or 'a'='a
    r"|\bunion\b(\s+all)?\s+select\b"  # UNION SELECT
    r"|;\s*--"  # ;--
    r"|'\s*--"  # '--
    r"|\b(or|and)\s+\d+\s*=\s*\d+)"  # OR 1=1 without a quote
)
DEFAULT_RULES: Mapping[str, Any] = {
    "deny": [
        {"name": "no-admin", "path_prefix": "/admin"},
        {"name": "sqli", "query_regex": SQLI_PATTERN},
    ]
}
MALFORMED_RULE = "malformed-request"
_CONDITIONS = ("path_prefix", "path_regex", "query_regex", "methods", "host")


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class Verdict:
    """What to do with one request; ``rule`` names the rule that decided (None: no rule
    matched and the request is allowed)."""

    action: Action
    rule: str | None


@dataclass(frozen=True)
class Rule:
    """One deny rule; a condition left as None is not checked."""

    name: str
    path_prefix: str | None = None
    path_regex: re.Pattern[str] | None = None
    query_regex: re.Pattern[str] | None = None
    methods: frozenset[str] | None = None
    host: str | None = None  # lower case

    def matches(self, request: HttpRequest) -> bool:
        path = request.normalized_path
        return (
            (self.path_prefix is None or path.startswith(self.path_prefix))
            and (self.path_regex is None or self.path_regex.search(path) is not None)
            and (
                self.query_regex is None
                or self.query_regex.search(request.decoded_query) is not None
            )
            and (self.methods is None or request.method.upper() in self.methods)
            and (self.host is None or (request.host or "").lower() == self.host)
        )


@dataclass(frozen=True)
class RuleSet:
    """Deny rules in document order.  Invariant: names are unique."""

    deny: tuple[Rule, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a rules document: ``path`` is the field (``deny[1].query_regex``)."""

    path: str
    value: object
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.value!r}: {self.reason}"


class RulesError(ValueError):
    """A rules document is invalid; ``problems`` lists every problem, ``source`` names the
    document (a file name, or ``<dict>``)."""

    def __init__(self, source: str, problems: list[RuleProblem]) -> None:
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))
        self.source = source
        self.problems = tuple(problems)


def decide(rules: RuleSet, request: HttpRequest) -> Verdict:
    for rule in rules.deny:
        if rule.matches(request):
            return Verdict(Action.DENY, rule.name)
    return Verdict(Action.ALLOW, None)


def decide_malformed() -> Verdict:
    return Verdict(Action.DENY, MALFORMED_RULE)


def _regex(path: str, value: object, problems: list[RuleProblem]) -> re.Pattern[str] | None:
    if not isinstance(value, str):
        problems.append(RuleProblem(path, value, "must be a regular expression string"))
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        problems.append(RuleProblem(path, value, f"not a regular expression: {exc}"))
        return None


def _string(path: str, value: object, problems: list[RuleProblem]) -> str | None:
    if isinstance(value, str) and value:
        return value
    problems.append(RuleProblem(path, value, "must be a non-empty string"))
    return None


def _rule(path: str, raw: object, problems: list[RuleProblem]) -> Rule | None:
    if not isinstance(raw, Mapping):
        problems.append(RuleProblem(path, raw, "a rule must be a mapping"))
        return None
    before = len(problems)
    for key in sorted(set(raw) - {"name", *_CONDITIONS}):
        allowed = ", ".join(("name", *_CONDITIONS))
        problems.append(
            RuleProblem(f"{path}.{key}", raw[key], f"unknown field; allowed: {allowed}")
        )
    if not set(raw) & set(_CONDITIONS):
        problems.append(RuleProblem(path, raw, f"needs one of {', '.join(_CONDITIONS)}"))
    name = _string(f"{path}.name", raw.get("name"), problems)
    prefix = raw.get("path_prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
        problems.append(RuleProblem(f"{path}.path_prefix", prefix, "must start with '/'"))
    methods = raw.get("methods")
    if methods is not None and (
        not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods)
    ):
        problems.append(RuleProblem(f"{path}.methods", methods, "must be a list of methods"))
    host = raw.get("host")
    if host is not None:
        host = _string(f"{path}.host", host, problems)
    path_regex = raw.get("path_regex")
    query_regex = raw.get("query_regex")
    rule = Rule(
        name=name or "",
        path_prefix=prefix,
        path_regex=None
        if path_regex is None
        else _regex(f"{path}.path_regex", path_regex, problems),
        query_regex=(
            None if query_regex is None else _regex(f"{path}.query_regex", query_regex, problems)
        ),
        methods=None if methods is None else frozenset(str(m).upper() for m in methods),
        host=None if host is None else host.lower(),
    )
    return rule if len(problems) == before else None


def parse_rules(document: object, source: str = "<dict>") -> RuleSet:
    """Validate a rules document (already loaded from JSON or YAML) into a ``RuleSet``."""
    problems: list[RuleProblem] = []
    if not isinstance(document, Mapping):
        raise RulesError(source, [RuleProblem("", document, "must be a mapping with 'deny'")])
    for key in sorted(set(document) - {"deny"}):
        problems.append(RuleProblem(key, document[key], "unknown field; allowed: deny"))
    raw_rules = document.get("deny", [])
    if not isinstance(raw_rules, list):
        problems.append(RuleProblem("deny", raw_rules, "must be a list of rules"))
        raw_rules = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(name, str) and name in seen:
            problems.append(RuleProblem(f"deny[{index}].name", name, "duplicate name"))
        if isinstance(name, str):
            seen.add(name)
        rule = _rule(f"deny[{index}]", raw, problems)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise RulesError(source, problems)
    return RuleSet(tuple(rules))
