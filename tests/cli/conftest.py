"""Fixtures for the CLI tests: a live ``tagwall controller`` process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import running_controller


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fresh ``tagwall controller`` process (empty store), one per test module."""
    with running_controller(tmp_path_factory.mktemp("controller")) as url:
        yield url
