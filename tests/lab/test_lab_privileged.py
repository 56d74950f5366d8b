"""``tagwall lab up / probe / status / down`` as real processes on real namespaces (root).

Each test builds its own lab with a unique name (``twlabt<hex>``) and state directory, so it
never meets another test's or a person's lab, and removes it even when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli.support import EXAMPLES, REPO, run_tagwall, running_controller

from tagwall._netns import NETNS_DIR
from tagwall.cli._common import load_config
from tagwall.evaluator import reach
from tagwall.lab import plan, probe
from tagwall.lab._processes import is_running, lab_pids
from tagwall.model import parse_flow_service

from .support import privileged, tagwall_json, unique_lab

pytestmark = privileged

THREE_TIER = str(EXAMPLES / "three-tier")


def _namespaces(lab: str) -> set[str]:
    return {n for n in os.listdir(NETNS_DIR) if n.startswith(f"{lab}-")}


def _root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _reach(files: str, service: str) -> dict[str, dict[str, bool]]:
    """What ``tagwall reach -f FILES -o json`` prints (the CLI dumps exactly this)."""
    return reach(load_config([files]), parse_flow_service(service))


def _probe(lab: str, state_dir: Path, service: str) -> dict[str, dict[str, bool]]:
    """``tagwall lab probe -o json``, as a process."""
    matrix: dict[str, dict[str, bool]] = tagwall_json(
        "lab", "probe", "--service", service, "--lab", lab, "--state-dir", str(state_dir)
    )
    return matrix


def _probe_here(lab: str, state_dir: Path, service: str) -> dict[str, dict[str, bool]]:
    """The same probe in this process (no interpreter start-up: for repeated probes)."""
    return probe(parse_flow_service(service), lab=lab, state_dir=state_dir).matrix


def _up(lab: str, state_dir: Path, *args: str) -> None:
    result = run_tagwall("lab", "up", "--lab", lab, "--state-dir", str(state_dir), *args)
    assert result.returncode == 0, result.stderr


def _down(lab: str, state_dir: Path) -> Any:
    return tagwall_json("lab", "down", "--lab", lab, "--state-dir", str(state_dir))


def _assert_gone(lab: str, state_dir: Path, pids: list[int]) -> None:
    assert _namespaces(lab) == set()
    assert [pid for pid in pids if is_running(pid)] == []
    assert lab_pids(state_dir) == []
    assert not state_dir.exists()


@pytest.fixture(scope="module")
def three_tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A three-tier lab without agents (connectivity, no enforcement), shared by the module's
    tests; its last test takes it down, and this fixture makes sure of it."""
    lab, state_dir = unique_lab(), tmp_path_factory.mktemp("lab") / "state"
    _up(lab, state_dir, "--no-agents", "-f", THREE_TIER)
    try:
        yield lab, state_dir
    finally:
        run_tagwall("lab", "down", "--lab", lab, "--state-dir", str(state_dir))


def test_up_makes_the_planned_namespaces_and_nothing_in_the_root_namespace(
    three_tier: tuple[str, Path],
) -> None:
    lab, _ = three_tier
    topology = plan(load_config([THREE_TIER]), lab)
    assert _namespaces(lab) == {ns.name for ns in topology.namespaces}
    # Veth peers are made in their namespace: not one lab link in the root namespace.
    planned = {end for v in topology.veths for end in (v.name, v.peer_name)}
    created_here = planned - {"eth0"}  # the root namespace has an eth0 of its own
    assert created_here & _root_links() == set()


@pytest.mark.parametrize("service", ["tcp/80", "udp/53", "icmp"])
def test_without_enforcement_every_pair_connects_and_keys_match_reach(
    three_tier: tuple[str, Path], service: str
) -> None:
    lab, state_dir = three_tier
    started = time.monotonic()
    probed = _probe(lab, state_dir, service)
    assert time.monotonic() - started < 5
    expected = _reach(THREE_TIER, service)
    assert list(probed) == list(expected)
    assert all(list(row) == list(expected[src]) for src, row in probed.items())
    assert [(a, b) for a, row in probed.items() for b, ok in row.items() if not ok] == []


