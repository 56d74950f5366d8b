"""Helpers for the lab tests: name labs uniquely, skip without root, read ``tagwall … -o
json`` (``run_tagwall`` and the paths come from the CLI tests' support), count the packets an
interface received."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

import pytest
from cli.support import run_tagwall

# Root/netns tests: skipped, with the reason, only where the machine cannot run them.
privileged = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]


def unique_lab() -> str:
    """A lab name no other test (or person) uses: its namespaces are ``twlabt<hex>-…``."""
    return f"twlabt{secrets.token_hex(3)}"


def tagwall_json(*args: str) -> Any:
    """Run ``tagwall ARGS -o json``; fail the test with stderr unless it succeeds."""
    result = run_tagwall(*args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rx_packets(namespace: str, interface: str) -> int:
    """Packets ``interface`` of ``namespace`` has received so far."""
    out = subprocess.run(
        ["ip", "-n", namespace, "-s", "-j", "link", "show", "dev", interface],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packets: int = json.loads(out)[0]["stats64"]["rx"]["packets"]
    return packets
