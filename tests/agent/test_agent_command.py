"""``tagwall agent`` as an operator runs it: fail-closed before a first program, fail-static
when stopped, and ``--cleanup`` removing exactly what tagwall made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli.support import REPO, free_port, run_tagwall

from tagwall.agent import ProgramState
from tagwall.compiler import Program

NS = f"twagent-{os.getpid()}"


def nft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", NS, "nft", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def netns() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def test_host_and_controller_are_required() -> None:
    result = run_tagwall("agent", "--datapath", "sim")
    assert result.returncode == 2
    assert "--host" in result.stderr
    result = run_tagwall("agent", "--host", "h1", "--datapath", "sim")
    assert result.returncode == 2
    assert "--controller" in result.stderr


@pytest.mark.privileged
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root")
def test_closed_before_a_program_static_when_stopped_and_cleaned_up(
    netns: str, tmp_path: Path
) -> None:
    nft("add", "table", "inet", "someone-else")
    state = tmp_path / "agent"
    agent = subprocess.Popen(
        [sys.executable, "-m", "tagwall.cli", "agent", "--host", "h1",
         "--controller", f"http://127.0.0.1:{free_port()}", "--netns", netns,
         "--state-dir", str(state)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "tagwall" not in nft("list", "tables").stdout:
            assert time.monotonic() < deadline, "no tagwall table: not fail-closed"
            time.sleep(0.05)
        listing = nft("list", "table", "inet", "tagwall").stdout
        assert 'iifname "tw-*"' in listing and "drop" in listing  # no program: closed
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=20)
    assert agent.returncode == 0, stderr
    assert "dropped until one arrives" in stderr
    assert "tagwall" in nft("list", "tables").stdout  # stopping changed nothing

    ProgramState(state).save(3, Program("h1"))  # as if a program had been persisted
    result = run_tagwall("agent", "--cleanup", "--netns", netns, "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    tables = nft("list", "tables").stdout
    assert "inet tagwall" not in tables and "inet someone-else" in tables
    assert not state.exists()
    again = run_tagwall("agent", "--cleanup", "--netns", netns, "--state-dir", str(state))
    assert again.returncode == 0, again.stderr  # nothing left to remove is fine
