"""Validation with a ``WorkloadMemo`` gives exactly what validation without one gives —
the same Config, or the same problems — over sequences of edits, bad ones included."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Manifest, models, mutate

from tagwall.errors import ValidationError
from tagwall.model import Config, Document, WorkloadMemo, load


def _outcome(docs: list[Manifest], memo: WorkloadMemo | None) -> Config | list[str]:
    try:
        return load([Document(d, "edit.yaml", i) for i, d in enumerate(docs)], memo)
    except ValidationError as exc:
        return [str(p) for p in exc.problems]


def _break(data: st.DataObject, docs: list[Manifest]) -> list[Manifest]:
    """An edit validation must refuse: a shared IP, an unknown tag type, a bad network."""
    docs = copy.deepcopy(docs)
    workloads = [d for d in docs if d["kind"] == "Workload" and d["spec"].get("interfaces")]
    if len(workloads) < 2:
        return docs
    a, b = data.draw(st.permutations(workloads))[:2]
    edit = data.draw(st.sampled_from(["shared-ip", "tag-type", "network"]))
    if edit == "shared-ip":
        b["spec"]["interfaces"][0]["ips"] = list(a["spec"]["interfaces"][0]["ips"])
    elif edit == "tag-type":
        b["spec"].setdefault("tags", {})["colour"] = "red"
    else:
        b["spec"]["interfaces"][0]["network"] = "nowhere"
    return docs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_memo_changes_nothing_but_speed(data: st.DataObject) -> None:
    docs = data.draw(models())
    memo = WorkloadMemo()
    for _ in range(5):
        with_memo, without = _outcome(docs, memo), _outcome(docs, None)
        if isinstance(without, Config):
            assert isinstance(with_memo, Config)
            assert with_memo.workloads == without.workloads
            assert with_memo.effective == without.effective
        else:
            assert with_memo == without
        edit = data.draw(st.sampled_from(["ok", "ok", "bad"]))
        docs = mutate(data, docs) if edit == "ok" else _break(data, docs)


def test_an_address_taken_by_a_reused_workload_is_still_refused() -> None:
    def workload(name: str, ip: str) -> Manifest:
        return {
            "apiVersion": "tagwall/v1",
            "kind": "Workload",
            "metadata": {"name": name},
            "spec": {"host": "h1", "interfaces": [{"name": "eth0", "ips": [ip]}]},
        }

    memo = WorkloadMemo()
    assert isinstance(_outcome([workload("a", "10.0.0.1")], memo), Config)
    problems = _outcome([workload("b", "10.0.0.1"), workload("a", "10.0.0.1")], memo)
    assert problems == _outcome([workload("b", "10.0.0.1"), workload("a", "10.0.0.1")], None)
    assert any("already used by" in p for p in problems)
    with pytest.raises(ValidationError):
        load(
            [
                Document(workload("b", "10.0.0.1"), "x", 0),
                Document(workload("a", "10.0.0.1"), "x", 1),
            ],
            memo,
        )


def test_a_project_tag_change_reaches_the_reused_workloads() -> None:
    """Effective tags are reused only while projects and networks stay as they were."""

    def estate(app: str) -> list[Manifest]:
        return [
            {"apiVersion": "tagwall/v1", "kind": "Project", "metadata": {"name": "p1"},
             "spec": {"tags": {"application": app}}},
            {"apiVersion": "tagwall/v1", "kind": "Workload",
             "metadata": {"name": "w1", "project": "p1"},
             "spec": {"host": "h1", "interfaces": [{"name": "eth0", "ips": ["10.0.0.1"]}]}},
        ]  # fmt: skip

    memo = WorkloadMemo()
    first = _outcome(estate("a1"), memo)
    second = _outcome(estate("a2"), memo)
    assert isinstance(first, Config) and isinstance(second, Config)
    assert first.effective["w1"].value("application") == "a1"
    assert second.effective["w1"].value("application") == "a2"
