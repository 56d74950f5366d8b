"""``tagwall lab`` arguments and refusals that need no root (``tagwall.cli._lab``)."""

from __future__ import annotations

import os

import pytest
from cli.support import EXAMPLES
from typer.testing import CliRunner

from tagwall.cli import app


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "TAGWALL_LAB": None})
    return result.exit_code, result.stdout + result.stderr


def test_without_root_up_refuses_before_making_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, output = _invoke("lab", "up", "--no-agents", "-f", str(EXAMPLES / "three-tier"))
    assert code == 1
    assert "needs root" in output and "uid 1000" in output
    code, output = _invoke("lab", "probe", "--service", "tcp/80")
    assert code == 1 and "needs root" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lab", "down", "--lab", "twdp"), "twlab"),  # never another tool's prefix
        (("lab", "status", "--lab", "twlab-2"), "twlab"),
        (("lab", "up", "--server", "http://x", "--controllers", "2", "-f", "x"), "not both"),
        (("lab", "probe", "--service", "tcp"), "needs a port"),
        (("lab", "up", "--datapath", "ebpf", "-f", "x"), "ebpf"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    code, output = _invoke(*args)
    assert code == 2
    assert message in output


def test_manifests_the_lab_cannot_build_are_named_before_anything_is_made() -> None:
    manifest = (
        "apiVersion: tagwall/v1\nkind: Workload\nmetadata: {name: gw}\n"
        "spec: {interfaces: [{name: eth0, ips: [169.254.1.1]}]}\n"
    )
    result = CliRunner().invoke(
        app, ["lab", "up", "--no-agents", "-f", "-"], input=manifest, env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert "Workload/gw spec.interfaces[0].ips[0] = '169.254.1.1'" in result.stderr
    assert "gateway" in result.stderr
