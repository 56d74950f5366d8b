"""Rules documents are validated with every problem named; requests get the first deny rule."""

from __future__ import annotations

import pytest

from tagwall.l7fw import (
    DEFAULT_RULES,
    Action,
    HttpRequest,
    RulesError,
    Verdict,
    decide,
    parse_request,
    parse_rules,
)


def _request(head: str) -> HttpRequest:
    request = parse_request(head.encode() + b"\r\n\r\n")
    assert isinstance(request, HttpRequest)
    return request


DEFAULTS = parse_rules(DEFAULT_RULES)


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("GET /admin HTTP/1.1", "no-admin"),
        ("GET /admin/x?y=1 HTTP/1.1", "no-admin"),
        ("GET /%61dmin HTTP/1.1", "no-admin"),
        ("GET /s?q=%27%20OR%201=1 HTTP/1.1", "sqli"),
        ("GET /s?q=x'+or+'a'='a HTTP/1.1", "sqli"),
        ("GET /s?id=1+UNION+ALL+SELECT+pw HTTP/1.1", "sqli"),
        ("GET /s?id=1;-- HTTP/1.1", "sqli"),
        ("GET /s?id=1+or+1=1 HTTP/1.1", "sqli"),
        ("GET / HTTP/1.1", None),
        ("GET /administrator-guide HTTP/1.1", "no-admin"),  # a prefix, as documented
        ("GET /shop?q=union+station HTTP/1.1", None),
        ("GET /shop?name=O'Brien HTTP/1.1", None),
    ],
)
def test_the_default_rules(line: str, rule: str | None) -> None:
    expected = Verdict(Action.ALLOW if rule is None else Action.DENY, rule)
    assert decide(DEFAULTS, _request(line)) == expected


def test_every_condition_of_a_rule_must_match_and_the_first_rule_decides() -> None:
    rules = parse_rules(
        {
            "deny": [
                {"name": "no-delete-on-shop", "methods": ["delete"], "host": "SHOP"},
                {"name": "no-php", "path_regex": r"\.php$"},
            ]
        }
    )
    assert decide(rules, _request("DELETE /x HTTP/1.1\r\nHost: shop")).rule == "no-delete-on-shop"
    assert decide(rules, _request("DELETE /x HTTP/1.1\r\nHost: crm")).action is Action.ALLOW
    assert decide(rules, _request("DELETE /x.php HTTP/1.1\r\nHost: crm")).rule == "no-php"


def test_an_empty_document_allows_everything() -> None:
    assert decide(parse_rules({}), _request("GET /admin HTTP/1.1")).action is Action.ALLOW


def test_every_problem_is_named_with_its_field_value_and_reason() -> None:
    document = {
        "deny": [
            {"name": "a", "path_prefix": "admin"},
            {"name": "b", "query_regex": "(unclosed"},
            {"name": "a", "path_prefix": "/x"},
            {"path_prefix": "/y", "colour": "red"},
            {"name": "c"},
            "not a mapping",
        ],
        "allow": [],
    }
    with pytest.raises(RulesError) as caught:
        parse_rules(document, "rules.yaml")
    problems = {(p.path, p.reason.split(";")[0].split(":")[0]) for p in caught.value.problems}
    assert problems == {
        ("allow", "unknown field"),
        ("deny[0].path_prefix", "must start with '/'"),
        ("deny[1].query_regex", "not a regular expression"),
        ("deny[2].name", "duplicate name"),
        ("deny[3].colour", "unknown field"),
        ("deny[3].name", "must be a non-empty string"),
        ("deny[4]", "needs one of path_prefix, path_regex, query_regex, methods, host"),
        ("deny[5]", "a rule must be a mapping"),
    }
    assert caught.value.source == "rules.yaml"
    assert str(caught.value).startswith("rules.yaml: ")
    assert "'(unclosed'" in str(caught.value)
