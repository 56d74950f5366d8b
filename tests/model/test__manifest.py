"""Reading manifests (``_manifest.py``): every form a source may take, and the limits that
keep untrusted text from costing more than its length."""

from __future__ import annotations

import time

import pytest

from tagwall.errors import Problem, ValidationError
from tagwall.model import Document, Json, parse_documents
from tagwall.model._manifest import MAX_EXPANDED_NODES, MAX_NESTING_LEVELS

WORKLOAD: dict[str, Json] = {
    "apiVersion": "tagwall/v1",
    "kind": "Workload",
    "metadata": {"name": "web-1"},
}


def refused(text: str, source: str = "shop.yaml") -> tuple[Problem, ...]:
    with pytest.raises(ValidationError) as info:
        parse_documents(text, source)
    return info.value.problems


def test_yaml_documents_are_read_in_order_and_remember_their_source() -> None:
    """Each ``---`` document becomes one Document; ``where`` is ``source#index``."""
    docs = parse_documents(
        "kind: Workload\nmetadata: {name: web-1}\n---\nkind: Host\nmetadata: {name: h1}\n",
        "shop.yaml",
    )
    assert [(d.kind, d.name, d.where) for d in docs] == [
        ("Workload", "web-1", "shop.yaml#0"),
        ("Host", "h1", "shop.yaml#1"),
    ]


def test_a_json_object_is_one_document() -> None:
    docs = parse_documents(
        '{"apiVersion": "tagwall/v1", "kind": "Workload", "metadata": {"name": "web-1"}}',
        "w.json",
    )
    assert docs == [Document(WORKLOAD, "w.json", 0)]


def test_a_json_list_is_one_document_per_item() -> None:
    docs = parse_documents('[{"kind": "Workload"}, {"kind": "Host"}]', "all.json")
    assert [(d.kind, d.where) for d in docs] == [("Workload", "all.json#0"), ("Host", "all.json#1")]


def test_a_kind_list_is_flattened_into_its_items() -> None:
    """What ``kubectl get -o yaml`` prints: the List itself is not a document."""
    docs = parse_documents(
        "apiVersion: v1\nkind: List\nitems:\n- kind: Workload\n- kind: Host\n---\nkind: Tier\n",
        "k.yaml",
    )
    assert [(d.kind, d.where) for d in docs] == [
        ("Workload", "k.yaml#0"),
        ("Host", "k.yaml#1"),
        ("Tier", "k.yaml#2"),
    ]


def test_empty_yaml_documents_are_skipped() -> None:
    docs = parse_documents("---\n---\n# only a comment\n---\nkind: Workload\n---\n", "s.yaml")
    assert [(d.kind, d.where) for d in docs] == [("Workload", "s.yaml#0")]
    assert parse_documents("", "empty.yaml") == []


def test_yaml_only_values_are_kept_as_json() -> None:
    """Dates and other YAML-only scalars become strings; JSON types are kept."""
    (doc,) = parse_documents("kind: Workload\nsince: 2024-01-02\nn: 3\nok: true\n", "d.yaml")
    assert doc.body == {"kind": "Workload", "since": "2024-01-02", "n": 3, "ok": True}


def test_every_document_that_is_not_a_mapping_is_reported_with_its_index() -> None:
    problems = refused("kind: Workload\n---\n- a list\n---\njust text\n")
    assert [(p.source, p.reason) for p in problems] == [
        ("shop.yaml#1", "a manifest must be a mapping, not list"),
        ("shop.yaml#2", "a manifest must be a mapping, not str"),
    ]
    assert "shop.yaml#1: a manifest must be a mapping, not list" in str(ValidationError(problems))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("kind: Workload\n  metadata: [\n", id="yaml"),
        pytest.param('{"kind": "Workload",}', id="json"),
    ],
)
def test_a_syntax_error_names_the_source(text: str) -> None:
    (problem,) = refused(text)
    assert problem.source == "shop.yaml"
    assert problem.reason.startswith("not valid YAML or JSON: ")


def _alias_bomb(levels: int) -> str:
    """``levels`` anchors, each a list of ten aliases to the one before: 10**levels leaves."""
    lines = ['a0: &a0 ["x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines)


def test_aliases_that_expand_past_the_limit_are_refused_quickly() -> None:
    """A few hundred bytes that would expand to ~10**9 nodes: refused by measuring, not
    building, so in well under a second."""
    text = _alias_bomb(10)
    assert len(text) < 1000
    started = time.perf_counter()
    (problem,) = refused(text)
    assert time.perf_counter() - started < 1.0
    assert problem.source == "shop.yaml"
    assert problem.reason.startswith("YAML aliases expand to ")
    assert problem.reason.endswith(f" nodes, over {MAX_EXPANDED_NODES}")


def test_aliases_within_the_limit_are_expanded_into_copies() -> None:
    (doc,) = parse_documents("a: &s {tier: web}\nb: *s\n", "s.yaml")
    assert doc.body == {"a": {"tier": "web"}, "b": {"tier": "web"}}


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    (problem,) = refused("a: &a [*a]\n")
    assert (problem.source, problem.reason) == (
        "shop.yaml",
        "a YAML alias refers to a node that contains it",
    )


@pytest.mark.parametrize(
    "text",
    [
        # Past the limit, but shallow enough for the parsers: the level count refuses it.
        pytest.param("[" * (MAX_NESTING_LEVELS + 1) + "]" * (MAX_NESTING_LEVELS + 1), id="json"),
        pytest.param("a: " + "[" * MAX_NESTING_LEVELS + "]" * MAX_NESTING_LEVELS, id="yaml"),
        # So deep that the parsers recurse out first: reported the same way.
        pytest.param("[" * 100_000 + "]" * 100_000, id="json-abyss"),
        pytest.param("a: " + "[" * 100_000 + "]" * 100_000, id="yaml-abyss"),
    ],
)
def test_deep_nesting_is_refused_as_a_problem(text: str) -> None:
    (problem,) = refused(text)
    assert problem.source == "shop.yaml"
    assert problem.reason == (
        f"the input is nested more than {MAX_NESTING_LEVELS} levels deep "
        "(mappings and lists inside one another)"
    )


def test_nesting_up_to_the_limit_is_read() -> None:
    """The limit is inclusive: the document mapping is level 1."""
    inner = MAX_NESTING_LEVELS - 1
    (doc,) = parse_documents("a: " + "[" * inner + "]" * inner, "s.yaml")
    (json_doc,) = parse_documents('{"a": ' + "[" * inner + "]" * inner + "}", "s.json")
    assert doc.body == json_doc.body
