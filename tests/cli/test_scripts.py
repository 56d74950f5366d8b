"""``scripts/demo`` and the README's tour run as written.

The demo test runs in CI (marker ``e2e``): it starts a real controller through the script on
a free port and checks the walk-through's verdicts.  It reuses ``.venv`` as it is: when the
install stamp is current, the script must not run pip at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess

import pytest
from typer.testing import CliRunner

from tagwall.cli import app

from .support import REPO, free_port

pytestmark = pytest.mark.e2e


def _stamp_is_current() -> bool:
    stamp = REPO / ".venv" / ".tagwall-installed"
    if not stamp.exists():
        return False
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.read_text().split()[:1] == [digest]


def test_demo_walk_through() -> None:
    current = _stamp_is_current()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TAGWALL_SERVER"}
    result = subprocess.run(
        [str(REPO / "scripts/demo"), "--listen", f"127.0.0.1:{port}", "--no-wait"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"http://127.0.0.1:{port}" in out
    assert "ALLOWED  shop-web-prod (10.1.1.11) → shop-app-prod (10.1.1.21)  tcp/8080" in out
    assert "rule web-to-app of policy three-tier" in out
    assert "DENIED  shop-web-prod (10.1.1.11) → shop-db-prod (10.1.1.31)  tcp/5432" in out
    assert "application tier: implicit deny" in out
    assert "DENIED  shop-web-dev (10.1.2.11) → shop-web-prod (10.1.1.11)  tcp/443" in out
    assert "admin tier: rule deny-dev-to-prod of policy guardrails" in out
    assert "would-deny" in out
    assert "Traceback" not in result.stderr
    if current:
        assert "installing tagwall" not in result.stderr, "pip ran although .venv is current"
    # --no-wait stopped the controller: the port is free again.
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def _tour_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            args = shlex.split(line, comments=True)
            if args[:1] == ["tagwall"] and args[1:2] != ["controller"]:
                commands.append(args[1:])
    return commands


def test_readme_tour_runs_against_a_controller(
    controller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `tagwall …` line of README.md (but starting the controller) exits 0, in order."""
    monkeypatch.chdir(REPO)
    commands = _tour_commands()
    assert len(commands) >= 15
    for args in commands:
        result = CliRunner().invoke(app, args, env={"TAGWALL_SERVER": controller, "COLUMNS": "120"})
        assert result.exit_code == 0, f"tagwall {shlex.join(args)}: {result.output}"
        if "json" in args:
            json.loads(result.stdout)