def test_probe_reports_dropped_and_rejected_flows_false(three_tier: tuple[str, Path]) -> None:
    """nft rules in host-2 (shop-db-prod and crm-web-prod live there): a drop times out, a
    reject resets; every other pair, and each workload to itself, still connects."""
    lab, state_dir = three_tier
    host = f"{lab}-h-host-2"
    rules = (
        "table inet labtest { chain forward { type filter hook forward priority 0; "
        "ip daddr 10.1.1.31 tcp dport 80 drop; "
        "ip daddr 10.2.1.11 tcp dport 80 reject with tcp reset; "
        "ip daddr 10.1.1.31 udp dport 53 drop; "
        "ip daddr 10.2.1.11 icmp type echo-request drop; }; }"
    )
    subprocess.run(
        ["ip", "netns", "exec", host, "nft", "-f", "-"], input=rules, text=True, check=True
    )
    try:
        tcp = _probe_here(lab, state_dir, "tcp/80")
        udp = _probe_here(lab, state_dir, "udp/53")
        icmp = _probe_here(lab, state_dir, "icmp")
    finally:
        subprocess.run(
            ["ip", "netns", "exec", host, "nft", "delete", "table", "inet", "labtest"], check=True
        )

    def denied(matrix: dict[str, dict[str, bool]]) -> set[tuple[str, str]]:
        return {(a, b) for a, row in matrix.items() for b, ok in row.items() if not ok}

    names = list(tcp)
    into = {
        dst: {(src, dst) for src in names if src != dst} for dst in ("shop-db-prod", "crm-web-prod")
    }
    assert denied(tcp) == into["shop-db-prod"] | into["crm-web-prod"]
    assert denied(udp) == into["shop-db-prod"]
    assert denied(icmp) == into["crm-web-prod"]


def test_a_probe_never_rides_on_an_earlier_probes_conntrack_entry(
    three_tier: tuple[str, Path],
) -> None:
    """Stateful rules accept ``established`` first (as tagwall's do): a request that matched
    an earlier probe's conntrack entry would pass a drop added in between."""
    lab, state_dir = three_tier
    host = f"{lab}-h-host-2"
    nft = ["ip", "netns", "exec", host, "nft"]
    stateful = (
        "table inet labct { chain forward { type filter hook forward priority 0; "
        "ct state established,related accept; }; }"
    )
    subprocess.run([*nft, "-f", "-"], input=stateful, text=True, check=True)
    try:
        for service in ("icmp", "udp/53", "tcp/80"):
            assert _probe_here(lab, state_dir, service)["shop-web-prod"]["shop-db-prod"]
        drop = "ip daddr 10.1.1.31 drop"
        subprocess.run([*nft, "add", "rule", "inet", "labct", "forward", *drop.split()], check=True)
        for service in ("icmp", "udp/53", "tcp/80"):
            assert not _probe_here(lab, state_dir, service)["shop-web-prod"]["shop-db-prod"]
    finally:
        subprocess.run([*nft, "delete", "table", "inet", "labct"], check=True)


