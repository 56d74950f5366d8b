"""The conntrack reader on a real kernel: a client namespace talks to a server namespace
through a forwarding "host" namespace whose nftables table marks connections, and the reader
in the host namespace reports every flow with its counters, mark and times.

Topology (namespaces ``twfr-<pid>-<random>-*``, removed at the end, also on failure)::

    client 10.77.1.2 ── 10.77.1.1 host 10.77.2.1 ── 10.77.2.2 server
                                    └ reader here
    other (loopback traffic of its own, its own table): isolation

TCP timestamps, SACK and window scaling are off at both ends, so every TCP segment is 40
header bytes (IP + TCP) except SYN and SYN-ACK, which carry a 4-byte MSS option: the
conntrack byte counters are then exactly ``40 * packets + 4 + payload`` each way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tagwall._netns import NETNS_DIR, entered
from tagwall.agent._conntrack import (
    ConntrackBatch,
    ConntrackEvent,
    ConntrackReader,
    EventKind,
    FiveTuple,
)

from .support import iterated, wait_for

WHY_NOT = (
    "needs root (network namespaces, nftables)"
    if os.geteuid() != 0
    else "needs the nft and ip commands"
    if shutil.which("nft") is None or shutil.which("ip") is None
    else None
)
pytestmark = [pytest.mark.privileged, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

PREFIX = "twfr-"
CLIENT, SERVER = "10.77.1.2", "10.77.2.2"
TCP_PORT, UDP_PORT, LONG_PORT, OTHER_PORT, BATCH_PORT = 7000, 7001, 7002, 7003, 7004
TCP_MARK, UDP_MARK = 0xC0FFEE01, 0x0000ABCD
RULES = f"""
table inet twfr {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ct state new tcp dport {{ {TCP_PORT}, {LONG_PORT} }} ct mark set {TCP_MARK:#x}
    ct state new udp dport {{ {UDP_PORT}, {BATCH_PORT} }} ct mark set {UDP_MARK:#x}
  }}
}}
"""


def sh(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


def nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True
    )


@dataclass
class Net:
    client: str
    host: str
    server: str
    other: str


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Fresh namespaces named ``twfr-<pid>-<random>-<role>``; leftovers of killed runs go."""
    for name in os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []:
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    base = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
    names = {role: f"{base}-{role}" for role in roles}
    try:
        for name in names.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with namespaces("c", "h", "s", "o") as ns:
        host = ns["h"]
        for end, subnet, veth in ((ns["c"], 1, "twfr-c"), (ns["s"], 2, "twfr-s")):
            sh("ip", "-n", host, "link", "add", veth, "type", "veth", "peer", "eth0", "netns", end)
            sh("ip", "-n", host, "addr", "add", f"10.77.{subnet}.1/24", "dev", veth)
            sh("ip", "-n", host, "link", "set", veth, "up")
            sh("ip", "-n", end, "addr", "add", f"10.77.{subnet}.2/24", "dev", "eth0")
            sh("ip", "-n", end, "link", "set", "eth0", "up")
            sh("ip", "-n", end, "route", "add", "default", "via", f"10.77.{subnet}.1")
            sh(
                "ip", "netns", "exec", end, "sysctl", "-qw",
                "net.ipv4.tcp_timestamps=0", "net.ipv4.tcp_sack=0",
                "net.ipv4.tcp_window_scaling=0",
            )  # fmt: skip
        sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nft(host, RULES)
        nft(ns["o"], RULES.replace("forward", "output"))
        yield Net(ns["c"], host, ns["s"], ns["o"])


def reading(
    netns: str, snapshot_interval_s: float = 30.0
) -> contextlib.AbstractContextManager[tuple[ConntrackReader, list[ConntrackEvent]]]:
    return iterated(ConntrackReader(netns, snapshot_interval_s=snapshot_interval_s))


