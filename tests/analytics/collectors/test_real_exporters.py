"""Real exporters' packets decode to the traffic that was sent (root: network namespaces).

softflowd (NetFlow v5, v9, IPFIX) and pmacct's sfprobe (sFlow v5) read traffic captured on a
veth pair between two namespaces; ``logger`` sends RFC 5424 and RFC 3164 lines.  The decoded
flows must equal what the captured frames say: one record per direction of each 5-tuple, the
packet count, and the IP-layer bytes (the exporters count IP lengths, not Ethernet frames).

Why the exporters read a capture file rather than the interface: in this VM's kernel, a
libpcap ring on a veth never wakes the exporter's poll (softflowd's own statistics say
"Packets received by libpcap: 12, Packets processed: 0"), so the test captures the frames
itself with an ``AF_PACKET`` socket and hands both exporters the same pcap file.  The
exporters' flow tracking and export encoding are what runs, as in production.

Times: ``softflowd -r`` starts its SysUpTime clock when it starts, after the capture, so the
capture's packets sit just before its boot and their SysUpTime values wrap below zero; the
decoders' wrap rule (a time after the export precedes a 32-bit wrap) must bring them back to
the capture's own times, which the test checks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tagwall._netns import entered
from tagwall.analytics import FlowBatch
from tagwall.analytics.collectors import (
    IpfixDecoder,
    NetflowDecoder,
    SflowDecoder,
    SyslogDecoder,
)

from .support import five_tuple, rows

_TOOLS = ("ip", "softflowd", "softflowctl", "pmacctd", "logger")
_MISSING = [tool for tool in _TOOLS if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
    pytest.mark.skipif(bool(_MISSING), reason=f"missing tools: {_MISSING}"),
]

A_IP, B_IP = "198.18.0.1", "198.18.0.2"
UDP_FLOWS = [(7001, 9001, 3, 100), (7002, 9002, 5, 1000), (7003, 9003, 1, 1400)]
TCP_PORT, TCP_BYTES = 9100, 20_000
Key = tuple[str, str, int, int, int]  # src, dst, proto, src port, dst port


@dataclass(frozen=True)
class Capture:
    pcap: Path
    flows: dict[Key, tuple[int, int]]  # directional 5-tuple → (packets, IP bytes)
    first_ms: int  # the first and last frame's capture time
    last_ms: int


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def _veth_pair() -> Iterator[tuple[str, str]]:
    """Namespaces ``twfc<hex>a`` and ``…b`` joined by a veth whose ends have the same names;
    IPv6 off and static neighbours, so the only frames on the link are the test's IPv4."""
    base = f"twfc{secrets.token_hex(3)}"
    a, b = f"{base}a", f"{base}b"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for name, address in ((a, A_IP), (b, B_IP)):
            _ip("link", "set", name, "netns", name)
            subprocess.run(
                ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                check=True,
            )
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", name)
            _ip("-n", name, "link", "set", name, "up")
        macs = {n: _mac(n) for n in (a, b)}
        _ip("-n", a, "neigh", "replace", B_IP, "lladdr", macs[b], "dev", a, "nud", "permanent")
        _ip("-n", b, "neigh", "replace", A_IP, "lladdr", macs[a], "dev", b, "nud", "permanent")
        yield a, b
    finally:
        for name in (a, b):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _mac(namespace: str) -> str:
    out = subprocess.run(
        ["ip", "-n", namespace, "-br", "link", "show", namespace],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.split()[2]


def _traffic(a: str, b: str) -> None:
    """UDP datagrams of known sizes and one TCP connection, from ``a`` to ``b``."""
    with entered(b):
        servers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in UDP_FLOWS]
        listener = socket.create_server((B_IP, TCP_PORT))
    with entered(a):
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in UDP_FLOWS]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for server, client, (sport, dport, count, size) in zip(
            servers, clients, UDP_FLOWS, strict=True
        ):
            server.bind((B_IP, dport))
            client.bind((A_IP, sport))
            for _ in range(count):
                client.sendto(b"u" * size, (B_IP, dport))
        tcp.connect((B_IP, TCP_PORT))
        peer, _ = listener.accept()
        tcp.sendall(b"t" * TCP_BYTES)
        tcp.shutdown(socket.SHUT_WR)
        received = 0
        while chunk := peer.recv(65536):
            received += len(chunk)
        assert received == TCP_BYTES
        peer.close()
    finally:
        for s in [*servers, *clients, tcp, listener]:
            s.close()


