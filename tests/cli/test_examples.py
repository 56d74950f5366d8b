"""The examples' READMEs list ``tagwall trace`` commands with their verdicts: run every one.

A row of a README table reads ``| `tagwall trace …` | verdict | decided by |``.  The verdict is
``allow`` / ``deny``, or ``allow (would-deny)`` / ``deny (would-allow)`` when the shadow
verdict (audit policies enforced) differs.  Every rule named in backticks in the last column
must be one that decided, passed or shadow-decided an end; "implicit deny" and "default
posture" must be the reason at some end.  So the docs cannot go stale.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from typer.testing import CliRunner

from tagwall.cli import app

from .support import EXAMPLES, REPO

ROW = re.compile(r"^\|\s*`(tagwall trace [^`]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|\s*$")


def _rows() -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for readme in sorted(EXAMPLES.glob("*/README.md")):
        for line in readme.read_text(encoding="utf-8").splitlines():
            match = ROW.match(line)
            if match:
                command, verdict, decided_by = match.groups()
                rows.append((readme.parent.name, command, verdict, decided_by))
    return rows


ROWS = _rows()


def test_both_examples_list_traces() -> None:
    assert {example for example, *_ in ROWS} >= {"three-tier", "guardrails"}
    assert len(ROWS) >= 15


def _label(verdict: dict[str, Any]) -> str:
    allowed, shadow = verdict["allowed"], verdict["shadowAllowed"]
    if allowed == shadow:
        return "allow" if allowed else "deny"
    return "allow (would-deny)" if allowed else "deny (would-allow)"


def _rules_seen(verdict: dict[str, Any]) -> set[str]:
    seen = set()
    for end in (verdict["egress"], verdict["ingress"]):
        seen |= {end["rule"], end["shadow"]["rule"]}
        seen |= {re.split(r"[\s/›]+", p)[-1] for p in end.get("passedBy", [])}  # noqa: RUF001
    return seen - {None}


@pytest.mark.parametrize(
    ("example", "command", "expected", "decided_by"),
    ROWS,
    ids=[f"{row[0]}-{index}" for index, row in enumerate(ROWS)],
)
def test_readme_trace(
    example: str, command: str, expected: str, decided_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the commands are written for the repository root
    args = [*shlex.split(command)[1:], "-o", "json"]
    result = CliRunner().invoke(app, args, env={"TAGWALL_SERVER": None})
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert _label(verdict) == expected, f"examples/{example}/README.md: {command}"
    for rule in re.findall(r"`([^`]+)`", decided_by):
        assert rule in _rules_seen(verdict), f"{command}: {rule} decided nothing"
    reasons = {verdict["egress"]["reason"], verdict["ingress"]["reason"]}
    if "implicit deny" in decided_by:
        assert "application-default-deny" in reasons
    if "default posture" in decided_by:
        assert "default-posture" in reasons
