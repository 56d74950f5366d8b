"""Faults on a real lab (nftables agents, two controllers on one store): what packets do when
controllers die, an agent restarts on a rebooted host, the active controller stops, or a
data path refuses a change (docs/control.md "Failover and fail-static", "Persistence and
boot").

Each test builds its own small lab: two hosts, two workloads each; ``db`` workloads accept
tcp/5432 from ``web`` workloads only (and no ICMP), so every answer has allowed and denied
pairs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tagwall.lab import status
from tagwall.lab._processes import is_running, spawn
from tagwall.model import Document

from .enforcement_support import (
    RunningLab,
    cmdline,
    differences,
    expected,
    healthy,
    kill_and_wait,
    log_lines,
    running_lab,
    wait_until,
    yaml_documents,
)
from .support import privileged, unique_lab

pytestmark = privileged

SERVICES = ("tcp/5432", "icmp")

WORKLOADS = """\
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web-a}
spec: {host: host-a, interfaces: [{name: eth0, ips: [10.7.0.1]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: db-a}
spec: {host: host-a, interfaces: [{name: eth0, ips: [10.7.0.2]}], tags: {tier: db}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web-b}
spec: {host: host-b, interfaces: [{name: eth0, ips: [10.7.0.3]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: db-b}
spec: {host: host-b, interfaces: [{name: eth0, ips: [10.7.0.4]}], tags: {tier: db}}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: db}
spec: {tier: application, priority: 10, selector: tier=db, directions: [ingress],
       policies: [db]}
"""


def _policy(source: str, services: str = "[tcp/5432]") -> str:
    return f"""\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {{name: db}}
spec:
  rules:
  - {{name: clients, from: {source}, to: {{tags: tier=db}}, services: {services}}}
"""


WEB_TO_DB = _policy("{tags: tier=web}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLab]:
    docs = yaml_documents(tmp_path, "lab.yaml", WORKLOADS + "---\n" + WEB_TO_DB)
    with running_lab(docs, unique_lab(), tmp_path / "state") as running:
        yield running


def _reloaded(lab: RunningLab, name: str, policy: str) -> list[Document]:
    """The lab's workloads and policy set with ``policy`` as the FirewallPolicy."""
    directory = lab.state_dir.parent
    return yaml_documents(directory, name, WORKLOADS + "---\n" + policy)


def _failed_connections(log: str) -> int:
    """Lines in which the agent says a controller connection failed or was lost."""
    return sum(" tagwall.agent INFO controller ws://" in line for line in log_lines(log))


def test_with_every_controller_killed_verdicts_stay(lab: RunningLab) -> None:
    """SIGKILL both controllers: the agents notice (they log the lost stream and the refused
    reconnects) and keep running, and every probed verdict is what it was."""
    before = lab.assert_probe_equals_reach(SERVICES)
    # What ``tagwall lab status -o json`` prints.
    lab_status: dict[str, Any] = status(lab=lab.name, state_dir=lab.state_dir).as_dict()
    controllers = [c["pid"] for c in lab_status["controllers"]]
    agents = [h["agent"]["pid"] for h in lab_status["hosts"]]
    assert len(controllers) == 2 and len(agents) == 2
    logs = {host: lab.agent_log(host) for host in lab.hosts}
    seen = {host: _failed_connections(log) for host, log in logs.items()}

    kill_and_wait(controllers, signal.SIGKILL)
    # Both controllers refused or lost by every agent: it tried each of them.
    wait_until(
        lambda: all(_failed_connections(logs[h]) >= seen[h] + 2 for h in lab.hosts),
        15,
        "agent noticing both controllers gone",
    )
    after = lab.probe(*SERVICES)
    assert after == before, "; ".join(d for s in SERVICES for d in differences(after[s], before[s]))
    assert all(is_running(pid) for pid in agents)


def test_a_restarted_agent_restores_its_program_before_any_controller(lab: RunningLab) -> None:
    """A host "reboots" (its agent killed, its table deleted) while no controller is up: the
    agent, started again with the same command line, loads its persisted program, and the
    probe equals reach again.  Without a persisted program, ``--unprogrammed closed`` drops
    the host's workload traffic until a controller appears."""
    expected_now = lab.assert_probe_equals_reach(SERVICES)
    host, namespace = "host-b", lab.host_namespace("host-b")
    agent = lab.processes("agent")[host]
    agent_argv = cmdline(agent["pid"])
    controller = lab.processes("controller")["controller-1"]
    controller_argv = cmdline(controller["pid"])
    assert "--state-dir" in agent_argv and "--unprogrammed" not in agent_argv

    kill_and_wait([agent["pid"]], signal.SIGKILL)
    kill_and_wait([p["pid"] for p in lab.processes("controller").values()], signal.SIGKILL)
    _delete_table(namespace)
    unprotected = lab.probe(*SERVICES)
    assert unprotected != expected_now  # host-b's db now takes anything: the table mattered
    assert unprotected["tcp/5432"]["db-a"]["db-b"]

    logs = lab.state_dir / "logs"
    restarted = logs / "agent-restarted.log"
    pid = spawn(agent_argv, restarted)
    wait_until(
        lambda: any("restored the program of revision" in x for x in log_lines(restarted)),
        20,
        "restored program",
    )
    assert not any(healthy(url) for url in lab.urls)
    assert lab.probe(*SERVICES) == expected_now

    # No persisted program, fail-closed: every flow from or to host-b's workloads is dropped.
    kill_and_wait([pid], signal.SIGKILL)
    _delete_table(namespace)
    empty = lab.state_dir / "agents" / f"empty-{namespace}"
    closed_argv = _with_option(agent_argv, "--state-dir", str(empty))
    closed_argv += ["--unprogrammed", "closed"]
    closed_log = logs / "agent-closed.log"
    pid = spawn(closed_argv, closed_log)
    wait_until(lambda: any("no program yet" in x for x in log_lines(closed_log)), 20, "closed")
    on_b = {"web-b", "db-b"}
    closed = {
        s: {
            a: {b: ok and (a == b or not {a, b} & on_b) for b, ok in row.items()}
            for a, row in matrix.items()
        }
        for s, matrix in expected_now.items()
    }
    assert lab.probe(*SERVICES) == closed
    assert expected_now["tcp/5432"]["web-a"]["db-b"] and not closed["tcp/5432"]["web-a"]["db-b"]

    restarted_at = datetime.now(UTC)
    spawn(controller_argv, logs / "controller-restarted.log")
    wait_until(lambda: healthy(controller["url"]), 20, "controller healthy again")
    lab.wait_in_sync(controller["url"], reported_since=restarted_at)
    assert lab.probe(*SERVICES) == expected_now
    assert is_running(pid)


def _delete_table(namespace: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", "tagwall"], check=True
    )


def _with_option(argv: list[str], option: str, value: str) -> list[str]:
    at = argv.index(option)
    return [*argv[: at + 1], value, *argv[at + 2 :]]


def test_agents_fail_over_to_the_other_controller_within_seconds(lab: RunningLab) -> None:
    """SIGTERM the controller holding the agents' streams: the other controller reports every
    host connected to it within 5 s, and a change made through it reaches real packets."""
    lab.assert_probe_equals_reach(SERVICES)
    urls = lab.urls
    holding = {item["controller"] for item in lab.agents(urls[1])["items"]}
    assert len(holding) == 1 and holding <= set(urls), holding
    (active,) = holding
    (survivor,) = set(urls) - holding
    active_pid = next(p["pid"] for p in lab.processes("controller").values() if p["url"] == active)

    def moved() -> bool:
        items = lab.agents(survivor)["items"]
        return {i["host"] for i in items if i["connected"] and i["controller"] == survivor} == set(
            lab.hosts
        )

    os.kill(active_pid, signal.SIGTERM)
    took = wait_until(moved, 10, "every host connected to the surviving controller")
    assert took < 5, f"fail-over took {took:.1f} s"
    wait_until(lambda: not is_running(active_pid), 15, "the stopped controller to exit")

    before = expected(lab.objects, "icmp")
    pinged = _reloaded(lab, "ping.yaml", _policy("{tags: tier=web}", "[tcp/5432, icmp]"))
    lab.set_objects(pinged, survivor)
    after = lab.assert_probe_equals_reach(SERVICES)
    assert not before["web-a"]["db-b"] and after["icmp"]["web-a"]["db-b"]


def test_a_refused_change_leaves_the_last_good_program(lab: RunningLab) -> None:
    """nftables refuses a change when it would delete a set that a rule outside tagwall's
    control still names: here one an operator appended to tagwall's ``refuse`` chain (after
    its final reject, so no packet ever meets it).  Every agent nacks; the controller shows
    each host ``rejected`` with nft's reason and the last acknowledged revision; the probe
    still gives the previous verdicts.  The next change goes out as a full program, which
    replaces the table, and is enforced."""
    good = lab.assert_probe_equals_reach(SERVICES)
    for host in lab.hosts:
        _append_rule_naming_every_set(lab.host_namespace(host))

    # web-b loses tcp/5432 to db: the set of tier=web goes, which nft must refuse to delete.
    only_web_a = _reloaded(lab, "web-a.yaml", _policy("{workload: web-a}"))
    assert expected(only_web_a, "tcp/5432") != good["tcp/5432"]
    refused_revision = lab.commit(only_web_a)

    def rejected() -> bool:
        items = lab.agents()["items"]
        return all(i["state"] == "rejected" for i in items) and len(items) == len(lab.hosts)

    wait_until(rejected, 20, "every host rejected")
    for item in lab.agents()["items"]:
        assert item["realizedRevision"] < refused_revision <= item["desiredRevision"], item
        assert f"revision {refused_revision} refused" in item["error"], item
        assert "nftables refused a delta" in item["error"], item
        assert "Device or resource busy" in item["error"], item
    probed = lab.probe(*SERVICES)
    assert probed == good, "; ".join(d for s in SERVICES for d in differences(probed[s], good[s]))

    # The next change is sent whole: the table is replaced (the foreign rule with it).
    lab.set_objects(_reloaded(lab, "ping.yaml", _policy("{workload: web-a}", "[tcp/5432, icmp]")))
    after = lab.assert_probe_equals_reach(SERVICES)
    assert after["icmp"]["web-a"]["db-b"] and not after["tcp/5432"]["web-b"]["db-a"]
    for host in lab.hosts:
        refuse = _nft(lab.host_namespace(host), "list", "chain", "inet", "tagwall", "refuse")
        assert "foreign" not in refuse


def _nft(namespace: str, *args: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def _append_rule_naming_every_set(namespace: str) -> None:
    listing = json.loads(_nft(namespace, "-j", "list", "sets", "table", "inet", "tagwall"))
    sets = [item["set"] for item in listing["nftables"] if "set" in item]
    names = [s["name"] for s in sets if s["name"].startswith("s_") and s["type"] == "ipv4_addr"]
    assert names
    rules = [f'add rule inet tagwall refuse ip saddr @{n} counter comment "foreign"' for n in names]
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input="\n".join(rules) + "\n",
        text=True,
        check=True,
    )


def test_a_restarted_controller_does_not_show_a_gone_agent_connected(lab: RunningLab) -> None:
    """Both controllers are killed, then host-b's agent; controller-1 is started again with
    its command line.  It holds no stream from host-b (no agent runs there), so it must not
    show host-b connected, let alone in sync.  (A status row written by another controller
    may look connected until it is 6 s old: docs/control.md.  This row names this
    controller, which knows better.)"""
    controller = lab.processes("controller")["controller-1"]
    argv = cmdline(controller["pid"])
    kill_and_wait([p["pid"] for p in lab.processes("controller").values()], signal.SIGKILL)
    kill_and_wait([lab.processes("agent")["host-b"]["pid"]], signal.SIGKILL)
    spawn(argv, lab.state_dir / "logs" / "controller-restarted.log")
    wait_until(lambda: healthy(controller["url"]), 20, "controller healthy again")
    items = {i["host"]: i for i in lab.agents(controller["url"])["items"]}
    assert (items["host-b"]["connected"], items["host-b"]["state"]) == (False, "disconnected")
    # host-a's agent runs: it reconnects to the controller that came back.
    wait_until(
        lambda: _states(lab, controller["url"]).get("host-a") == "in-sync", 20, "host-a in sync"
    )
    assert _states(lab, controller["url"])["host-b"] == "disconnected"


def _states(lab: RunningLab, url: str) -> dict[str, str]:
    return {i["host"]: i["state"] for i in lab.agents(url)["items"]}