def tcp_server(ns: str, port: int, reply: bytes, stop: threading.Event) -> threading.Thread:
    """Reads each connection to its end, answers ``reply``, closes."""
    with entered(ns):
        listener = socket.create_server(("0.0.0.0", port), backlog=64)
    listener.settimeout(0.1)

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    while conn.recv(65536):
                        pass
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def udp_echo(ns: str, address: str, port: int, stop: threading.Event) -> threading.Thread:
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(0.1)

    def serve() -> None:
        with sock:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    data, peer = sock.recvfrom(65536)
                    sock.sendto(data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def tcp_exchange(ns: str, payload: bytes) -> tuple[int, bytes]:
    """One connection: send ``payload``, half-close, read the answer; (source port, answer)."""
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(5)
        sock.connect((SERVER, TCP_PORT))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return sock.getsockname()[1], answer


def udp_exchange(ns: str, dst: str, port: int, payload: bytes) -> int:
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(5)
        sock.sendto(payload, (dst, port))
        assert sock.recv(65536) == payload
        return int(sock.getsockname()[1])


def tcp_payload(packets: int | None, total_bytes: int | None) -> int:
    """Payload bytes of a TCP direction's IP bytes (see the module docstring)."""
    assert packets is not None and total_bytes is not None, "no counters"
    return total_bytes - 40 * packets - 4


def ours(events: list[ConntrackEvent], kind: EventKind) -> dict[FiveTuple, ConntrackEvent]:
    return {e.flow: e for e in events if e.kind is kind and e.flow.src == CLIENT}


def test_new_and_destroy_events_carry_counters_mark_and_times(net: Net) -> None:
    """N TCP connections and M UDP exchanges: N+M NEW events, and after a flush N+M DESTROY
    events whose counters are the IP bytes of what was sent, with the rules' ct marks."""
    n, m = 12, 8
    stop = threading.Event()
    tcp_server(net.server, TCP_PORT, b"r" * 3000, stop)
    udp_echo(net.server, "0.0.0.0", UDP_PORT, stop)
    try:
        with reading(net.host) as (reader, seen):
            tcp = {tcp_exchange(net.client, b"q" * (100 * i + 1)) for i in range(n)}
            udp = {udp_exchange(net.client, SERVER, UDP_PORT, b"u" * (50 + i)) for i in range(m)}
            time.sleep(0.3)  # last ACKs cross the host before the entries go
            sh("ip", "netns", "exec", net.host, "conntrack", "-F")
            wait_for(lambda: len(ours(seen, EventKind.DESTROY)) >= n + m)
    finally:
        stop.set()
    new, destroy = ours(seen, EventKind.NEW), ours(seen, EventKind.DESTROY)
    assert len(new) == len(destroy) == n + m
    assert sorted(e.ct_id for e in new.values()) == sorted(e.ct_id for e in destroy.values())
    assert reader.statistics().lost_overruns == 0

    assert {answer for _, answer in tcp} == {b"r" * 3000}
    for flow, end in destroy.items():
        assert new[flow].mark == end.mark
        assert new[flow].packets_orig is None  # NEW comes before any counting is final
        assert end.start_ns is not None and end.stop_ns is not None
        assert end.start_ns <= end.stop_ns <= end.observed_ns
    tcp_ends = [e for f, e in destroy.items() if f.proto == socket.IPPROTO_TCP]
    assert {e.flow.sport for e in tcp_ends} == {sport for sport, _ in tcp}
    assert {(e.flow.dst, e.flow.dport, e.mark) for e in tcp_ends} == {(SERVER, TCP_PORT, TCP_MARK)}
    # Client payloads were 1, 101, ... bytes; the server answered 3000 bytes each time.
    assert sorted(tcp_payload(e.packets_orig, e.bytes_orig) for e in tcp_ends) == [
        100 * i + 1 for i in range(n)
    ]
    assert {tcp_payload(e.packets_reply, e.bytes_reply) for e in tcp_ends} == {3000}

    udp_ends = sorted(
        (e for f, e in destroy.items() if f.proto == socket.IPPROTO_UDP),
        key=lambda e: e.bytes_orig or 0,
    )
    assert {e.flow.sport for e in udp_ends} == udp
    assert [(e.packets_orig, e.bytes_orig) for e in udp_ends] == [
        (1, 28 + 50 + i) for i in range(m)
    ]
    assert [(e.packets_reply, e.bytes_reply) for e in udp_ends] == [
        (1, 28 + 50 + i) for i in range(m)
    ]
    assert {e.mark for e in udp_ends} == {UDP_MARK}
    assert {e.flow.dport for e in udp_ends} == {UDP_PORT}


def test_destroys_that_arrive_together_come_as_one_batch_of_columns(net: Net) -> None:
    """A flush of N UDP flows: their DESTROYs come in batches (``batches()``), decoded as
    columns from the kernel's own messages, with the rule's mark and the counters (one
    20-byte datagram each way: 48 IP bytes)."""
    n = 24
    stop = threading.Event()
    udp_echo(net.server, "0.0.0.0", BATCH_PORT, stop)
    reader = ConntrackReader(net.host, include_new=False)
    items: list[ConntrackEvent | ConntrackBatch] = []
    thread = threading.Thread(target=lambda: items.extend(reader.batches()), daemon=True)
    try:
        thread.start()
        ports = {udp_exchange(net.client, SERVER, BATCH_PORT, b"b" * 20) for _ in range(n)}
        sh("ip", "netns", "exec", net.host, "conntrack", "-F")

        def ends() -> list[ConntrackEvent]:
            found = [b for b in list(items) if isinstance(b, ConntrackBatch)]
            return [e for b in found for e in b.events() if e.flow.sport in ports]

        wait_for(lambda: len(ends()) >= n)
    finally:
        stop.set()
        reader.close()
        thread.join(timeout=5)
    batches = [b for b in items if isinstance(b, ConntrackBatch)]
    # Columns, not walked; the first DESTROY may wake the reader on its own (a run of 1).
    assert sum(len(g) for b in batches for g in b.groups) >= n - 2
    assert {(e.mark, e.packets_orig, e.bytes_orig) for e in ends()} == {(UDP_MARK, 1, 48)}


def test_a_long_lived_flow_appears_in_every_snapshot_with_growing_counters(net: Net) -> None:
    """An open connection has no DESTROY; each snapshot shows what it carried so far."""
    with entered(net.server):
        listener = socket.create_server(("0.0.0.0", LONG_PORT))
    with entered(net.client):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, client, reading(net.host, snapshot_interval_s=0.2) as (reader, seen):
        client.connect((SERVER, LONG_PORT))
        server, _ = listener.accept()
        flow = FiveTuple(CLIENT, SERVER, socket.IPPROTO_TCP, client.getsockname()[1], LONG_PORT)

        def snapshot_after(t_ns: int) -> ConntrackEvent | None:
            found = [e for e in seen if e.kind is EventKind.SNAPSHOT and e.flow == flow]
            return found[-1] if found and found[-1].observed_ns > t_ns else None

        latest: list[ConntrackEvent] = []
        with server:
            for round_ in range(1, 4):
                client.sendall(b"x" * 1000)
                assert len(server.recv(1000, socket.MSG_WAITALL)) == 1000
                sent_ns = time.time_ns()
                wait_for(lambda: snapshot_after(sent_ns) is not None)  # noqa: B023
                event = snapshot_after(sent_ns)
                assert event is not None
                assert tcp_payload(event.packets_orig, event.bytes_orig) == 1000 * round_
                latest.append(event)
        assert reader.statistics().snapshots >= 3
    assert {(e.mark, e.start_ns, e.stop_ns) for e in latest} == {
        (TCP_MARK, latest[0].start_ns, None)
    }
    assert latest[0].start_ns is not None
    assert not [e for e in seen if e.flow == flow and e.kind is EventKind.DESTROY]


def test_a_reader_sees_only_its_own_namespace(net: Net) -> None:
    """Flows in ``other`` (loopback UDP) reach its reader and never the host's, and the
    host's forwarded flows never reach the other reader."""
    stop = threading.Event()
    udp_echo(net.other, "127.0.0.1", OTHER_PORT, stop)
    udp_echo(net.server, "0.0.0.0", UDP_PORT, stop)
    try:
        with reading(net.host) as (_, host_seen), reading(net.other) as (_, other_seen):
            loop_port = udp_exchange(net.other, "127.0.0.1", OTHER_PORT, b"o" * 10)
            fwd_port = udp_exchange(net.client, SERVER, UDP_PORT, b"h" * 10)
            wait_for(lambda: any(e.flow.sport == loop_port for e in other_seen))
            wait_for(lambda: any(e.flow.sport == fwd_port for e in host_seen))
            time.sleep(0.2)  # anything misdelivered would have arrived by now
    finally:
        stop.set()
    assert {e.flow.dport for e in other_seen} == {OTHER_PORT}
    assert OTHER_PORT not in {e.flow.dport for e in host_seen}


def test_close_releases_the_socket_and_stops_iteration(net: Net) -> None:
    reader = ConntrackReader(net.host)
    fds = len(os.listdir("/proc/self/fd"))
    reader.close()
    assert len(os.listdir("/proc/self/fd")) == fds - 3  # events, dump, eventfd
    reader.close()
    with pytest.raises(RuntimeError, match="closed"):
        iter(reader).__next__()
