"""Ingest benchmark: IPFIX records per second parsed and stored by tagwall's collector, against
Debian's nfcapd (nfdump) receiving the same replayed stream, in one run.

The stream: ``--packets`` IPFIX messages (RFC 7011) of ``--records`` data records each, in the
layout softflowd exports (IPv4 addresses, ports, protocol, octet and packet delta counts,
flowStart/EndMilliseconds: 45-byte records), the template first and again every 100 messages,
as exporters resend it.  Addresses and counters vary over 10,000 workloads' addresses.

Each receiver in turn listens on a loopback port.  The first message (with the template) is
sent alone and the receiver given time to take it, as from an exporter that was already
running; then a sender process blasts the rest as fast as it can (one core; more records per
second than either receiver takes).  Both are measured the same way:

* records stored: tagwall, the controller's analytics role (``Analytics``: the ipfix
  collector, enrichment against an estate of 10,000 workloads, a ``FlowStore``: a real
  DuckDB file and its Parquet segment files), counts the rows in its store once closed;
  nfcapd (``nfcapd -w DIR -p PORT -B 8388608``) counts the flows ``nfdump -I`` finds in its
  files once it has exited;
* seconds: from the first datagram of the blast until the receiver has stored what it took:
  tagwall, once its socket and backlog are empty, its decoder has seen every datagram read
  and ``FlowStore.flush`` returned (segment files fsynced, their registration committed; the
  daily rollup follows in the background at low priority, as merges do); nfcapd, the last
  moment its threads used CPU (``/proc/PID/task/*/schedstat``, sampled every 5 ms) plus the
  time it takes to exit on SIGTERM (its last file is written then).

Rate = records stored / those seconds: parsed *and* stored, so a receiver that buffers what it
cannot store yet gains nothing by it.  ``*_loss`` is the share of the stream it never stored
(lost at the socket or its backlog).  Figures: ``ipfix_records_per_s``,
``nfcapd_records_per_s``, their ratio, both losses, both receivers' seconds and the rate each
was offered (the blast shares the machine's cores with the receiver).

Usage: python bench/ingest.py [--json] [--packets N] [--records N] [--repeats N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _estate import address, doc, free_port, report, say, workload_tags

from tagwall.analytics import Analytics, CollectorSpec
from tagwall.model import Config, Document, load

TEMPLATE_ID = 256
# (information element, length): softflowd's IPv4 layout.
FIELDS = [(8, 4), (12, 4), (1, 8), (2, 8), (152, 8), (153, 8), (7, 2), (11, 2), (4, 1)]
RECORD = struct.Struct("!IIQQQQHHB")
WORKLOADS = 10_000


def _ipv4(i: int) -> int:
    a, b, c, d = map(int, address(i).split("."))
    return a << 24 | b << 16 | c << 8 | d


def ipfix_stream(packets: int, records: int, seed: int = 7) -> list[bytes]:
    """The messages of the replayed stream (the template in message 0 and every 100th)."""
    template = struct.pack("!HH", TEMPLATE_ID, len(FIELDS)) + b"".join(
        struct.pack("!HH", ie, length) for ie, length in FIELDS
    )
    template_set = struct.pack("!HH", 2, 4 + len(template)) + template
    now_ms = int(time.time() * 1000)
    out = []
    for n in range(packets):
        body = bytearray()
        for r in range(records):
            i = (n * records + r) * 7919 + seed
            body += RECORD.pack(
                _ipv4(i % WORKLOADS),
                _ipv4((i // 3) % WORKLOADS),
                64 + i % 1400,
                1 + i % 9,
                now_ms - 5000,
                now_ms,
                1024 + i % 60000,
                (80, 443, 5432, 53)[i % 4],
                (6, 6, 6, 17)[i % 4],
            )
        data_set = struct.pack("!HH", TEMPLATE_ID, 4 + len(body)) + bytes(body)
        sets = (template_set if n % 100 == 0 else b"") + data_set
        header = struct.pack("!HHIII", 10, 16 + len(sets), now_ms // 1000, n, 1)
        out.append(header + sets)
    return out


def _send(port: int, stream: list[bytes], started: Any, ended: Any) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", port)
    started.value = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
    for message in stream:
        sock.sendto(message, target)
    ended.value = time.monotonic()
    sock.close()


@dataclass(frozen=True)
class Blast:
    started: float  # time.monotonic() of the first datagram
    ended: float  # of the last

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def blast(port: int, stream: list[bytes]) -> Blast:
    """Send ``stream`` to ``port`` from another process."""
    started, ended = multiprocessing.Value("d", 0.0), multiprocessing.Value("d", 0.0)
    sender = multiprocessing.Process(target=_send, args=(port, stream, started, ended))
    sender.start()
    sender.join()
    return Blast(float(started.value), float(ended.value))


def send_one(port: int, message: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(message, ("127.0.0.1", port))


def rx_queue_bytes(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port`` (IPv4)."""
    suffix = f":{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(suffix):
            return int(fields[4].split(":")[1], 16)
    raise RuntimeError(f"no UDP socket bound to port {port}")


def estate() -> Config:
    """10,000 workloads holding the stream's addresses, tags as in the other benchmarks."""
    rng = random.Random(7)
    docs = [doc("Project", "shop", {})] + [
        doc(
            "Workload",
            f"w{i}",
            {"interfaces": [{"name": "eth0", "ips": [address(i)]}], "tags": workload_tags(rng)},
            "shop",
        )
        for i in range(WORKLOADS)
    ]
    return load([Document(d, "bench", i) for i, d in enumerate(docs)])


@dataclass(frozen=True)
class Run:
    stored: int  # records
    sent: Blast
    seconds: float  # from the blast's first datagram until stored


