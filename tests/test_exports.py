"""Each core package's public surface is what its ``__all__`` says, and the pure packages stay
pure (STYLE.md "Modules and public surface"; httpx ``tests/test_exported_members.py``, trio
``_tests/test_exports.py``)."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import types

import pytest

PACKAGES = [
    "tagwall.model",
    "tagwall.evaluator",
    "tagwall.compiler",
    "tagwall.datapath",
    "tagwall.store",
    "tagwall.api",
    "tagwall.control",
    "tagwall.agent",
    "tagwall.lab",
    "tagwall.analytics",
    "tagwall.analytics.collectors",
    "tagwall.l7fw",
]
PURE = ["tagwall.model", "tagwall.evaluator", "tagwall.compiler"]
# STYLE.md: the pure packages import none of these, not even indirectly.
IMPURE_MODULES = [
    "asyncio",
    "subprocess",
    "socket",
    "sqlite3",
    "duckdb",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
]
EDGES = [
    "tagwall.store",
    "tagwall.api",
    "tagwall.cli",
    "tagwall.datapath",
    "tagwall.control",
    "tagwall.agent",
    "tagwall.lab",
    "tagwall.analytics",
    "tagwall.l7fw",
]


def _package(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _isort_key(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 keeps ``__all__`` in, so this test and the linter agree:
    SCREAMING_SNAKE_CASE first, then CamelCase, then the rest; natural order within each."""
    if name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists(name: str) -> None:
    package = _package(name)
    missing = [export for export in package.__all__ if not hasattr(package, export)]
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_without_duplicates(name: str) -> None:
    exported = list(_package(name).__all__)
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert exported == sorted(exported, key=_isort_key)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_class_and_function_is_exported(name: str) -> None:
    """A public class or function defined in the package but left out of ``__all__`` is
    either a forgotten export or should be private."""
    package = _package(name)
    unlisted = sorted(
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == name or value.__module__.startswith(name + "."))
        and attr not in package.__all__
    )
    assert unlisted == []


@pytest.mark.parametrize("name", PACKAGES)
def test_package_docstring_is_written(name: str) -> None:
    """Each package docstring says what it owns and what it must not import (STYLE.md)."""
    doc = _package(name).__doc__
    assert doc is not None
    assert doc.strip()


def test_pure_packages_import_no_io_or_edges() -> None:
    """In a fresh interpreter, importing the pure packages loads no I/O library, web
    framework or tagwall edge.  Nothing is excluded: nothing they import (stdlib, PyYAML)
    pulls any of these in today; if that changes, find out what does before excusing it."""
    code = (
        "import sys\n"
        f"import {', '.join(PURE)}\n"
        f"print(' '.join(sorted(m for m in {IMPURE_MODULES + EDGES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == []


def test_the_agent_never_loads_the_server_side() -> None:
    """An agent runs on every host: importing it must not pull in the web framework, the store
    or the lab (a controller's weight has no business on a host)."""
    code = (
        "import sys\n"
        "import tagwall.agent\n"
        "heavy = ['fastapi', 'starlette', 'uvicorn', 'sqlite3', 'tagwall.store', 'tagwall.api',"
        " 'tagwall.lab', 'tagwall.evaluator', 'pyroute2', 'duckdb']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == []
