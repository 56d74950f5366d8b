"""``Receiver`` on real loopback sockets: every datagram comes back whole, grouped by the
exporter that sent it and in the order it sent them; no traffic means an empty burst."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tagwall.analytics._udp import Receiver


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        yield sock


def sender(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    return sock


def receive_all(receiver: Receiver, count: int) -> dict[str, list[bytes]]:
    """exporter → its datagrams, over as many receive calls as it takes to get ``count``."""
    got: dict[str, list[bytes]] = {}
    while sum(map(len, got.values())) < count:
        bursts = receiver.receive()
        assert bursts, "a datagram sent did not arrive"
        for exporter, burst in bursts:
            got.setdefault(exporter, []).extend(burst)
    return got


def test_datagrams_come_back_by_exporter_in_the_order_sent(listening: socket.socket) -> None:
    """Two exporters interleaved, more datagrams than one call takes, sizes 1 to 1,400."""
    receiver = Receiver(listening, count=16, wake_s=1.0)
    a, b = sender("127.0.0.1"), sender("127.0.0.2")
    sent: dict[str, list[bytes]] = {"127.0.0.1": [], "127.0.0.2": []}
    with a, b:
        for i in range(100):
            for sock, exporter in ((a, "127.0.0.1"), (b, "127.0.0.2")):
                message = bytes([i % 256]) * (1 + 14 * i) + exporter.encode()
                sock.sendto(message, listening.getsockname())
                sent[exporter].append(message)
    assert receive_all(receiver, 200) == sent


def test_the_largest_datagram_is_not_truncated(listening: socket.socket) -> None:
    receiver = Receiver(listening, count=4, wake_s=1.0)
    largest = bytes(range(256)) * 255 + bytes(range(227))  # 65,507 bytes: IPv4's limit
    with sender("127.0.0.1") as sock:
        sock.sendto(largest, listening.getsockname())
        sock.sendto(b"x", listening.getsockname())
    assert receive_all(receiver, 2) == {"127.0.0.1": [largest, b"x"]}


def test_ipv6_exporters_are_named_by_their_address() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("::1", 0))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        receiver = Receiver(sock, count=4, wake_s=1.0)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as out:
            out.sendto(b"hello", sock.getsockname()[:2])
        assert receive_all(receiver, 1) == {"::1": [b"hello"]}


def test_no_datagram_within_the_wake_time_is_an_empty_burst(listening: socket.socket) -> None:
    assert Receiver(listening, count=4, wake_s=0.05).receive() == []


def test_a_closed_socket_is_an_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    receiver = Receiver(sock, count=4, wake_s=0.05)
    sock.close()
    with pytest.raises(OSError):
        receiver.receive()