def run_tagwall(stream: list[bytes], config: Config, workdir: Path) -> Run:
    """The stream through the controller's analytics role: the ipfix collector, enrichment
    and a flow store (DuckDB file and segment files)."""
    analytics = Analytics(
        workdir / "flows.duckdb", collectors=[CollectorSpec("ipfix", "127.0.0.1", 0)]
    )
    try:
        analytics.start(config)
        port = analytics.ports["ipfix"]

        def decoded() -> tuple[int, ...] | None:
            """The collector's counters once all it read is decoded and its socket empty."""
            c = analytics.statistics().collectors[0]
            done = c.backlog == 0 and c.decoder.packets == c.datagrams
            return (c.datagrams,) if done and rx_queue_bytes(port) == 0 else None

        send_one(port, stream[0])
        _wait(lambda: analytics.statistics().collectors[0].decoder.packets == 1)
        analytics.store.flush()  # the endpoints table and the first message's records
        sent = blast(port, stream[1:])
        _wait_steady(decoded)
        analytics.store.flush()
        seconds = time.monotonic() - sent.started
    finally:
        analytics.close()  # stops the collector, flushes the store
    return Run(analytics.statistics().store.stored_rows, sent, seconds)


def _wait(done: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("the receiver did not take the first message")
        time.sleep(0.005)


def _wait_steady(state: Callable[[], tuple[int, ...] | None], poll_s: float = 0.01) -> None:
    """Until ``state`` is the same non-None value twice in a row, ``poll_s`` apart."""
    last = None
    while True:
        now = state()
        if now is not None and now == last:
            return
        last = now
        time.sleep(poll_s)


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of process ``pid`` so far, nanoseconds."""
    return sum(
        int(stat.read_text().split()[0]) for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")
    )


def _last_busy(pid: int, port: int, quiet_s: float = 0.5, poll_s: float = 0.005) -> float:
    """The last time.monotonic() process ``pid`` used CPU before ``quiet_s`` without any (and
    an empty socket on ``port``)."""
    used, busy = _cpu_ns(pid), time.monotonic()
    while time.monotonic() - busy < quiet_s or rx_queue_bytes(port):
        time.sleep(poll_s)
        now = _cpu_ns(pid)
        if now != used:
            used, busy = now, time.monotonic()
    return busy


def _wait_bound(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Until something (nfcapd) holds UDP ``port`` on loopback."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nfcapd did not bind udp/{port} (exit status {proc.poll()})")


def run_nfcapd(stream: list[bytes], workdir: Path) -> Run:
    """The stream through nfcapd into its files."""
    flowdir = workdir / "nfcapd"
    flowdir.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            "nfcapd",
            "-w",
            str(flowdir),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "-B",
            "8388608",
            "-t",
            "3600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_bound(port, proc)
        send_one(port, stream[0])
        _last_busy(proc.pid, port, quiet_s=0.2)
        sent = blast(port, stream[1:])
        busy = _last_busy(proc.pid, port)
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    seconds = busy - sent.started + time.monotonic() - stopping
    info = subprocess.run(
        ["nfdump", "-R", str(flowdir), "-I"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^Flows:\s+(\d+)", info, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"nfdump -I printed no flow count:\n{info}")
    return Run(int(found.group(1)), sent, seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--records", type=int, default=30, help="records per message")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if shutil.which("nfcapd") is None or shutil.which("nfdump") is None:
        raise SystemExit("nfcapd and nfdump are needed (Debian package nfdump)")
    say(f"building {args.packets:,} IPFIX messages of {args.records} records …")
    stream = ipfix_stream(args.packets, args.records)
    sent = args.packets * args.records
    say("building the estate …")
    config = estate()
    runs: dict[str, list[Run]] = {"tagwall": [], "nfcapd": []}
    for round_ in range(args.repeats):
        order = ["tagwall", "nfcapd"] if round_ % 2 == 0 else ["nfcapd", "tagwall"]
        for name in order:
            with tempfile.TemporaryDirectory(prefix="tw-ingest-") as tmp:
                if name == "tagwall":
                    run = run_tagwall(stream, config, Path(tmp))
                else:
                    run = run_nfcapd(stream, Path(tmp))
            runs[name].append(run)
            say(
                f"round {round_ + 1} {name}: {run.stored:,} of {sent:,} stored in "
                f"{run.seconds:.2f} s (sent in {run.sent.seconds:.2f} s)"
            )

    def median(name: str, figure: Callable[[Run], float]) -> float:
        return statistics.median(figure(run) for run in runs[name])

    def rate(run: Run) -> float:
        return run.stored / run.seconds

    def loss(run: Run) -> float:
        return 1 - run.stored / sent

    def offered(run: Run) -> float:
        return (len(stream) - 1) * args.records / run.sent.seconds

    tagwall, nfcapd = median("tagwall", rate), median("nfcapd", rate)
    report(
        {
            "records_sent": sent,
            "ipfix_records_per_s": round(tagwall),
            "nfcapd_records_per_s": round(nfcapd),
            "ipfix_to_nfcapd_ratio": round(tagwall / nfcapd, 2),
            "ipfix_loss": round(median("tagwall", loss), 3),
            "nfcapd_loss": round(median("nfcapd", loss), 3),
            "ipfix_seconds": round(median("tagwall", lambda r: r.seconds), 2),
            "nfcapd_seconds": round(median("nfcapd", lambda r: r.seconds), 2),
            "ipfix_offered_records_per_s": round(median("tagwall", offered)),
            "nfcapd_offered_records_per_s": round(median("nfcapd", offered)),
            "rounds": args.repeats,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
