"""Agents' flow reports on real packets: connections made between the lab's workloads show up
in ``tagwall flows`` with the verdict and the rule that decided them at each end, paired into
one row when the two ends are on two hosts, with the audit policy's would-deny; a denied
attempt shows up as denied at the end that denied it.  Then a restarted agent: reports made
while no controller took them arrive once it is back, none twice.

One lab for the module: host-1 runs web, app and an ops tool; host-2 runs db.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tagwall._netns import entered
from tagwall.lab._processes import spawn

from .enforcement_support import (
    RunningLab,
    cmdline,
    healthy,
    kill_and_wait,
    running_lab,
    wait_until,
    yaml_documents,
)
from .support import privileged, unique_lab

pytestmark = privileged

MANIFESTS = """\
apiVersion: tagwall/v1
kind: Project
metadata: {name: shop}
spec: {tags: {application: shop}}
---
apiVersion: tagwall/v1
kind: Project
metadata: {name: ops}
spec: {tags: {application: ops}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web, project: shop}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.7.0.11]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: app, project: shop}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.7.0.21]}], tags: {tier: app}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: db, project: shop}
spec: {host: host-2, interfaces: [{name: eth0, ips: [10.7.0.31]}], tags: {tier: db}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: tool, project: ops}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.7.0.41]}], tags: {tier: tools}}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: tiers}
spec:
  rules:
  - {name: web-to-app, from: {tags: "tier=web"}, to: {tags: "tier=app"}, services: [tcp/8080]}
  - {name: app-to-db, from: {tags: "tier=app"}, to: {tags: "tier=db"}, services: [tcp/5432]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: shop}
spec:
  tier: application
  selector: "application=shop"
  directions: [ingress, egress]
  policies: [{name: tiers}]
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: staged}
spec:
  mode: audit
  rules:
  - {name: no-db, from: {any: true}, to: {tags: "tier=db"}, services: [tcp/5432], action: deny}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: guard}
spec:
  tier: admin
  selector: "application=shop"
  directions: [ingress, egress]
  policies: [{name: staged}]
