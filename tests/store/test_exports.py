"""The store's public surface is what ``__all__`` says, and it stays clear of the edges."""

from __future__ import annotations

import subprocess
import sys
import types

import tagwall.store


def test_all_lists_exactly_the_public_names() -> None:
    """Every name in ``__all__`` exists, and every public non-module attribute is listed."""
    exported = set(tagwall.store.__all__)
    assert len(exported) == len(tagwall.store.__all__)
    public = {
        name
        for name, value in vars(tagwall.store).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exported == public
    for name in exported:
        assert getattr(tagwall.store, name) is not None


def test_store_imports_no_api_compiler_or_evaluator() -> None:
    code = (
        "import sys, tagwall.store\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'fastapi' or "
        "m.startswith(('tagwall.compiler', 'tagwall.evaluator', 'tagwall.api'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
