"""The lab state file (``tagwall.lab._state``): round trip, atomic replace, damage reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tagwall.lab import LabError, LabState, Phase, ProcessRecord, plan, read_state
from tagwall.lab._state import STATE_FILE, write_state
from tagwall.model import Document, load


def _state(directory: Path) -> LabState:
    workload: dict[str, Any] = {
        "apiVersion": "tagwall/v1",
        "kind": "Workload",
        "metadata": {"name": "shop/web-1"},
        "spec": {
            "host": "node-1",
            "interfaces": [{"name": "eth0", "ips": ["2001:db8::1", "10.0.0.1"]}],
        },
    }
    topology = plan(load([Document(workload)]), "twlab")
    return LabState(
        lab="twlab",
        state_dir=str(directory),
        phase=Phase.BUILDING,
        created="2025-01-31T12:00:00+00:00",
        up_pid=4242,
        up_started=99,
        datapath="nftables",
        agents=True,
        server=None,
        manifests=("pods.yaml",),
        namespaces=tuple(ns.name for ns in topology.namespaces),
        hosts=topology.hosts,
        workloads=topology.workloads,
        processes=(
            ProcessRecord("controller", "controller-1", 10, "/l/c1.log", "http://127.0.0.1:1"),
            ProcessRecord("agent", "node-1", 11, "/l/a.log"),
        ),
    )


def test_round_trip_keeps_everything_probe_and_status_need(tmp_path: Path) -> None:
    state = _state(tmp_path)
    write_state(state)
    assert read_state(tmp_path) == state
    assert state.controller_urls == ["http://127.0.0.1:1"]
    raw = json.loads((tmp_path / STATE_FILE).read_text())
    assert raw["workloads"][0]["ips"] == ["2001:db8::1", "10.0.0.1"]  # the manifest's order
    assert raw["hosts"][0]["fabricAddresses"] == ["169.254.64.1", "fe80::a9fe:4001"]


def test_rewrite_replaces_the_file_without_leaving_a_temporary(tmp_path: Path) -> None:
    from dataclasses import replace

    write_state(_state(tmp_path))
    write_state(replace(_state(tmp_path), phase=Phase.UP))
    state = read_state(tmp_path)
    assert state is not None and state.phase is Phase.UP
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_a_server_replaces_the_labs_controllers(tmp_path: Path) -> None:
    from dataclasses import replace

    state = replace(_state(tmp_path), server="http://10.0.0.9:7080")
    assert state.controller_urls == ["http://10.0.0.9:7080"]


def test_no_file_is_no_state_and_a_damaged_file_is_an_error(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    (tmp_path / STATE_FILE).write_text('{"version": 1, "lab": "twlab"}')
    with pytest.raises(LabError, match="damaged"):
        read_state(tmp_path)
    (tmp_path / STATE_FILE).write_text('{"version": 7}')
    with pytest.raises(LabError, match="version"):
        read_state(tmp_path)
