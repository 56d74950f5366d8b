"""``tagwall controller`` as a real process, and the commands that talk to it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from .support import REPO, controller_command, free_port, run_tagwall, wait_until_serving

pytestmark = pytest.mark.e2e


def test_controller_apply_get_trace_round_trip(tmp_path: Path) -> None:
    """Start a controller on a free port, apply an example, read it back, trace against it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        controller_command(port, tmp_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(url, process)
        applied = run_tagwall("apply", "-f", "examples/three-tier", "--server", url, "-o", "json")
        assert applied.returncode == 0, applied.stderr
        results = json.loads(applied.stdout)["results"]
        assert {"kind": "FirewallPolicy", "name": "three-tier"}.items() <= next(
            r for r in results if r["kind"] == "FirewallPolicy"
        ).items()

        got = run_tagwall("get", "fp", "three-tier", "--server", url, "-o", "yaml")
        assert got.returncode == 0, got.stderr
        with open(REPO / "examples/three-tier/policy.yaml", encoding="utf-8") as f:
            written = next(d for d in yaml.safe_load_all(f) if d["kind"] == "FirewallPolicy")
        assert yaml.safe_load(got.stdout) == written

        traced = run_tagwall(
            "trace",
            "--server",
            url,
            "--from",
            "shop-web-prod",
            "--to",
            "shop-app-prod",
            "--service",
            "tcp/8080",
            "-o",
            "json",
        )
        offline = run_tagwall(
            "trace",
            "-f",
            "examples/three-tier",
            "--from",
            "shop-web-prod",
            "--to",
            "shop-app-prod",
            "--service",
            "tcp/8080",
            "-o",
            "json",
        )
        assert traced.returncode == 0, traced.stderr
        assert json.loads(traced.stdout) == json.loads(offline.stdout)
        assert json.loads(traced.stdout)["allowed"] is True

        reached = run_tagwall(
            "reach", "--service", "tcp/8080", "-o", "json", env={"TAGWALL_SERVER": url}
        )
        reached_offline = run_tagwall(
            "reach", "-f", "examples/three-tier", "--service", "tcp/8080", "-o", "json"
        )
        assert json.loads(reached.stdout) == json.loads(reached_offline.stdout)
    finally:
        process.kill()
        process.communicate(timeout=10)
    assert (tmp_path / "store.db").exists()


def test_controller_applies_files_at_start(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        controller_command(
            port, tmp_path, "-f", "examples/three-tier", "-f", "examples/guardrails"
        ),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(url, process)
        # Serving starts before the start-up apply lands; the revision moves to 1 right after.
        for _ in range(100):
            if httpx.get(f"{url}/api/v1/revision").json()["revision"] >= 1:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        traced = run_tagwall(
            "trace",
            "--server",
            url,
            "--from",
            "shop-web-dev",
            "--to",
            "shop-web-prod",
            "--service",
            "tcp/443",
            "-o",
            "json",
        )
        verdict = json.loads(traced.stdout)
        assert verdict["allowed"] is False and verdict["egress"]["rule"] == "deny-dev-to-prod"
    finally:
        process.kill()
        process.communicate(timeout=10)


def test_controller_refuses_invalid_files_at_start(tmp_path: Path) -> None:
    """A reference to a missing policy is found by the server's validation: exit 1, named."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: tagwall/v1\nkind: ApplicationPolicySet\nmetadata: {name: s}\n"
        "spec: {all: true, policies: [{name: missing, sequence: 1}]}\n"
    )
    result = run_tagwall(
        "controller",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path),
        "-f",
        str(bad),
        timeout_s=30,
    )
    assert result.returncode == 1
    assert f"{bad}#0 ApplicationPolicySet/s spec.policies[0].name" in result.stderr
    assert "Traceback" not in result.stderr


def test_controller_on_a_taken_port_says_so(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tagwall(
            "controller", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (
        ["get", "workloads"],
        ["trace", "--from", "a", "--to", "b", "-s", "tcp/1"],
        ["apply", "-f", "examples/three-tier"],
        ["draft", "list"],
    ):
        result = run_tagwall(*args, "--server", url)
        assert result.returncode == 1, args
        assert f"cannot reach the tagwall server at {url}" in result.stderr
        assert "Traceback" not in result.stderr
