"""``tagwall.lab``'s public surface is its ``__all__``, and importing it stays cheap.

(The repository-wide tests/test_exports.py covers the core packages; this is the same check
for the lab.)
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import tagwall.lab as lab


def test_every_exported_name_exists_and_every_public_one_is_exported() -> None:
    assert [name for name in lab.__all__ if not hasattr(lab, name)] == []
    unlisted = sorted(
        attr
        for attr, value in vars(lab).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and attr not in lab.__all__
    )
    assert unlisted == []


def test_importing_the_lab_or_the_cli_does_not_import_pyroute2() -> None:
    """pyroute2 costs ~90 ms to import: only building or removing a lab may pay for it, not
    every ``tagwall`` command."""
    code = "import sys, tagwall.lab, tagwall.cli; print('pyroute2' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
