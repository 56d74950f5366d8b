"""Conntrack flow events of one network namespace: what the kernel saw of every connection
that crossed it, with the ``ct mark`` the nftables rules set (the deciding rules' ids).

A ``ConntrackReader`` listens on a ctnetlink multicast socket created inside the namespace,
and every ``snapshot_interval_s`` dumps the whole table on a second socket, because DESTROY
comes only when an entry is reaped (~2 min after a TCP close with the default TIME_WAIT, never
for a flow that outlives the agent), so long-lived flows would otherwise go unreported.

Guarantees, for flows that start after the reader was opened:

- Every NEW is followed by at most one DESTROY with the same ``ct_id`` (none if the flow is
  still open when the reader closes).  A DESTROY without a NEW means that NEW was lost.
- DESTROY carries the final counters and the start/stop timestamps.  NEW carries the mark set
  by the rule that decided the first packet, no counters.  SNAPSHOT carries the counters and
  start timestamp so far; the same flow appears in every snapshot until it ends.
- Events can be lost when the receive buffer (8 MiB, forced past ``rmem_max``) overflows,
  never silently: the kernel reports ENOBUFS, counted in ``statistics().lost_overruns`` (one
  overrun may have cost several events), and reading goes on.  The next snapshot shows every
  flow still open.
- ``reliable=True`` makes DESTROY survive a full buffer: the event socket asks for delivery
  failures (``NETLINK_BROADCAST_ERROR``), and conntrack keeps an entry whose DESTROY could not
  be delivered and sends it again later.  Measured here: a flush of 14,326 entries, all 14,326
  DESTROY events received.  It is off by default because the kept entries still count against
  ``nf_conntrack_max``: a reader that falls behind for long would fill the table, and then
  the kernel drops new connections.  A firewall's flow log must never cost traffic; the
  agent reports a flow whose DESTROY was lost from its snapshots instead (``_flows``).

Opening the reader sets three per-namespace sysctls (under ``/proc/sys/net/netfilter``,
written from inside the namespace), each taking effect for connections created afterwards:
``nf_conntrack_acct=1`` (without it no packet/byte counters exist), ``nf_conntrack_timestamp=1``
(without it no start/stop times) and ``nf_conntrack_events=1`` (the default 2 attaches the
event extension only while a listener exists, so a flow that began while the agent restarted
would end without a DESTROY).  Conntrack itself only runs in a namespace whose rules use it
(``ct state``, ``ct mark``).

Threads, not asyncio: the iterator blocks in ``select`` on the event socket and a wake-up
eventfd.  A multicast socket overruns when it is not drained, so it is read by a dedicated
thread that no busy event loop can starve; an asyncio agent consumes it with
``asyncio.to_thread`` or a queue filled by that thread.  ``close()`` from any thread wakes the
iterator at once and the sockets are closed before the iterator returns (or by ``close()``
itself when no iteration is running).

The socket is ours, not pyroute2's ``NFCTSocket``: pyroute2 0.9 treats ENOBUFS as fatal (its
asyncio protocol stores the error and every later call raises it) and opens its socket lazily
per thread, which defeats creating it inside the namespace.  The decoder is ours too
(``_ctdecode``): pyroute2's ``nfct_msg`` took 166 µs per event here (6k events/s, 3k
connections/s, far below what one host's forwarding makes), our attribute walk 13 µs, and a
run of DESTROY messages decoded column by column a few µs each.

Batches (``batches()``): the kernel sends each event as a datagram of its own, so a reader
that wakes once per datagram pays a ``select`` and a decode per event.  After each wake-up
the reader takes every datagram waiting (up to ``_DRAIN_DATAGRAMS``) and decodes each run of
consecutive DESTROY messages at once (``ConntrackBatch``); any other message is an event of
its own, in order.  Having emptied the socket it sleeps ``_GATHER_S`` (5 ms) before it waits
again, so that runs grow with the rate of events.  ``__iter__`` is the same stream one event
at a time.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .._netns import entered
from ._ctdecode import (
    TCP_CLOSING_STATES,
    ConntrackBatch,
    ConntrackEvent,
    EventKind,
    FiveTuple,
    decode,
    decode_destroys,
)
from ._netlink import (
    NLMSG,
    NLMSG_DONE,
    NLMSG_ERROR,
    RECV_BYTES,
    NetlinkReader,
    messages,
    netlink_socket,
)

__all__ = [
    "TCP_CLOSING_STATES",
    "ConntrackBatch",
    "ConntrackEvent",
    "ConntrackReader",
    "ConntrackStatistics",
    "EventKind",
    "FiveTuple",
]

_NLM_F_REQUEST, _NLM_F_CREATE, _NLM_F_DUMP = 0x1, 0x400, 0x300
_CT_GET = 1 << 8 | 1  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
_CT_DELETE = 1 << 8 | 2
_GROUP_NEW, _GROUP_UPDATE, _GROUP_DESTROY = 1 << 0, 1 << 1, 1 << 2  # NFNLGRP_CONNTRACK_* - 1
# Datagrams taken per wake-up at most: bounds a batch (and the time before a snapshot is
# due) while the kernel keeps sending; 1,024 DESTROYs are ~0.3 MiB of messages.
_DRAIN_DATAGRAMS = 1024
# After a drain that emptied the socket, the reader sleeps this long before it waits again,
# so that events gather into runs worth decoding as columns: at 16k connections/s a run is
# ~80 DESTROYs, and a run of 64 costs 4.6 µs a connection to decode, assemble and spool,
# one at a time 29 µs (bench/flow_pipeline.py).  Events are late by as much (reports are
# spooled every 0.5 s anyway).
# Meanwhile the 8 MiB receive buffer fills by ~1 KiB an event (each counts its whole
# buffer): 5 ms is ~800 KiB at 160k events/s.
_GATHER_S = 0.005


@dataclass(frozen=True, slots=True)
class ConntrackStatistics:
    events: int  # NEW, UPDATE and DESTROY events delivered
    snapshots: int  # table dumps completed
    lost_overruns: int  # ENOBUFS: the receive buffer overflowed and events were dropped
    malformed: int = 0  # messages without a readable original tuple, skipped


class ConntrackReader(NetlinkReader):
    def __init__(
        self,
        netns: str | None = None,
        *,
        snapshot_interval_s: float = 30.0,
        include_updates: bool = False,
        include_new: bool = True,
        reliable: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        groups = (
            _GROUP_DESTROY
            | (_GROUP_NEW if include_new else 0)
            | (_GROUP_UPDATE if include_updates else 0)
        )
        self.netns = netns
        self.snapshot_interval_s = snapshot_interval_s
        self._clock = clock
        self._dump_lock = threading.Lock()  # one dump at a time on ``_dump``
        with entered(netns):
            for name in ("nf_conntrack_acct", "nf_conntrack_timestamp", "nf_conntrack_events"):
                with open(f"/proc/sys/net/netfilter/{name}", "w") as f:
                    f.write("1")
            self._events = netlink_socket(groups, reliable=reliable)
            self._dump = netlink_socket()
        super().__init__({"events": 0, "snapshots": 0, "lost_overruns": 0, "malformed": 0})

    def __enter__(self) -> ConntrackReader:
        return self

    def statistics(self) -> ConntrackStatistics:
        with self._lock:
            return ConntrackStatistics(**self._counts)

    def snapshot(self) -> list[ConntrackEvent]:
        """Every entry of the table now (both families), as SNAPSHOT events."""
        request = NLMSG.pack(NLMSG.size + 4, _CT_GET, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        with self._dump_lock:
            self._dump.send(request + bytes(4))  # nfgenmsg: AF_UNSPEC, version 0, res_id 0
            return self._receive_dump()

    def _receive_dump(self) -> list[ConntrackEvent]:
        out: list[ConntrackEvent] = []
        while True:
            data = self._dump.recv(RECV_BYTES)
            for kind, _, msg in messages(data):
                if kind == NLMSG_DONE:
                    self._count(snapshots=1)
                    return out
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", msg, NLMSG.size)
                    raise OSError(-code, f"conntrack dump: {os.strerror(-code)}")
                event = decode(EventKind.SNAPSHOT, msg, self._clock())
                if event is None:
                    self._count(malformed=1)
                else:
                    out.append(event)

    def __iter__(self) -> Iterator[ConntrackEvent]:
        """Events until ``close()``; a snapshot's events every ``snapshot_interval_s``, the
        first one an interval after iteration starts.  One iterator at a time."""
        for item in self.batches():
            if isinstance(item, ConntrackBatch):
                yield from item.events()
            else:
                yield item

    def batches(self) -> Iterator[ConntrackEvent | ConntrackBatch]:
        """What ``__iter__`` yields, with each run of consecutive DESTROY events as one
        ``ConntrackBatch`` (its ``events()`` in order).  One iterator at a time."""
        with self._iteration():
            next_snapshot = time.monotonic() + self.snapshot_interval_s
            while True:
                timeout = max(0.0, next_snapshot - time.monotonic())
                readable = self._wait(self._events, timeout)
                if readable is None:
                    return
                if readable:
                    received, full = self._receive()
                    yield from received
                    if not full and not self._pause(_GATHER_S):
                        return
                if time.monotonic() >= next_snapshot:
                    next_snapshot = time.monotonic() + self.snapshot_interval_s
                    yield from self.snapshot()

    def _release_sockets(self) -> None:
        self._events.close()
        self._dump.close()

    def _receive(self) -> tuple[list[ConntrackEvent | ConntrackBatch], bool]:
        """Every datagram waiting (up to ``_DRAIN_DATAGRAMS``: full, True), decoded in
        order."""
        datagrams: list[bytes] = []
        while len(datagrams) < _DRAIN_DATAGRAMS:
            data = self._recv_nowait(self._events)
            if data is None:
                break
            datagrams.append(data)
        if not datagrams:
            return [], False
        now = self._clock()
        out: list[ConntrackEvent | ConntrackBatch] = []
        run: list[bytes] = []
        events = malformed = 0
        for data in datagrams:
            for kind, flags, msg in messages(data):
                if kind >> 8 != 1:
                    continue
                if kind == _CT_DELETE:
                    run.append(msg)
                    continue
                if run:
                    out.append(decode_destroys(run, now))
                    run = []
                event = decode(_new_or_update(flags), msg, now)
                if event is None:
                    malformed += 1
                else:
                    out.append(event)
        if run:
            out.append(decode_destroys(run, now))
        for item in out:
            if isinstance(item, ConntrackBatch):
                events, malformed = events + len(item), malformed + item.malformed
            else:
                events += 1
        self._count(events=events, malformed=malformed)
        return out, len(datagrams) == _DRAIN_DATAGRAMS


def _new_or_update(flags: int) -> EventKind:
    return EventKind.NEW if flags & _NLM_F_CREATE else EventKind.UPDATE