def _flows(frames: list[bytes]) -> dict[Key, tuple[int, int]]:
    """Directional 5-tuples of IPv4 frames with their packets and IP bytes."""
    flows: dict[Key, list[int]] = collections.defaultdict(lambda: [0, 0])
    for frame in frames:
        assert frame[12:14] == b"\x08\x00", "only IPv4 on the link"
        ip = frame[14:]
        length, proto = struct.unpack_from(">H", ip, 2)[0], ip[9]
        sport, dport = struct.unpack_from(">HH", ip, (ip[0] & 0x0F) * 4)
        key = (socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), proto, sport, dport)
        flows[key][0] += 1
        flows[key][1] += length
    return {key: (p, b) for key, (p, b) in flows.items()}


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    """The test traffic, captured on ``a``'s veth end into a pcap file."""
    path = tmp_path_factory.mktemp("twfc") / "traffic.pcap"
    with _veth_pair() as (a, b):
        with entered(a):
            sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        sniffer.bind((a, 0))
        sniffer.settimeout(0.5)
        frames: list[tuple[float, bytes]] = []
        done = threading.Event()

        def sniff() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    frames.append((time.time(), sniffer.recv(65536)))

        thread = threading.Thread(target=sniff)
        thread.start()
        try:
            _traffic(a, b)
            time.sleep(0.3)
        finally:
            done.set()
            thread.join()
            sniffer.close()
    with path.open("wb") as pcap:
        pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for at, frame in frames:
            pcap.write(struct.pack("<IIII", int(at), int(at % 1 * 1e6), len(frame), len(frame)))
            pcap.write(frame)
    times = [int(at * 1000) for at, _ in frames]
    yield Capture(path, _flows([frame for _, frame in frames]), min(times), max(times))


def _receive(
    command: list[str], collector: socket.socket, controls: Sequence[list[str]] = ()
) -> list[bytes]:
    """Run an exporter; once it is up (1 s), run the ``controls`` commands 0.5 s apart (they
    make it flush); collect what it sends until 2 s pass without a datagram."""
    packets: list[bytes] = []
    collector.settimeout(2.0)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        for control in controls:
            subprocess.run(control, check=True, capture_output=True, timeout=10)
            time.sleep(0.5)
        with contextlib.suppress(TimeoutError):
            while True:
                packets.append(collector.recv(65535))
    finally:
        process.kill()
        process.wait()
    return packets


