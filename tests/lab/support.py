"""Helpers for the lab tests: run ``tagwall`` as a real process, name labs uniquely, skip
without root."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# Root/netns tests: skipped, with the reason, only where the machine cannot run them.
privileged = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]


def unique_lab() -> str:
    """A lab name no other test (or person) uses: its namespaces are ``twlabt<hex>-…``."""
    return f"twlabt{secrets.token_hex(3)}"


def run_tagwall(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TAGWALL_SERVER", "TAGWALL_LAB")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "tagwall.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout_s,
        check=False,
    )


def tagwall_json(*args: str) -> Any:
    """Run ``tagwall ARGS -o json``; fail the test with stderr unless it succeeds."""
    result = run_tagwall(*args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
