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


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TAGWALL_SERVER"}
    return subprocess.run(
        [str(REPO / "scripts/demo"), "--no-wait", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False,
    )  # fmt: skip


def _assert_traces(out: str) -> None:
    assert "ALLOWED  shop-web-prod (10.1.1.11) → shop-app-prod (10.1.1.21)  tcp/8080" in out
    assert "rule web-to-app of policy three-tier" in out
    assert "DENIED  shop-web-prod (10.1.1.11) → shop-db-prod (10.1.1.31)  tcp/5432" in out
    assert "application tier: implicit deny" in out
    assert "DENIED  shop-web-dev (10.1.2.11) → shop-web-prod (10.1.1.11)  tcp/443" in out
    assert "admin tier: rule deny-dev-to-prod of policy guardrails" in out
    assert "would-deny" in out


def test_demo_on_the_simulator() -> None:
    current = _stamp_is_current()
    port = free_port()
    result = _demo("--sim", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"http://127.0.0.1:{port}" in out
    assert "no packet is filtered" in out
    hosts = re.findall(r"^ (host-\d) +│ (\S+) ", out, flags=re.M)
    assert [h for h, _ in hosts] == [f"host-{i}" for i in range(1, 7)]
    assert {state for _, state in hosts} == {"in-sync"}
    _assert_traces(out)
    assert "Traceback" not in result.stderr
    if current:
        assert "installing tagwall" not in result.stderr, "pip ran although .venv is current"
    # --no-wait stopped the controller and its agents: the port is free again.
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def _verdicts(out: str) -> list[tuple[str, str, str, str, str | None]]:
    """The L7 firewall's verdict log lines that the demo printed: (client address, server,
    path, verdict, rule)."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"time"')]
    return [
        (v["client"].rsplit(":", 1)[0], v["server"], v["path"], v["verdict"], v["rule"])
        for v in lines
    ]


@pytest.mark.privileged
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_demo_in_the_lab() -> None:
    """The main job: lab up, real packets equal reach, a live edit flips real verdicts, the
    agents' flow reports show what decided, dev's HTTP into prod passes the L7 firewall (which
    refuses the bad requests), and a live risk=suspicious tag sends a workload's flows there
    (the firewall runs on another host than the dev workloads: cross-host steering)."""
    result = _demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    _assert_traces(out)
    assert "The packets agree with 'tagwall reach' on every one of the pairs." in out
    matrices = re.findall(r"^ *\d+ (shop-web-\w+) +(.*)$", out, flags=re.M)
    # Rows of shop-web-dev and shop-web-prod in the two probes; a workload's column is its
    # row number.
    row = re.search(r"^ *(\d+) shop-app-prod ", out, flags=re.M)
    assert row is not None
    app = int(row.group(1)) - 1
    before = {name: cells.split()[app] for name, cells in matrices[:2]}
    after = {name: cells.split()[app] for name, cells in matrices[2:4]}
    assert before == {"shop-web-dev": "·", "shop-web-prod": "✔"}
    assert after == {"shop-web-dev": "✔", "shop-web-prod": "·"}
    # The agents reported the probes' connections, each with the rule that decided it.
    flows = out[out.index("8. What the agents saw") :]
    assert re.search(r"^4 flow\(s\)$", flows, flags=re.M)
    assert re.search(r"^ deny +│ \S+ +│ application-default-deny ", flows, flags=re.M)
    assert re.search(r"^ shop +│ shop +│ \d+ +│ \d+ +│ [1-9]", flows, flags=re.M)  # allowed
    # dev → prod HTTP through the L7 firewall: the good request is served and logged as
    # allowed; the bad ones get the firewall's 403 and never reach the server.
    chain = out[out.index("9. A service chain") : out.index("10. A live tag")]
    assert "HTTP 200 OK: shop-app-prod served /orders?id=42" in chain
    assert "HTTP 403 Forbidden: Forbidden by tagwall l7fw rule 'sqli'" in chain
    assert "HTTP 403 Forbidden: Forbidden by tagwall l7fw rule 'no-admin'" in chain
    assert _verdicts(chain) == [
        ("10.1.2.11", "10.1.1.21:80", "/orders", "allow", None),
        ("10.1.2.11", "10.1.1.21:80", "/orders", "deny", "sqli"),
        ("10.1.2.11", "10.1.1.21:80", "/admin", "deny", "no-admin"),
    ]
    assert re.findall(r"^shop-app-prod served GET (\S+)$", chain, flags=re.M) == ["/orders?id=42"]
    # dev → dev HTTP goes direct until shop-web-dev is tagged risk=suspicious, then through
    # the firewall, which now refuses /admin.
    untagged, tagged = out[out.index("10. A live tag") :].split("$ tagwall apply")
    assert "HTTP 200 OK: shop-app-dev served /admin" in untagged
    assert _verdicts(untagged) == []
    assert "rule inspect-suspicious of policy inspect-suspicious" in tagged
    assert "HTTP 200 OK: shop-app-dev served /orders?id=7" in tagged
    assert "HTTP 403 Forbidden: Forbidden by tagwall l7fw rule 'no-admin'" in tagged
    assert _verdicts(tagged) == [
        ("10.1.2.11", "10.1.2.21:8080", "/orders", "allow", None),
        ("10.1.2.11", "10.1.2.21:8080", "/admin", "deny", "no-admin"),
    ]
    # The firewall runs on host-4, the suspicious workload on host-3: steered by a tunnel.
    assert re.search(r"^twv[0-9a-f]{6} +UNKNOWN +02:74:", tagged, flags=re.M)
    assert "Traceback" not in result.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert "twlabdemo" not in left.stdout  # --no-wait took the lab down


def _tour_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            args = shlex.split(line, comments=True)
            # Processes and the lab have their own tests (tests/agent, tests/lab).
            if args[:1] == ["tagwall"] and args[1:2] not in (["controller"], ["agent"], ["lab"]):
                commands.append(args[1:])
    return commands


def test_readme_tour_runs_against_a_controller(
    controller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `tagwall …` line of README.md (but the controller, agent and lab) exits 0."""
    monkeypatch.chdir(REPO)
    commands = _tour_commands()
    assert len(commands) >= 15
    for args in commands:
        result = CliRunner().invoke(app, args, env={"TAGWALL_SERVER": controller, "COLUMNS": "120"})
        assert result.exit_code == 0, f"tagwall {shlex.join(args)}: {result.output}"
        if "json" in args:
            json.loads(result.stdout)
