"""Tags and the Kubernetes label-selector syntax (DESIGN §2, docs/semantics.md)."""

from __future__ import annotations

import pytest

from tagwall.model import Op, Requirement, Selector, SelectorSyntaxError, Tags, parse_selector
from tagwall.model._tags import valid_tag_type, valid_tag_value

WEB = Tags.of({"tier": ["web"], "application": ["shop"], "label": ["pci", "frontend"]})


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        pytest.param("tier=web", [Requirement("tier", Op.IN, frozenset({"web"}))], id="equals"),
        pytest.param("tier==web", [Requirement("tier", Op.IN, frozenset({"web"}))], id="double"),
        pytest.param(
            "tier!=web", [Requirement("tier", Op.NOT_IN, frozenset({"web"}))], id="not-equals"
        ),
        pytest.param(
            "application in (shop, crm)",
            [Requirement("application", Op.IN, frozenset({"shop", "crm"}))],
            id="in",
        ),
        pytest.param(
            "application notin (shop)",
            [Requirement("application", Op.NOT_IN, frozenset({"shop"}))],
            id="notin",
        ),
        pytest.param("quarantine", [Requirement("quarantine", Op.EXISTS)], id="exists"),
        pytest.param("!quarantine", [Requirement("quarantine", Op.NOT_EXISTS)], id="absent"),
        pytest.param("tier=", [Requirement("tier", Op.IN, frozenset({""}))], id="empty-value"),
        pytest.param("", [], id="empty"),
    ],
)
def test_parse_selector_forms(text: str, requirements: list[Requirement]) -> None:
    """Every Kubernetes label-selector form parses into one requirement."""
    assert parse_selector(text) == Selector(tuple(requirements))


def test_selector_str_is_canonical() -> None:
    """Equal selectors print equal, whatever spacing, order and operator spelling were used."""
    one = parse_selector("application in ( crm ,shop ),tier==web, !quarantine")
    other = parse_selector("!quarantine,tier=web,application in (shop,crm)")
    assert one == other
    assert str(one) == "!quarantine,application in (crm,shop),tier=web"
    assert parse_selector(str(one)) == one


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("tier=web", True),
        ("tier=web,application=crm", False),  # comma is AND
        ("label=pci", True),  # many-valued: holds when one of the values is pci
        ("label in (pci, x)", True),
        ("label!=pci", False),  # ... and != when none is
        ("label notin (x, y)", True),
        ("deployment!=prod", True),  # != holds when the type is absent, as in Kubernetes
        ("deployment notin (prod)", True),
        ("deployment", False),
        ("!deployment", True),
        ("", True),
    ],
)
def test_selector_matches(text: str, matches: bool) -> None:
    assert parse_selector(text).matches(WEB) is matches


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("tier in (web", 12, "expected ',' or ')' in value list"),
        ("tier=web,,x", 9, "expected a tag type"),
        ("tier=web,", 9, "selector ends with ','"),
        ("tier=web app", 9, "expected ',' before 'app'"),
        ("tier in web", 8, "expected '(' after in"),
        ("tier=w$b", 6, "unexpected character '$'"),
        ("!", 1, "expected a tag type"),
        ("tier=-web", 5, "'-web' is not a valid tag value"),
    ],
)
def test_selector_syntax_errors_name_the_position(text: str, position: int, reason: str) -> None:
    """A syntax error says what was expected and at which 0-based character."""
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(text)
    assert (info.value.position, info.value.reason, info.value.text) == (position, reason, text)


def test_tags_of_drops_empty_types_and_sorts() -> None:
    tags = Tags.of({"tier": ["web"], "label": [], "application": {"shop"}})
    assert list(tags) == ["application", "tier"]
    assert tags["tier"] == frozenset({"web"})
    assert tags.value("tier") == "web"
    assert tags.value("site") is None


def test_tags_overlay_replaces_per_type() -> None:
    """Workload over network over project: the top layer's values replace, per type."""
    project = Tags.of({"application": ["shop"], "label": ["a", "b"]})
    workload = Tags.of({"label": ["c"], "tier": ["web"]})
    assert project.overlay(workload) == Tags.of(
        {"application": ["shop"], "label": ["c"], "tier": ["web"]}
    )


def test_tags_to_manifest_writes_label_as_a_list() -> None:
    assert WEB.to_manifest() == {
        "application": "shop",
        "label": ["frontend", "pci"],
        "tier": "web",
    }


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("web", True),
        ("", True),
        ("a.b_c-d", True),
        ("-web", False),
        ("web-", False),
        ("x" * 63, True),
        ("x" * 64, False),
        ("a b", False),
        ("web\n", False),
    ],
)
def test_valid_tag_value_follows_kubernetes_label_values(value: str, valid: bool) -> None:
    assert valid_tag_value(value) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("team", True),
        ("example.com/role", True),
        ("ns:team", True),
        ("", False),
        ("-team", False),
        ("a b", False),
        ("team\n", False),
    ],
)
def test_valid_tag_type_accepts_kubernetes_label_keys(name: str, valid: bool) -> None:
    assert valid_tag_type(name) is valid
