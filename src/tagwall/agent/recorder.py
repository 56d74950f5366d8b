"""The agent's flow recorder: conntrack and NFLOG of the host's namespace in, flow reports to
the controller's analytics out, through a spool on disk.

Threads (each loop is a daemon thread; ``stop`` ends them all):

* ``conntrack`` and ``nflog`` read the kernel (``ConntrackReader``, ``NflogReader`` on group
  ``LOG_GROUP``) and feed the ``FlowAssembler`` under ``_lock``; DESTROY events come in
  batches (``ConntrackReader.batches``), which the assembler turns into spool payloads;
* ``spooler`` every ``flush_interval_s`` appends the reports assembled since (one fsync per
  batch) and ends the denied bursts that are over;
* ``shipper`` sends the spool's oldest records to the first controller that answers
  (``POST REPORTS_PATH``), and acks them in the spool only once the controller says they are
  stored; on any failure it tries the next controller after a backoff.

What survives what: a report in the spool survives controller outages and agent restarts (up
to ``spool_bytes``; past it reports are dropped and counted, ``statistics().spool.dropped``).
What was reported of each open flow is written to ``tracked.json`` on ``stop`` so a restarted
agent goes on from there instead of reporting those packets twice.  A crash loses the reports
of the last ``flush_interval_s`` (assembled, not yet spooled) and may report the open flows'
earlier packets again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from ..compiler import Program
from ..control import REPORTS_PATH, EndDecision
from ..datapath import LOG_GROUP, CounterKey
from ..model import TrafficDirection
from ._conntrack import ConntrackBatch, ConntrackEvent, ConntrackReader
from ._flows import FlowAssembler, end_decision, report_payload
from ._nflog import NflogReader, NflogRecord
from ._spool import Spool, SpoolRecord, SpoolStatistics, fsync_dir

__all__ = ["FlowRecorder", "RecorderStatistics"]

log = logging.getLogger("tagwall.agent.flows")

T = TypeVar("T")


class Decisions(Protocol):
    """What ``NftDatapath`` offers: the program in force, what its decision ids name, and
    which service workloads a ``ct label`` steers through."""

    def program(self) -> Program | None: ...

    def decisions(self) -> dict[tuple[TrafficDirection, int], CounterKey]: ...

    def carriers(self, labels: int) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    open_flows: int  # allowed flows being followed
    reports: int  # reports assembled since start
    shipped: int  # reports the controller confirmed since start
    spool: SpoolStatistics  # waiting on disk, and dropped because the spool was full
    lost_overruns: int  # kernel events lost to a full receive buffer (conntrack + NFLOG)
    ends_lost: int  # flows reported from their last snapshot: their DESTROY was lost
    unknown_decisions: int  # ids the program in force did not name
    controller: str | None  # the controller that took the last batch


class FlowRecorder:
    def __init__(
        self,
        host: str,
        controllers: Sequence[str],
        datapath: Decisions,
        directory: Path,
        *,
        netns: str | None = None,
        snapshot_interval_s: float = 10.0,
        active_timeout_s: float = 60.0,
        flush_interval_s: float = 0.5,
        spool_bytes: int = 256 * 1024 * 1024,
        batch: int = 5000,
        retry_s: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        if not controllers:
            raise ValueError("a flow recorder needs at least one controller URL")
        self.host = host
        self.directory = directory
        self._urls = [u.rstrip("/") + REPORTS_PATH for u in controllers]
        self._decisions = _DecisionCache(datapath)
        self._assembler = FlowAssembler(
            self._decisions.lookup,
            datapath.carriers,
            active_timeout_s=active_timeout_s,
            gone_after_s=3 * snapshot_interval_s,
        )
        self._tracked_file = directory / "tracked.json"
        self._restore()
        self._spool = Spool(directory / "spool", max_bytes=spool_bytes)
        # DESTROY events and snapshots only: a DESTROY carries all a NEW does (mark, label,
        # start time) and the counters, snapshots find the open flows, and NEW events would
        # double what the agent decodes (bench/datapath.py, variant tagwall-flows).
        self._conntrack = ConntrackReader(
            netns, snapshot_interval_s=snapshot_interval_s, include_new=False
        )
        self._nflog = NflogReader(LOG_GROUP, netns)
        self._flush_s, self._batch, self._retry_s = flush_interval_s, batch, retry_s
        self._lock = threading.Lock()
        # Reports assembled and not yet spooled, as their spool payloads (``report_payload``):
        # DESTROY batches come out of the assembler in that form, without a ``FlowReport``.
        self._ready: list[bytes] = []
        self._reports = self._shipped = 0
        self._controller: str | None = None
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=fn, name=f"flows-{name}", daemon=True)
            for name, fn in (
                ("conntrack", self._read_conntrack),
                ("nflog", self._read_nflog),
                ("spooler", self._spool_loop),
                ("shipper", self._ship_loop),
            )
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop reading, spool everything assembled (denied bursts included), remember what
        was reported of open flows; unshipped reports stay in the spool for the next run."""
        self._stopping.set()
        self._conntrack.close()
        self._nflog.close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        with self._lock:
            self._ready += map(report_payload, self._assembler.drain())
            tracked = self._assembler.tracked()
        self._spool_ready()
        self._spool.close()
        tmp = self._tracked_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(tracked, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._tracked_file)
        fsync_dir(self.directory)

    def statistics(self) -> RecorderStatistics:
        with self._lock:
            open_flows, reports = self._assembler.open_flows, self._reports
            unknown, ends_lost = self._assembler.unknown_decisions, self._assembler.ends_lost
        return RecorderStatistics(
            open_flows=open_flows,
            reports=reports,
            shipped=self._shipped,
            spool=self._spool.statistics(),
            lost_overruns=self._conntrack.statistics().lost_overruns
            + self._nflog.statistics().lost_overruns,
            ends_lost=ends_lost,
            unknown_decisions=unknown,
            controller=self._controller,
        )

    # -- readers ---------------------------------------------------------------------------

    def _restore(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            rows = json.loads(self._tracked_file.read_text())
            self._assembler.restore(rows, time.time_ns())
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s unreadable, open flows start from zero: %s", self._tracked_file, exc)

    def _read_conntrack(self) -> None:
        def each(item: ConntrackEvent | ConntrackBatch) -> None:
            with self._lock:
                if isinstance(item, ConntrackBatch):
                    self._ready += self._assembler.conntrack_batch(item)
                else:
                    self._ready += map(report_payload, self._assembler.conntrack(item))

        self._read("conntrack", self._conntrack.batches, each)

    def _read_nflog(self) -> None:
        def each(record: NflogRecord) -> None:
            with self._lock:
                self._assembler.denied(record)

        self._read("NFLOG", self._nflog.__iter__, each)

    def _read(self, what: str, items: Callable[[], Iterator[T]], each: Callable[[T], None]) -> None:
        """Iterate ``items()`` until ``stop``; a failed read (a snapshot the kernel refused,
        say) is logged and reading starts again a second later: flows are never left
        unrecorded because one read went wrong."""
        while not self._stopping.is_set():
            try:
                for item in items():
                    each(item)
                return  # closed by ``stop``
            except OSError as exc:
                log.error("%s read failed, reading again in 1 s: %s", what, exc)
                self._stopping.wait(1.0)

    def _spool_loop(self) -> None:
        while not self._stopping.wait(self._flush_s):
            with self._lock:
                self._ready += map(report_payload, self._assembler.expire(time.time_ns()))
            self._spool_ready()

    def _spool_ready(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._reports += len(ready)
        if ready:
            self._spool.append(ready)

    # -- shipping --------------------------------------------------------------------------

    def _ship_loop(self) -> None:
        attempt, delay = 0, self._retry_s[0]
        with httpx.Client(timeout=10.0) as client:
            while not self._stopping.is_set():
                records = _contiguous(self._spool.peek(self._batch))
                if not records:
                    self._stopping.wait(self._flush_s)
                    continue
                url = self._urls[attempt % len(self._urls)]
                dropped = self._spool.statistics().dropped
                try:
                    stored = _post(client, url, self.host, self._spool.identity, records, dropped)
                except (httpx.HTTPError, _Refused) as exc:
                    log.info("flow reports to %s: %s; %d waiting", url, exc, len(records))
                    attempt += 1
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self._retry_s[1])
                    continue
                delay = self._retry_s[0]
                self._controller = url
                self._spool.ack(stored)
                self._shipped += stored - records[0].seq + 1


class _Refused(Exception):
    pass


def _post(
    client: httpx.Client,
    url: str,
    host: str,
    spool: str,
    records: list[SpoolRecord],
    dropped: int,
) -> int:
    """Send ``records``; the last sequence number the controller stored."""
    # The payloads are already JSON: splice them instead of decoding and encoding again.
    head = json.dumps(
        {"host": host, "spool": spool, "first_seq": records[0].seq, "dropped": dropped}
    )[:-1]
    body = b"".join((head.encode(), b',"reports":[', b",".join(r.payload for r in records), b"]}"))
    response = client.post(url, content=body, headers={"content-type": "application/json"})
    if response.status_code != 200:
        raise _Refused(f"HTTP {response.status_code}: {response.text[:200]}")
    stored = response.json().get("stored_through")
    if not isinstance(stored, int) or not records[0].seq - 1 <= stored <= records[-1].seq:
        raise _Refused(f"answer without a valid stored_through: {response.text[:200]}")
    return stored


def _contiguous(records: list[SpoolRecord]) -> list[SpoolRecord]:
    """The leading run of consecutive sequence numbers (a cut corrupt tail leaves a gap)."""
    for i in range(1, len(records)):
        if records[i].seq != records[i - 1].seq + 1:
            return records[:i]
    return records


class _DecisionCache:
    """Decision ids → what they name in the program in force, re-read when the data path
    holds another program.  An id freed by an update and given to a new rule names the new
    rule: a flow decided by the old one and reported afterwards is attributed to it (ids are
    given lowest-free first, so this needs a rule removed and another added between the
    flow's start and its report)."""

    def __init__(self, datapath: Decisions) -> None:
        self._datapath = datapath
        self._program: Program | None = None
        self._names: dict[tuple[TrafficDirection, int], EndDecision] = {}

    def lookup(self, direction: TrafficDirection, decision: int) -> EndDecision | None:
        program = self._datapath.program()
        if program is not self._program:
            self._program = program
            self._names = {k: end_decision(v) for k, v in self._datapath.decisions().items()}
        return self._names.get((direction, decision))