def _decoded(batches: tuple[FlowBatch, ...]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    for batch in batches:
        for r in rows(batch):
            key = five_tuple(r)
            assert key not in out, f"two records for {key}"
            out[key] = (r["packets"], r["bytes"])
    return out


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_exports_decode_to_the_captured_flows(
    capture: Capture, collector: socket.socket, version: str, tmp_path: Path
) -> None:
    port = collector.getsockname()[1]
    control = str(tmp_path / "ctl")
    softflowd = f"softflowd -d -r {capture.pcap} -n 127.0.0.1:{port} -v {version}".split()
    packets = _receive(
        [*softflowd, "-c", control, "-p", str(tmp_path / "pid")],
        collector,
        # softflowd -r reads the file once its control socket wakes it; shutdown flushes.
        controls=[["softflowctl", "-c", control, c] for c in ("statistics", "shutdown")],
    )
    decoder = IpfixDecoder() if version == "10" else NetflowDecoder()
    decoded = decoder.decode_many(packets, "127.0.0.1", int(time.time() * 1000))
    assert _decoded(decoded.batches) == capture.flows
    assert len(capture.flows) == len(UDP_FLOWS) + 2  # and TCP both ways
    sent = {sport: (n, n * (20 + 8 + size)) for sport, _, n, size in UDP_FLOWS}  # IP + UDP
    udp = {key[3]: counts for key, counts in capture.flows.items() if key[2] == 17}
    assert udp == sent
    slack_ms = 1_000 if version == "9" else 1  # v9's header time is in whole seconds
    for batch in decoded.batches:
        assert (batch.columns["start_ms"] >= capture.first_ms - slack_ms).all()
        assert (batch.columns["end_ms"] <= capture.last_ms + slack_ms).all()
    stats = decoder.statistics()
    assert (stats.errors, stats.dropped) == ({}, 0)


def test_pmacct_sfprobe_samples_decode_to_the_captured_packets(
    capture: Capture, collector: socket.socket, tmp_path: Path
) -> None:
    """Sampling rate 1: every packet is one sample, so per 5-tuple the sample count is the
    packet count and the bytes sum the frame lengths: the IP length + 14 (Ethernet header)
    + 4 (the FCS, which sFlow's frame length counts)."""
    port = collector.getsockname()[1]
    config = tmp_path / "pmacctd.conf"
    config.write_text(
        f"daemonize: false\npcap_savefile: {capture.pcap}\nplugins: sfprobe\n"
        f"sfprobe_receiver: 127.0.0.1:{port}\nsampling_rate: 1\n"
        f"pidfile: {tmp_path / 'pid'}\n"
    )
    packets = _receive(["pmacctd", "-f", str(config)], collector)
    decoded = SflowDecoder().decode_many(packets, "127.0.0.1", int(time.time() * 1000))
    got: dict[Key, list[int]] = collections.defaultdict(lambda: [0, 0])
    for batch in decoded.batches:
        for r in rows(batch):
            got[five_tuple(r)][0] += r["packets"]
            got[five_tuple(r)][1] += r["bytes"]
    assert set(got) == set(capture.flows)
    for key, (count, size) in capture.flows.items():
        assert got[key][0] == count
        assert got[key] == [count, size + 18 * count], key


def test_logger_lines_decode_to_records_and_messages(collector: socket.socket) -> None:
    port = collector.getsockname()[1]
    netfilter = (
        "tw-drop IN=eth0 OUT= SRC=10.9.0.1 DST=10.9.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 "
        "ID=1 DF PROTO=UDP SPT=5000 DPT=53 LEN=64"
    )
    sent = [
        ("--rfc5424", netfilter),
        ("--rfc3164", netfilter.replace("10.9.0.1", "10.9.0.3")),
        ("--rfc5424", "free text one"),
        ("--rfc3164", "free text two"),
    ]
    for framing, line in sent:
        subprocess.run(
            [
                "logger",
                "-n",
                "127.0.0.1",
                "-P",
                str(port),
                "-d",
                framing,
                "-t",
                "twfc",
                "-p",
                "local0.warning",
                line,
            ],
            check=True,
        )
    collector.settimeout(2)
    packets = [collector.recv(65535) for _ in sent]
    decoded = SyslogDecoder().decode_many(packets, "127.0.0.1", int(time.time() * 1000))
    (batch,) = decoded.batches
    assert sorted(
        (r["src"], r["dst"], r["proto"], r["src_port"], r["dst_port"], r["bytes"])
        for r in rows(batch)
    ) == [
        ("10.9.0.1", "10.9.0.2", 17, 5000, 53, 84),
        ("10.9.0.3", "10.9.0.2", 17, 5000, 53, 84),
    ]
    now_ms = time.time() * 1000
    assert all(abs(now_ms - int(t)) < 60_000 for t in batch.columns["end_ms"])
    assert sorted((m.text, m.app, m.facility, m.severity) for m in decoded.messages) == [
        ("free text one", "twfc", 16, 4),
        ("free text two", "twfc", 16, 4),
    ]