def test_status_shows_the_lab(three_tier: tuple[str, Path]) -> None:
    lab, state_dir = three_tier
    status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
    assert (status["phase"], status["agents"], status["problems"]) == ("up", False, [])
    assert [c["running"] for c in status["controllers"]] == [True, True]
    assert [h["name"] for h in status["hosts"]] == [f"host-{n}" for n in range(1, 5)]
    assert len(status["workloads"]) == 13
    table = run_tagwall("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
    assert f"lab {lab}: up" in table.stdout and "169.254.64.3" in table.stdout


def test_the_controllers_hold_the_labs_manifests(three_tier: tuple[str, Path]) -> None:
    lab, state_dir = three_tier
    status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
    for controller in status["controllers"]:  # two controllers, one store
        got = tagwall_json("get", "workloads", "--server", controller["url"])
        assert len(got["items"]) == 13


def test_a_second_up_of_the_same_lab_is_refused(three_tier: tuple[str, Path]) -> None:
    lab, state_dir = three_tier
    again = run_tagwall(
        "lab", "up", "--no-agents", "-f", THREE_TIER, "--lab", lab, "--state-dir", str(state_dir)
    )
    assert again.returncode == 1
    assert "already up" in again.stderr and f"lab down --lab {lab}" in again.stderr


def test_down_removes_everything_and_is_idempotent(three_tier: tuple[str, Path]) -> None:
    """Runs last in this module: it takes the shared lab down."""
    lab, state_dir = three_tier
    recorded = json.loads((state_dir / "lab.json").read_text())
    pids = [p["pid"] for p in recorded["processes"]]
    report = _down(lab, state_dir)
    assert sorted(report["stoppedPids"]) == sorted(pids)
    assert len(report["deletedNamespaces"]) == 18
    _assert_gone(lab, state_dir, pids)
    again = _down(lab, state_dir)
    assert (again["stoppedPids"], again["deletedNamespaces"], again["removedFiles"]) == ([], [], [])
    assert run_tagwall(
        "lab", "status", "--lab", lab, "--state-dir", str(state_dir)
    ).stdout.startswith(f"lab {lab}: absent")


# -- crashes ----------------------------------------------------------------------------------


def test_down_cleans_up_after_up_was_killed_midway(tmp_path: Path) -> None:
    """SIGKILL ``lab up`` once it has made the namespaces and started a controller: status
    says crashed, and down finds the orphaned controller by its command line."""
    lab, state_dir = unique_lab(), tmp_path / "state"
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tagwall.cli",
            "lab",
            "up",
            "--no-agents",
            "--controllers",
            "1",
            "-f",
            THREE_TIER,
            "--lab",
            lab,
            "--state-dir",
            str(state_dir),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        processes: list[dict[str, Any]] = []
        while not processes:
            assert time.monotonic() < deadline and up.poll() is None, (
                "up never started a controller"
            )
            with contextlib.suppress(OSError, ValueError):  # not written yet, or mid-write
                processes = json.loads((state_dir / "lab.json").read_text())["processes"]
            time.sleep(0.01)
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
        assert status["phase"] == "crashed"
        assert _namespaces(lab)
        report = _down(lab, state_dir)
        assert processes[0]["pid"] in report["stoppedPids"]
        _assert_gone(lab, state_dir, [processes[0]["pid"]])
    finally:
        up.kill()
        up.wait(10)
        run_tagwall("lab", "down", "--lab", lab, "--state-dir", str(state_dir))


def test_down_cleans_up_without_the_state_file(tmp_path: Path) -> None:
    lab, state_dir = unique_lab(), tmp_path / "state"
    try:
        _up(lab, state_dir, "--no-agents", "--controllers", "1", "-f", THREE_TIER)
        pids = [p["pid"] for p in json.loads((state_dir / "lab.json").read_text())["processes"]]
        (state_dir / "lab.json").unlink()
        status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
        assert status["phase"] == "leftovers"
        assert status["leftovers"]["pids"] == pids and len(status["leftovers"]["namespaces"]) == 18
        report = _down(lab, state_dir)
        assert report["stoppedPids"] == pids
        _assert_gone(lab, state_dir, pids)
    finally:
        run_tagwall("lab", "down", "--lab", lab, "--state-dir", str(state_dir))


# -- an outside controller (--server) -----------------------------------------------------------


@pytest.fixture
def outside_controller(tmp_path: Path) -> Iterator[str]:
    """A controller that is not the lab's: ``lab down`` must leave it running."""
    with running_controller(tmp_path / "outside") as url:
        yield url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_up_against_an_outside_controller(tmp_path: Path, outside_controller: str) -> None:
    """A refused apply removes everything made and names the file; agents slower than
    ``--timeout-s`` leave the lab up for inspection; down never stops the outside controller."""
    url = outside_controller
    lab, state_dir = unique_lab(), tmp_path / "state"
    intruder = (
        "apiVersion: tagwall/v1\nkind: Workload\nmetadata: {name: intruder}\n"
        "spec: {interfaces: [{name: eth0, ips: [10.1.1.11]}]}\n"
    )
    applied = subprocess.run(
        [sys.executable, "-m", "tagwall.cli", "apply", "-f", "-", "--server", url],
        input=intruder,
        text=True,
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    args = ("lab", "up", "--lab", lab, "--state-dir", str(state_dir), "--server", url)
    try:
        refused = run_tagwall(*args, "--no-agents", "-f", THREE_TIER)
        assert refused.returncode == 1
        assert "would refuse the lab's manifests" in refused.stderr
        assert "apps.yaml#2" in refused.stderr and "10.1.1.11" in refused.stderr
        assert _namespaces(lab) == set() and not state_dir.exists()

        assert run_tagwall("delete", "workload", "intruder", "--server", url).returncode == 0
        slow = run_tagwall(*args, "--timeout-s", "0.1", "-f", THREE_TIER)
        assert slow.returncode == 1
        assert "not in sync" in slow.stderr and "stays up for inspection" in slow.stderr
        deadline = time.monotonic() + 20
        while True:
            status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
            if {h["agent"]["state"] for h in status["hosts"]} == {"in-sync"}:
                break
            assert time.monotonic() < deadline, status["problems"]
            time.sleep(0.2)
        assert (status["phase"], status["server"], status["controllers"]) == ("up", url, [])
        assert _probe_here(lab, state_dir, "tcp/8080") == _reach(THREE_TIER, "tcp/8080")
        agents = [h["agent"]["pid"] for h in status["hosts"]]
        report = _down(lab, state_dir)
        assert sorted(report["stoppedPids"]) == sorted(agents)
        _assert_gone(lab, state_dir, agents)
        assert _healthy(url)
    finally:
        run_tagwall("lab", "down", "--lab", lab, "--state-dir", str(state_dir))


# -- other manifests, and enforcement ---------------------------------------------------------


def test_kubernetes_pods_become_workloads_named_namespace_slash_name(tmp_path: Path) -> None:
    lab, state_dir = unique_lab(), tmp_path / "state"
    shop = str(EXAMPLES / "kubernetes" / "shop.yaml")
    try:
        _up(lab, state_dir, "--no-agents", "--controllers", "1", "-f", shop)
        status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
        assert [h["name"] for h in status["hosts"]] == ["node-1", "node-2"]
        assert f"{lab}-w-shop_web-1" in _namespaces(lab)
        probed = _probe(lab, state_dir, "icmp")
        assert list(probed) == list(_reach(shop, "icmp"))
        assert "shop/web-1" in probed and all(all(row.values()) for row in probed.values())
    finally:
        _down(lab, state_dir)
    assert _namespaces(lab) == set()


def test_with_agents_real_packets_agree_with_reach(tmp_path: Path) -> None:
    """The lab with its agents (nftables in every host namespace): for each service, the
    probe's matrix is exactly the reference evaluator's (DESIGN §1: evaluators agree)."""
    lab, state_dir = unique_lab(), tmp_path / "state"
    try:
        _up(lab, state_dir, "-f", THREE_TIER)
        status = tagwall_json("lab", "status", "--lab", lab, "--state-dir", str(state_dir))
        assert {h["agent"]["state"] for h in status["hosts"]} == {"in-sync"}
        for service in ("tcp/8080", "tcp/5432", "tcp/443", "icmp"):
            expected = _reach(THREE_TIER, service)
            assert _probe_here(lab, state_dir, service) == expected, service
            assert not all(all(row.values()) for row in expected.values())  # something is denied
    finally:
        _down(lab, state_dir)
    assert _namespaces(lab) == set()
