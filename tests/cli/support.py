"""Helpers for the CLI tests: run ``tagwall`` for real (a subprocess, ``python -m tagwall.cli``)
or in-process (typer's CliRunner), find a free port, wait for a controller."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tagwall.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_tagwall(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("TAGWALL_SERVER", "TAGWALL_LAB")}
    full_env.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "tagwall.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=timeout_s,
        check=False,
    )


def wait_until_serving(url: str, process: subprocess.Popen[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the controller exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/revision", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the controller at {url} did not answer within {timeout_s} s")


def controller_command(port: int, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tagwall.cli",
        "controller",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
        *extra,
    ]


@contextlib.contextmanager
def running_controller(data_dir: Path, *extra: str) -> Iterator[str]:
    """The URL of a ``tagwall controller`` process on a free port, serving until the block
    ends (then killed)."""
    port = free_port()
    process = subprocess.Popen(
        controller_command(port, data_dir, *extra),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.kill()
        process.communicate(timeout=10)


def tagwall(url: str, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process against ``url``: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, list(args), env={"TAGWALL_SERVER": url, "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr
