"""``Collectors`` on real loopback ports: what exporters send reaches the sink decoded; malformed
datagrams are counted and logged once per exporter; a failing sink does not stop collection;
a full backlog makes the reader wait; ``stop`` returns after every datagram read was decoded
and sunk."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tagwall.analytics import Collectors, CollectorSpec, parse_collector
from tagwall.analytics.collectors import Decoded

# softflowd's IPv4 layout: addresses, octets, packets, start/end ms, ports, protocol.
FIELDS = [(8, 4), (12, 4), (1, 8), (2, 8), (152, 8), (153, 8), (7, 2), (11, 2), (4, 1)]
RECORD = struct.Struct("!IIQQQQHHB")
NOW_MS = 1_790_000_000_000


def ipfix(records: int, *, template: bool = False, first: int = 0) -> bytes:
    """An IPFIX message of ``records`` flows 10.0.0.1 → 10.0.0.2 with source ports from
    ``first`` (and the template before them)."""
    sets = b""
    if template:
        body = struct.pack("!HH", 256, len(FIELDS))
        body += b"".join(struct.pack("!HH", *field) for field in FIELDS)
        sets += struct.pack("!HH", 2, 4 + len(body)) + body
    data = b"".join(
        RECORD.pack(0x0A000001, 0x0A000002, 100, 1, NOW_MS, NOW_MS, first + i, 443, 6)
        for i in range(records)
    )
    sets += struct.pack("!HH", 256, 4 + len(data)) + data
    return struct.pack("!HHIII", 10, 16 + len(sets), NOW_MS // 1000, 0, 1) + sets


class Sink:
    """Records the source ports of every flow it is given; ``gate`` holds it (a slow
    store), ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, decoded: Decoded) -> None:
        self.gate.wait()
        if self.fail:
            raise RuntimeError("the store is gone")
        for batch in decoded.batches:
            self.ports += batch.columns["src_port"].tolist()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def started(sink: Sink) -> Iterator[Callable[..., Collectors]]:
    """Starts ``Collectors`` (ipfix on a free loopback port) with the given options."""
    running: list[Collectors] = []

    def start(**options: int) -> Collectors:
        collectors = Collectors([CollectorSpec("ipfix", "127.0.0.1", 0)], sink, **options)
        collectors.start()
        running.append(collectors)
        return collectors

    yield start
    for collectors in running:
        collectors.stop()


def send(collectors: Collectors, *messages: bytes, source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for message in messages:
            sock.sendto(message, ("127.0.0.1", collectors.ports["ipfix"]))


def wait_until(done: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_flows_reach_the_sink_in_the_order_sent(
    started: Callable[..., Collectors], sink: Sink
) -> None:
    collectors = started()
    send(collectors, ipfix(3, template=True), *(ipfix(30, first=3 + 30 * i) for i in range(50)))
    wait_until(lambda: len(sink.ports) == 1503)
    assert sink.ports == list(range(1503))
    (stats,) = collectors.statistics()
    assert (stats.protocol, stats.datagrams, stats.backlog) == ("ipfix", 51, 0)
    assert stats.decoder.records == 1503


def test_stop_returns_once_everything_read_is_decoded_and_sunk(
    started: Callable[..., Collectors], sink: Sink
) -> None:
    """Datagrams read while the sink is slow wait in the backlog; stop takes them all."""
    collectors = started()
    sink.gate.clear()
    send(collectors, ipfix(1, template=True), *(ipfix(10, first=1 + 10 * i) for i in range(200)))
    wait_until(lambda: collectors.statistics()[0].datagrams == 201)
    assert collectors.statistics()[0].backlog > 0
    threading.Timer(0.2, sink.gate.set).start()
    collectors.stop()
    assert sink.ports == list(range(2001))


def test_a_full_backlog_makes_the_reader_wait_and_loses_nothing_it_read(
    started: Callable[..., Collectors], sink: Sink
) -> None:
    """With room for one burst, the reader holds back while the sink is stuck: the
    datagrams stay in the socket, and all of them arrive once it moves."""
    collectors = started(backlog_bytes=1)
    sink.gate.clear()
    send(collectors, ipfix(1, template=True))
    wait_until(lambda: collectors.statistics()[0].datagrams == 1)
    send(collectors, *(ipfix(1, first=1 + i) for i in range(20)))
    time.sleep(0.2)
    stats = collectors.statistics()[0]
    assert stats.datagrams < 21 and stats.backlog == stats.datagrams
    sink.gate.set()
    wait_until(lambda: len(sink.ports) == 21)
    assert sink.ports == list(range(21))


def test_malformed_datagrams_are_counted_and_logged_once_per_exporter(
    started: Callable[..., Collectors], sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    collectors = started()
    with caplog.at_level(logging.WARNING, logger="tagwall.analytics"):
        send(collectors, b"\x00\x0a garbage", ipfix(2, template=True), b"")
        send(collectors, b"\x00\x09" + bytes(30), source="127.0.0.2")
        wait_until(lambda: collectors.statistics()[0].decoder.packets == 4)
        send(collectors, b"\x00\x0a again")
        wait_until(lambda: collectors.statistics()[0].decoder.packets == 5)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "from 127.0.0.1" in warnings[0] and "ipfix.header" in warnings[0]
    assert "from 127.0.0.2" in warnings[1] and "ipfix.header.version" in warnings[1]
    assert sum(collectors.statistics()[0].decoder.errors.values()) == 4
    assert sink.ports == [0, 1]


def test_a_sink_that_raises_is_counted_and_collection_goes_on(
    started: Callable[..., Collectors], sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    collectors = started()
    sink.fail = True
    with caplog.at_level(logging.ERROR, logger="tagwall.analytics"):
        send(collectors, ipfix(1, template=True))
        wait_until(lambda: collectors.statistics()[0].sink_errors == 1)
        wait_until(lambda: "refused a burst" in caplog.text)  # logged just after the count
    sink.fail = False
    send(collectors, ipfix(1, first=7))
    wait_until(lambda: sink.ports == [7])


def test_a_port_in_use_fails_start_naming_the_collector() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        collectors = Collectors([CollectorSpec("ipfix", "127.0.0.1", port)], Sink())
        with pytest.raises(OSError, match=f"collector ipfix on 127.0.0.1:{port}"):
            collectors.start()


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("ipfix", CollectorSpec("ipfix", "0.0.0.0", 4739)),
        ("netflow:12055", CollectorSpec("netflow", "0.0.0.0", 12055)),
        ("syslog:127.0.0.1:1514", CollectorSpec("syslog", "127.0.0.1", 1514)),
    ],
)
def test_parse_collector(text: str, spec: CollectorSpec) -> None:
    assert parse_collector(text) == spec


@pytest.mark.parametrize(("text", "says"), [("nfv10", "is not one of"), ("ipfix:99999", "port")])
def test_parse_collector_names_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_collector(text)
