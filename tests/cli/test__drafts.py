"""``tagwall draft …`` against a live controller: stage, diff, commit, discard."""

from __future__ import annotations

import json

import pytest

from .support import tagwall

pytestmark = pytest.mark.e2e


def test_draft_lifecycle(controller: str) -> None:
    assert tagwall(controller, "apply", "-f", "examples/three-tier")[0] == 0
    code, out, err = tagwall(controller, "draft", "create", "guard")
    assert code == 0, err
    assert "0 staged change(s)" in out
    code, out, err = tagwall(controller, "draft", "apply", "guard", "-f", "examples/guardrails")
    assert code == 0, err
    code, out, _ = tagwall(controller, "draft", "delete", "guard", "aps", "apps")
    assert code == 0 and "delete" in out
    code, out, _ = tagwall(controller, "draft", "list", "-o", "json")
    [draft] = json.loads(out)["items"]
    assert draft["name"] == "guard" and len(draft["changes"]) == 11

    code, out, _ = tagwall(controller, "draft", "diff", "guard")
    assert code == 0 and "create FirewallPolicy/guardrails" in out
    assert "-  name: apps" in out  # the staged delete as a unified diff

    # Deleting `apps` leaves three-tier unused but valid: the commit goes through.
    code, out, err = tagwall(controller, "draft", "commit", "guard", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["revision"] >= 2
    code, out, _ = tagwall(controller, "get", "aps", "-o", "json")
    assert {s["metadata"]["name"] for s in json.loads(out)["items"]} == {"guardrails", "baseline"}

    assert tagwall(controller, "draft", "create", "throwaway")[0] == 0
    code, out, _ = tagwall(controller, "draft", "discard", "throwaway")
    assert code == 0 and "discarded draft throwaway" in out
    code, _, err = tagwall(controller, "draft", "show", "throwaway")
    assert code == 1 and "throwaway" in err
