"""Ingest benchmark: IPFIX records per second parsed and stored by tagwall's collector, against
Debian's nfcapd (nfdump) receiving the same replayed stream, in one run.

The stream: ``--packets`` IPFIX messages (RFC 7011) of ``--records`` data records each, in the
layout softflowd exports (IPv4 addresses, ports, protocol, octet and packet delta counts,
flowStart/EndMilliseconds: 45-byte records), the template first and again every 100 messages,
as exporters resend it.  Addresses and counters vary over 10,000 workloads' addresses.

Each receiver in turn listens on a loopback port; a sender process blasts the whole stream at
it as fast as it can (one core; far more records per second than either receiver takes), then
the receiver is given time to drain its socket and store what it read:

* tagwall — the controller's analytics role, ``Analytics``: the ipfix collector (bursts of
  datagrams, numpy columns), enrichment against an estate of 10,000 workloads, a
  ``FlowStore`` in a real DuckDB file; stored = the store's row count once it is closed;
* nfcapd — ``nfcapd -w DIR -p PORT -B 8388608`` (the same 8 MB socket buffer); stored = the
  flows ``nfdump -I`` counts in its files after SIGTERM (nfcapd writes them on exit).

Rate = records stored / seconds the sender took: what a receiver keeps of a stream offered
faster than it can take (``*_loss`` says how much it lost).  Figures: ``ipfix_records_per_s``,
``nfcapd_records_per_s``, their ratio, both losses, the offered rate.

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


def _send(port: int, stream: list[bytes], result: Any) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", port)
    start = time.perf_counter()
    for message in stream:
        sock.sendto(message, target)
    result.value = time.perf_counter() - start
    sock.close()


def blast(port: int, stream: list[bytes]) -> float:
    """Send ``stream`` to ``port`` from another process; the seconds it took."""
    seconds = multiprocessing.Value("d", 0.0)
    sender = multiprocessing.Process(target=_send, args=(port, stream, seconds))
    sender.start()
    sender.join()
    return float(seconds.value)


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


def run_tagwall(stream: list[bytes], config: Config, workdir: Path) -> tuple[int, float]:
    """(records stored, sender seconds) through the controller's analytics role: the ipfix
    collector, enrichment and a DuckDB file."""
    analytics = Analytics(
        workdir / "flows.duckdb", collectors=[CollectorSpec("ipfix", "127.0.0.1", 0)]
    )
    try:
        analytics.start(config)
        seconds = blast(analytics.ports["ipfix"], stream)
        _wait_idle(lambda: analytics.statistics().collectors[0].datagrams)
    finally:
        analytics.close()  # stops the collector, flushes the store
    return analytics.statistics().store.stored_rows, seconds


def _wait_idle(progress: Any, quiet_s: float = 1.0) -> None:
    last, since = -1, time.monotonic()
    while time.monotonic() - since < quiet_s:
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.05)


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


def run_nfcapd(stream: list[bytes], workdir: Path) -> tuple[int, float]:
    """(records stored, sender seconds) through nfcapd into its files."""
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
        seconds = blast(port, stream)
        time.sleep(1.0)  # let it drain its socket buffer
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    info = subprocess.run(
        ["nfdump", "-R", str(flowdir), "-I"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^Flows:\s+(\d+)", info, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"nfdump -I printed no flow count:\n{info}")
    return int(found.group(1)), seconds


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
    rates: dict[str, list[float]] = {"tagwall": [], "nfcapd": []}
    losses: dict[str, list[float]] = {"tagwall": [], "nfcapd": []}
    offered: list[float] = []
    for round_ in range(args.repeats):
        order = ["tagwall", "nfcapd"] if round_ % 2 == 0 else ["nfcapd", "tagwall"]
        for name in order:
            with tempfile.TemporaryDirectory(prefix="tw-ingest-") as tmp:
                if name == "tagwall":
                    stored, seconds = run_tagwall(stream, config, Path(tmp))
                else:
                    stored, seconds = run_nfcapd(stream, Path(tmp))
            rates[name].append(stored / seconds)
            losses[name].append(1 - stored / sent)
            offered.append(sent / seconds)
            say(
                f"round {round_ + 1} {name}: {stored:,} of {sent:,} stored, sent in {seconds:.2f} s"
            )
    tagwall = statistics.median(rates["tagwall"])
    nfcapd = statistics.median(rates["nfcapd"])
    report(
        {
            "records_sent": sent,
            "offered_records_per_s": round(statistics.median(offered)),
            "ipfix_records_per_s": round(tagwall),
            "nfcapd_records_per_s": round(nfcapd),
            "ipfix_to_nfcapd_ratio": round(tagwall / nfcapd, 2),
            "ipfix_loss": round(statistics.median(losses["tagwall"]), 3),
            "nfcapd_loss": round(statistics.median(losses["nfcapd"]), 3),
            "rounds": args.repeats,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
