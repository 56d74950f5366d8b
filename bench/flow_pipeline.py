"""What the agent's flow recorder spends per connection, without a kernel: synthetic
ctnetlink DESTROY messages (TCP/IPv4 laid out as this kernel sends them, every value
different) through the recorder's pipeline, in µs per message.

* ``one-by-one``: what the recorder did before batches: ``decode`` each message,
  ``FlowAssembler.conntrack``, ``report_payload`` (the wire JSON), ``Spool.append`` of the
  payloads (one fsync per ``--spool-every`` reports, as the spooler's flush does);
* ``batched, N``: the reader's runs of N DESTROY messages (what it drains per wake-up: a
  busy host fills runs of hundreds): ``decode_destroys`` → ``FlowAssembler.conntrack_batch``
  → the same spool appends.

Stages are timed on their own too.  Usage: ``python bench/flow_pipeline.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tagwall.agent._ctdecode import (
    ConntrackBatch,
    ConntrackEvent,
    EventKind,
    decode,
    decode_destroys,
)
from tagwall.agent._flows import FlowAssembler, report_payload
from tagwall.agent._spool import Spool
from tagwall.control import EndDecision
from tagwall.model import TrafficDirection

DECISION = EndDecision("allow", "application", "shop/apps", "shop/web", "to-db")


def decide(direction: TrafficDirection, decision: int) -> EndDecision | None:
    return DECISION


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def _nest(kind: int, *children: bytes) -> bytes:
    return _attr(kind | 0x8000, b"".join(children))


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ports = (
        _attr(1, b"\x06"),
        _attr(2, sport.to_bytes(2, "big")),
        _attr(3, dport.to_bytes(2, "big")),
    )
    return _nest(kind, _nest(1, _attr(1, src), _attr(2, dst)), _nest(2, *ports))


def destroy(i: int) -> bytes:
    """Connection ``i``: 10.1.x.y:port → 10.2.0.1:80, its own id, counters and times."""
    client, server = bytes([10, 1, i >> 8 & 255, i & 255]), bytes([10, 2, 0, 1])
    sport = 10000 + i % 50000
    u64 = [(n + i).to_bytes(8, "big") for n in (4, 300, 3, 2000)]
    body = b"".join(
        (
            _tuple(1, client, server, sport, 80),
            _tuple(2, server, client, 80, sport),
            _attr(3, (0x18E).to_bytes(4, "big")),  # CTA_STATUS
            _attr(8, (0x0007_0003).to_bytes(4, "big")),  # CTA_MARK
            _nest(9, _attr(1, u64[0]), _attr(2, u64[1])),
            _nest(10, _attr(1, u64[2]), _attr(2, u64[3])),
            _nest(
                20,
                _attr(1, (10**18 + i).to_bytes(8, "big")),
                _attr(2, (10**18 + 10**6 + i).to_bytes(8, "big")),
            ),
            _attr(12, (1 + i).to_bytes(4, "big")),  # CTA_ID
            _attr(11, (1).to_bytes(4, "big")),  # CTA_USE
            _nest(
                4,
                _nest(
                    1,
                    _attr(1, b"\x07"),
                    _attr(2, b"\x07"),
                    _attr(3, b"\x07"),
                    _attr(4, bytes(2)),
                    _attr(5, bytes(2)),
                ),
            ),
        )
    )
    return struct.pack("=IHHII", 20 + len(body), 1 << 8 | 2, 0, 0, 0) + bytes([2, 0, 0, 0]) + body


def best_of(repeats: int, n: int, run: Callable[[], None]) -> float:
    """Fastest of ``repeats`` runs, µs per message."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--spool-every", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    msgs = [destroy(i) for i in range(args.messages)]
    directory = tempfile.TemporaryDirectory(prefix="tw-bench-spool-")
    spool = Spool(Path(directory.name), max_bytes=1 << 40)
    observed = 2 * 10**18
    out: dict[str, float] = {}

    def spool_in(payloads: list[bytes]) -> None:
        for at in range(0, len(payloads), args.spool_every):
            spool.append(payloads[at : at + args.spool_every])

    def one_by_one() -> None:
        flows = FlowAssembler(decide)
        payloads = []
        for data in msgs:
            event = decode(EventKind.DESTROY, data, observed)
            assert event is not None
            payloads += map(report_payload, flows.conntrack(event))
        spool_in(payloads)

    n = len(msgs)
    out["one-by-one"] = best_of(args.repeats, n, one_by_one)
    events = [decode(EventKind.DESTROY, m, observed) for m in msgs]
    out["one-by-one: decode"] = best_of(
        args.repeats, n, lambda: [decode(EventKind.DESTROY, m, observed) for m in msgs]
    )

    def assemble(events: list[ConntrackEvent | None] = events) -> list[bytes]:
        flows = FlowAssembler(decide)
        return [report_payload(r) for e in events if e for r in flows.conntrack(e)]

    out["one-by-one: assemble + JSON"] = best_of(args.repeats, n, assemble)
    payloads = assemble()
    out["spool append"] = best_of(args.repeats, n, lambda: spool_in(payloads))
    for size in (8, 16, 64, 1024):
        runs = [msgs[at : at + size] for at in range(0, n, size)]

        def batched(runs: list[list[bytes]] = runs) -> None:
            flows = FlowAssembler(decide)
            payloads: list[bytes] = []
            for run in runs:
                payloads += flows.conntrack_batch(decode_destroys(run, observed))
            spool_in(payloads)

        out[f"batched, {size}"] = best_of(args.repeats, n, batched)
        batches = [decode_destroys(run, observed) for run in runs]
        out[f"batched, {size}: decode"] = best_of(
            args.repeats, n, lambda runs=runs: [decode_destroys(r, observed) for r in runs]
        )

        def assemble_batches(batches: list[ConntrackBatch] = batches) -> None:
            flows = FlowAssembler(decide)
            for batch in batches:
                flows.conntrack_batch(batch)

        out[f"batched, {size}: assemble + JSON"] = best_of(args.repeats, n, assemble_batches)
    spool.close()
    directory.cleanup()
    if args.json:
        json.dump({k: round(v, 2) for k, v in out.items()}, sys.stdout, indent=2)
        print()
    else:
        for name, us in out.items():
            print(f"{name:34} {us:7.2f} µs/connection")


if __name__ == "__main__":
    main()
