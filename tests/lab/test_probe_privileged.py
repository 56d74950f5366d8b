"""The probe on a real network (root): IPv6 across hosts and the fabric, dual stack, a
workload with two interfaces, a workload without addresses, ports already taken.

The network is built with the lab's own planner and builder, without controllers: these tests
are about packets.  Without any filtering, a pair connects exactly when both ends have
addresses and the destination has one of the source's first family (the probe's rule).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tagwall._netns import entered
from tagwall.lab import LabWorkload, Topology, _probe, plan, probe_pairs
from tagwall.lab._netlink import create, lab_namespaces, remove_namespaces
from tagwall.model import Document, load, parse_flow_service

from .support import privileged, unique_lab

pytestmark = privileged


def _workload(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tagwall/v1",
        "kind": "Workload",
        "metadata": {"name": name},
        "spec": spec,
    }


MANIFESTS = [
    _workload("a", host="h1", interfaces=[{"name": "eth0", "ips": ["2001:db8::a", "10.9.0.1"]}]),
    _workload("b", host="h2", interfaces=[{"name": "eth0", "ips": ["2001:db8::b"]}]),
    _workload("c", host="h2", interfaces=[{"name": "eth0", "ips": ["10.9.0.3"]}]),
    _workload("ext6", kind="external", interfaces=[{"name": "ext", "ips": ["2001:db8::e"]}]),
    _workload("ext4", kind="external", interfaces=[{"name": "ext", "ips": ["192.0.2.4"]}]),
    _workload("bare", host="h1"),
    _workload(
        "fw",
        host="h1",
        interfaces=[{"name": "left", "ips": ["10.9.1.1"]}, {"name": "right", "ips": ["10.9.2.1"]}],
    ),
]


@pytest.fixture(scope="module")
def network() -> Iterator[Topology]:
    lab = unique_lab()
    topology = plan(load([Document(m, "probe.yaml", i) for i, m in enumerate(MANIFESTS)]), lab)
    try:
        create(topology, lambda _: None)
        yield topology
    finally:
        remove_namespaces(lab_namespaces(lab))
    assert lab_namespaces(lab) == []


def _expected(workloads: tuple[LabWorkload, ...] | list[LabWorkload]) -> dict[str, dict[str, bool]]:
    return {
        s.name: {
            d.name: bool(s.ips) and any(ip.version == s.ips[0].version for ip in d.ips)
            for d in workloads
        }
        for s in workloads
    }


@pytest.mark.parametrize("service", ["tcp/80", "udp/5353"])
def test_every_routable_pair_connects_over_ipv4_and_ipv6(network: Topology, service: str) -> None:
    result = probe_pairs(network.workloads, parse_flow_service(service))
    assert result.matrix == _expected(network.workloads)
    assert result.matrix["a"]["b"] and result.matrix["b"]["ext6"]  # v6: host to host, fabric
    assert result.matrix["ext4"]["fw"] and result.matrix["fw"]["ext4"]
    assert "bare has no address: every pair from or to it is false" in result.warnings
    assert "a → c: no IPv6 address at the destination: false" in result.warnings
    assert result.attempts == sum(v for row in result.matrix.values() for v in row.values())


def test_echo_requests_per_family(network: Topology) -> None:
    v4 = probe_pairs(network.workloads, parse_flow_service("icmp"))
    v6 = probe_pairs(network.workloads, parse_flow_service("icmpv6"))
    first = {w.name: w.ips[0].version for w in network.workloads if w.ips}
    for matrix, version in ((v4.matrix, 4), (v6.matrix, 6)):
        expected = _expected(network.workloads)
        for src, row in expected.items():
            for dst in row:
                row[dst] = row[dst] and first.get(src) == version
        assert matrix == expected
    assert any("icmp cannot leave from its first address 2001:db8::a" in w for w in v4.warnings)


def test_a_second_interface_answers_although_replies_leave_by_the_first(
    network: Topology,
) -> None:
    """fw's right-hand address: requests come in on ``right``, replies leave by the default
    route on ``left`` (rp_filter is off in the lab for this)."""
    fw = next(w for w in network.workloads if w.name == "fw")
    right = replace(fw, ips=(fw.interfaces[1].ips[0],))
    others = [w for w in network.workloads if w.name in ("c", "ext4")]
    result = probe_pairs([*others, right], parse_flow_service("tcp/80"))
    assert all(all(row.values()) for row in result.matrix.values())


def test_a_server_already_on_the_port_answers_instead(network: Topology) -> None:
    c = next(w for w in network.workloads if w.name == "c")
    fw = next(w for w in network.workloads if w.name == "fw")
    workloads = [c, fw]
    with entered(c.namespace):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, mute:
        server.bind(("0.0.0.0", 8080))
        server.listen()
        mute.bind(("0.0.0.0", 8080))  # takes the port and never answers
        tcp = probe_pairs(workloads, parse_flow_service("tcp/8080"))
        udp = probe_pairs(workloads, parse_flow_service("udp/8080"))
    assert tcp.matrix["fw"]["c"] and tcp.matrix["c"]["c"]
    assert not udp.matrix["fw"]["c"] and not udp.matrix["c"]["c"]
    assert udp.matrix["c"]["fw"]  # fw's port was free: the probe's own echo listener
    assert any(w.startswith(f"{c.namespace}: tcp/8080 is taken") for w in tcp.warnings)
    assert any(w.startswith(f"{c.namespace}: udp/8080 is taken") for w in udp.warnings)


def test_a_udp_request_lost_once_is_resent_within_the_timeout(network: Topology) -> None:
    """A listener that ignores each sender's first datagram (a busy server, a lost packet)
    still answers the probe: the request goes again every 0.1 s until the 0.5 s timeout."""
    c = next(w for w in network.workloads if w.name == "c")
    fw = next(w for w in network.workloads if w.name == "fw")
    with entered(c.namespace):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seen: dict[tuple[str, int], int] = {}
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, sender = server.recvfrom(64)
            except TimeoutError:
                continue
            seen[sender] = seen.get(sender, 0) + 1
            if seen[sender] > 1:
                server.sendto(data, sender)

    with server:
        server.bind(("0.0.0.0", 8081))
        server.settimeout(0.1)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            result = probe_pairs([c, fw], parse_flow_service("udp/8081"))
        finally:
            done.set()
            thread.join(timeout=5)
    assert result.matrix["fw"]["c"] and result.matrix["c"]["c"]
    assert seen and all(n >= 2 for n in seen.values())  # every answer needed a second request


@pytest.mark.parametrize("service", ["tcp/80", "icmp"])
def test_an_answer_that_came_in_time_counts_though_the_loop_was_late(
    network: Topology, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt's first step holds the event loop for 20 ms (as hundreds of attempts'
    setups do on a busy machine), so the 10 ms timers of the attempts before it run out
    before the loop reads their answers, which the kernel holds by then (the TCP handshake,
    the ICMP echo reply); the last look at the socket finds them.  (UDP is answered by the
    probe's own listener in the same loop: its resends cover a late answer instead.)"""
    attempt = _probe._Prober._try

    def busy_first(self: Any, *args: Any) -> Any:
        time.sleep(0.02)
        return attempt(self, *args)

    monkeypatch.setattr(_probe._Prober, "_try", busy_first)
    v4 = [w for w in network.workloads if w.ips and w.ips[0].version == 4]  # icmp: IPv4 only
    assert len(v4) >= 3
    result = probe_pairs(v4, parse_flow_service(service), timeout_s=0.01)
    assert all(all(row.values()) for row in result.matrix.values()), result.matrix
