"""Fixtures for the CLI tests: a live ``tagwall controller`` process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from .support import REPO, controller_command, free_port, wait_until_serving


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fresh ``tagwall controller`` process (empty store), one per test module."""
    port = free_port()
    process = subprocess.Popen(
        controller_command(port, tmp_path_factory.mktemp("controller")),
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