"""

ADDRESS = {"web": "10.7.0.11", "app": "10.7.0.21", "db": "10.7.0.31", "tool": "10.7.0.41"}
REPORT_TIMEOUT_S = 90.0  # a snapshot interval (10 s) or two, the shipping, the pairing


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("flows")
    docs = yaml_documents(directory, "lab.yaml", MANIFESTS)
    with running_lab(docs, unique_lab(), directory / "state", controllers=1) as running:
        yield running


# -- real connections ---------------------------------------------------------------------------


@contextlib.contextmanager
def server(lab: RunningLab, workload: str, port: int) -> Iterator[None]:
    """A TCP server in ``workload``'s namespace that reads everything and answers 100 bytes."""
    with entered(f"{lab.name}-w-{workload}"):
        listener = socket.create_server((ADDRESS[workload], port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                while conn.recv(65536):
                    pass
                conn.sendall(b"r" * 100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        listener.close()


def connect(lab: RunningLab, src: str, dst: str, port: int, payload: int = 1000) -> bool:
    """Open a connection from ``src`` to ``dst``:``port``, send ``payload`` bytes, read the
    answer to the end; False if the connection was refused by the firewall (timed out)."""
    with entered(f"{lab.name}-w-{src}"):
        sock = socket.socket()
    with sock:
        sock.settimeout(2)
        try:
            sock.connect((ADDRESS[dst], port))
        except (TimeoutError, ConnectionRefusedError):
            return False
        sock.sendall(b"x" * payload)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    return True


# -- reading the store --------------------------------------------------------------------------


def flows(lab: RunningLab, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{lab.urls[0]}/api/v1/flows", params=params, timeout=10)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def between(lab: RunningLab, src: str, dst: str, port: int) -> list[dict[str, Any]]:
    return [
        f
        for f in flows(lab, workload=src, port=port, limit=1000)
        if f["src"]["workload"] == src and f["dst"]["workload"] == dst
    ]


def eventually(what: str, found: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def check() -> bool:
        nonlocal rows
        rows = found()
        return bool(rows)

    wait_until(check, REPORT_TIMEOUT_S, what)
    return rows


def rule_of(side: dict[str, Any], key: str = "decided_by") -> tuple[str, str | None, str | None]:
    decided = side[key]
    assert decided is not None, side
    return decided["tier"], decided["policy"], decided["rule"]


def unshipped(spool: Path, port: int) -> list[dict[str, Any]]:
    """The reports to ``port`` waiting in an agent's spool, read without touching it (the
    framing of ``agent/_spool.py``: length, CRC-32, payload; records after ``acked``)."""
    state = spool / "state.json"
    acked = json.loads(state.read_text())["acked"] if state.exists() else 0
    out = []
    for segment in sorted(spool.glob("*.seg")):
        data, seq, offset = segment.read_bytes(), int(segment.stem), 0
        while offset + 8 <= len(data):
            length = int.from_bytes(data[offset : offset + 4], "big")
            payload = data[offset + 8 : offset + 8 + length]
            if len(payload) < length:
                break  # being written
            if seq > acked and json.loads(payload)["dport"] == port:
                out.append(json.loads(payload))
            offset, seq = offset + 8 + length, seq + 1
    return out


# -- the tests ------------------------------------------------------------------------------------


def test_flows_carry_the_deciding_rule_at_each_end(lab: RunningLab) -> None:
    with server(lab, "app", 8080), server(lab, "db", 5432):
        assert connect(lab, "web", "app", 8080, payload=3000)  # same host
        assert connect(lab, "app", "db", 5432, payload=5000)  # host-1 → host-2
        assert not connect(lab, "web", "db", 5432)  # web's egress isolates it
        assert not connect(lab, "tool", "db", 5432)  # tool may leave; db's ingress denies

    same_host = eventually("web → app reported", lambda: between(lab, "web", "app", 8080))
    assert len(same_host) == 1, same_host
    row = same_host[0]
    assert (row["src"]["verdict"], row["dst"]["verdict"]) == ("allow", "allow")
    assert rule_of(row["src"]) == ("application", "tiers", "web-to-app")
    assert rule_of(row["dst"]) == ("application", "tiers", "web-to-app")
    assert row["exporter"] == "host-1" and row["source"] == "agent"
    assert row["src"]["tags"]["tier"] == ["web"] and row["dst"]["tags"]["tier"] == ["app"]
    # IP headers count: the data plus, per packet, 20 bytes of IP and 20-60 of TCP header.
    assert 3000 < row["bytes"] < 3000 + 80 * row["packets"]
    assert 100 < row["rbytes"] < 100 + 80 * row["rpackets"]

    # Two hosts saw app → db: one row, each end's decision from the host that enforces it.
    cross = eventually("app → db reported", lambda: between(lab, "app", "db", 5432))
    assert len(cross) == 1, cross
    row = cross[0]
    assert (row["src"]["verdict"], row["dst"]["verdict"]) == ("allow", "allow")
    assert rule_of(row["src"]) == ("application", "tiers", "app-to-db")
    assert rule_of(row["dst"]) == ("application", "tiers", "app-to-db")
    assert 5000 < row["bytes"] < 5000 + 80 * row["packets"]
    # The staged (audit) policy would deny it, at both ends.
    for side in (row["src"], row["dst"]):
        assert side["audit"] == "would-deny"
        assert rule_of(side, "audit_by") == ("admin", "staged", "no-db")

    # Denied at egress, on host-1: the row says so at the source; db never saw it.
    egress = eventually("web → db denied", lambda: between(lab, "web", "db", 5432))
    assert {(r["src"]["verdict"], r["dst"]["verdict"]) for r in egress} == {("deny", "none")}
    assert {rule_of(r["src"]) for r in egress} == {
        ("application", "application-default-deny", None)
    }
    assert all(r["packets"] >= 1 and r["rpackets"] == 0 for r in egress)

    # Allowed at tool's egress (no policy applies to ops: the posture), denied at db's ingress.
    ingress = eventually(
        "tool → db denied at db",
        lambda: [r for r in between(lab, "tool", "db", 5432) if r["dst"]["verdict"] == "deny"],
    )
    for r in ingress:
        assert rule_of(r["dst"]) == ("application", "application-default-deny", None)
        assert (r["src"]["verdict"], rule_of(r["src"])) == (
            "allow",
            ("posture", "default-posture", None),
        )


def test_reports_survive_an_outage_and_a_restart_and_arrive_once(lab: RunningLab) -> None:
    """The controller is stopped; flows made meanwhile wait in host-1's spool; host-1's agent
    is restarted too; once the controller is back, every report arrives, none twice."""
    before = len(between(lab, "web", "app", 8080))
    controller = lab.processes("controller")["controller-1"]
    controller_argv = cmdline(controller["pid"])
    agent = lab.processes("agent")["host-1"]
    agent_argv = cmdline(agent["pid"])
    logs = lab.state_dir / "logs"
    kill_and_wait([controller["pid"]], signal.SIGTERM)

    with server(lab, "app", 8080):
        for _ in range(3):
            assert connect(lab, "web", "app", 8080)
    spool = lab.state_dir / "agents" / lab.host_namespace("host-1") / "flows" / "spool"
    # Once the three are reported, restart the agent: what it spooled stays, and the flows it
    # already reported (still in conntrack, TIME_WAIT) are not reported again.
    wait_until(lambda: len(unshipped(spool, 8080)) >= 3, REPORT_TIMEOUT_S, "the 3 reports spooled")
    kill_and_wait([agent["pid"]], signal.SIGTERM)
    spawn(agent_argv, logs / "agent-restarted.log")

    spawn(controller_argv, logs / "controller-restarted.log")
    wait_until(lambda: healthy(controller["url"]), 20, "controller healthy again")
    eventually(
        "the spooled reports shipped",
        lambda: r if len(r := between(lab, "web", "app", 8080)) >= before + 3 else [],
    )
    # A marker: one more connection, made now.  Its report comes with a snapshot after the
    # restart, and the agent ships in order, so once it is in, a report sent twice or a flow
    # reported again (it would be at the first snapshot) is in too.
    marker_ms = time.time_ns() // 1_000_000
    with server(lab, "app", 8080):
        assert connect(lab, "web", "app", 8080)

    def with_marker() -> list[dict[str, Any]]:
        rows = between(lab, "web", "app", 8080)
        return rows if any(f["start_ms"] >= marker_ms for f in rows) else []

    rows = eventually("the marker connection reported", with_marker)
    assert len(rows) == before + 3 + 1, rows
