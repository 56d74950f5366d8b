"""Per-connection reassembly of client→server bytes and the hold/release/refuse decisions.
Sans-io: segments in, ``Step``s (which queued packets to accept, drop or turn into a reset)
out; the caller owns the queue.

The kernel queues every client→server segment of the inspected ports (``_nftables``).  For
each connection ``FlowTable`` keeps the client's next sequence number and the bytes of the
request head being read.  Cases of ``feed(packet_id, segment)``:

- SYN: a new connection starts; accept.  RST: forget it; drop what is held, accept the RST.
- no new bytes (a pure ACK, or a retransmission of bytes already released): accept; a
  retransmission of bytes still held is dropped (the original is held).  A segment after a
  gap is dropped: the client sends it again after the missing one.
- new bytes: they pass through the current body (Content-Length or chunked) and then through
  request heads.  Each complete head is decided by the rules at once (``decided``).  While a
  head is incomplete, the packets carrying it are held: the server sees nothing of it.
  - every head allowed and no head pending → accept every held packet and this one, in order;
  - a head denied (or Malformed) → drop the held packets, replace this one by a reset toward
    the server (``refuse``), and drop every later client payload on the connection;
  - the first bytes are not HTTP → the connection is passed from then on, uninspected.

Worked example: the client sends ``GET /ad`` (seq 1001, packet 7) then ``min HTTP/1.1\\r\\n
\\r\\n`` (seq 1008, packet 8).  Packet 7 gives ``Step()`` with 7 held; packet 8 completes the
head, the rule ``no-admin`` denies it: ``Step(drop=(7,), decided=(...), refuse=Refusal(8,
segment, server_seq=1001, client_next_seq=1024))``.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from ._chunked import ChunkedBody
from ._http import Framing, HttpRequest, Malformed, parse_request
from ._packet import FIN, RST, SYN, TcpSegment
from ._rules import Action, RuleSet, Verdict, decide, decide_malformed

__all__ = ["Decided", "FlowStatistics", "FlowTable", "Refusal", "Step"]

_HALF = 1 << 31
_MOD = 1 << 32


@dataclass(frozen=True)
class Decided:
    """One decided request; ``request`` is None for a head that could not be parsed."""

    segment: TcpSegment  # the segment that completed the head (addresses, ports)
    request: HttpRequest | None
    verdict: Verdict


@dataclass(frozen=True)
class Refusal:
    """Replace queued packet ``packet_id`` by a reset with ``server_seq`` (the first byte the
    server has not received), and answer the client; see ``_packet``."""

    packet_id: int
    segment: TcpSegment
    server_seq: int
    client_next_seq: int


@dataclass(frozen=True)
class Step:
    """What to do with queued packets after one ``feed``.  Every packet id the table was fed
    appears exactly once across all steps: in ``accept``, ``drop`` or ``refuse``."""

    accept: tuple[int, ...] = ()  # in the order the client sent them
    drop: tuple[int, ...] = ()
    decided: tuple[Decided, ...] = ()
    refuse: Refusal | None = None


@dataclass(frozen=True)
class FlowStatistics:
    flows: int
    held_packets: int
    allowed: int
    denied: int


class _Mode(enum.Enum):
    INSPECTING = "inspecting"  # reading heads and skipping bodies
    OPAQUE = "opaque"  # not HTTP: pass every segment
    REFUSED = "refused"  # a request was denied: drop every later payload


@dataclass
class _Flow:
    next_seq: int  # Invariant: the client's next sequence number not yet seen
    released_seq: int  # Invariant: the first byte not yet accepted toward the server
    mode: _Mode = _Mode.INSPECTING
    pending: bytes = b""  # Invariant: an incomplete head; non-empty ⇔ packets are held
    held: list[int] = field(default_factory=list)
    body_left: int = 0
    chunked: ChunkedBody | None = None
    requests: int = 0


class FlowTable:
    """Connections keyed by (client, server) address and port.  Not thread safe: one reader
    of the queue owns it.  At most ``max_flows`` are kept; the oldest is forgotten first."""

    def __init__(self, rules: RuleSet, max_flows: int = 65536) -> None:
        self._rules = rules
        self._max_flows = max_flows
        self._flows: OrderedDict[tuple[str, int, str, int], _Flow] = OrderedDict()
        self._allowed = 0
        self._denied = 0

    def statistics(self) -> FlowStatistics:
        held = sum(len(flow.held) for flow in self._flows.values())
        return FlowStatistics(len(self._flows), held, self._allowed, self._denied)

    def feed(self, packet_id: int, s: TcpSegment) -> Step:
        key = (s.src, s.sport, s.dst, s.dport)
        if s.flags & SYN:
            return Step(accept=(packet_id,), drop=self._start(key, (s.seq + 1) % _MOD))
        if s.flags & RST:
            gone = self._flows.pop(key, None)
            return Step(accept=(packet_id,), drop=tuple(gone.held) if gone else ())
        flow = self._flows.get(key)
        evicted: tuple[int, ...] = ()
        if flow is None:  # a connection older than the firewall: read from here on
            evicted = self._start(key, s.seq)
            flow = self._flows[key]
        step = self._feed_flow(flow, packet_id, s)
        if s.flags & FIN and not flow.held:  # the client has sent everything
            self._flows.pop(key, None)
        return Step(step.accept, evicted + step.drop, step.decided, step.refuse)

    def _feed_flow(self, flow: _Flow, packet_id: int, s: TcpSegment) -> Step:
        if flow.mode is _Mode.OPAQUE:
            return Step(accept=(packet_id,))
        if flow.mode is _Mode.REFUSED:
            return Step(drop=(packet_id,)) if s.payload else Step(accept=(packet_id,))
        behind = (flow.next_seq - s.seq) % _MOD
        if behind >= _HALF:  # after a gap
            return Step(drop=(packet_id,))
        new = s.payload[behind:]
        if not new:
            if flow.held and (s.payload or s.flags & FIN):
                return Step(drop=(packet_id,)) if s.payload else self._hold(flow, packet_id)
            return Step(accept=(packet_id,))
        flow.next_seq = (flow.next_seq + len(new)) % _MOD
        return self._read(flow, packet_id, s, flow.pending + new)

    def _start(self, key: tuple[str, int, str, int], seq: int) -> tuple[int, ...]:
        old = self._flows.pop(key, None)
        dropped = list(old.held) if old else []
        self._flows[key] = _Flow(next_seq=seq, released_seq=seq)
        while len(self._flows) > self._max_flows:
            _, evicted = self._flows.popitem(last=False)
            dropped += evicted.held
        return tuple(dropped)

    @staticmethod
    def _hold(flow: _Flow, packet_id: int) -> Step:
        flow.held.append(packet_id)
        return Step()

    def _read(self, flow: _Flow, packet_id: int, s: TcpSegment, data: bytes) -> Step:
        decided: list[Decided] = []
        pos = 0
        while pos < len(data):
            if flow.body_left:
                take = min(flow.body_left, len(data) - pos)
                pos, flow.body_left = pos + take, flow.body_left - take
                continue
            if flow.chunked is not None:
                taken = flow.chunked.feed(data[pos:])
                if isinstance(taken, Malformed):
                    return self._refuse(flow, packet_id, s, decided, None, decide_malformed())
                pos += taken
                flow.chunked = None if flow.chunked.done else flow.chunked
                continue
            parsed = parse_request(data[pos:])
            if parsed is Framing.NEED_MORE:
                break
            if parsed is Framing.NOT_HTTP and flow.requests == 0:
                flow.mode = _Mode.OPAQUE
                return self._release(flow, packet_id, b"", decided)
            if not isinstance(parsed, HttpRequest):  # Malformed, or garbage after a request
                return self._refuse(flow, packet_id, s, decided, None, decide_malformed())
            verdict = decide(self._rules, parsed)
            flow.requests += 1
            if verdict.action is Action.DENY:
                return self._refuse(flow, packet_id, s, decided, parsed, verdict)
            self._allowed += 1
            decided.append(Decided(s, parsed, verdict))
            pos += parsed.head_bytes
            flow.body_left = parsed.body.content_length
            flow.chunked = ChunkedBody() if parsed.body.chunked else None
        return self._release(flow, packet_id, data[pos:], decided)

    def _release(self, flow: _Flow, packet_id: int, pending: bytes, decided: list[Decided]) -> Step:
        flow.pending = pending
        if pending:
            flow.held.append(packet_id)
            return Step(decided=tuple(decided))
        accept = (*flow.held, packet_id)
        flow.held.clear()
        flow.released_seq = flow.next_seq
        return Step(accept=accept, decided=tuple(decided))

    def _refuse(
        self,
        flow: _Flow,
        packet_id: int,
        s: TcpSegment,
        decided: list[Decided],
        request: HttpRequest | None,
        verdict: Verdict,
    ) -> Step:
        self._denied += 1
        flow.mode = _Mode.REFUSED
        drop = tuple(flow.held)
        flow.held.clear()
        flow.pending = b""
        refusal = Refusal(packet_id, s, flow.released_seq, flow.next_seq)
        return Step(drop=drop, decided=(*decided, Decided(s, request, verdict)), refuse=refusal)
