"""A reader of one netfilter queue (nfnetlink_queue): packets in, verdicts out.

The kernel holds each queued packet until it gets a verdict for its id: accept (optionally
with a replaced payload, which the kernel sends on in the original's place), or drop.  Ids
given no verdict stay held until the queue fills (``max_len``), after which the kernel drops
new packets for this queue: the queue fails closed, and without a reader bound nothing
passes (no ``bypass`` flag on the rule).

Wire (linux/netfilter/nfnetlink_queue.h), all values big endian::

    NFQA_PACKET_HDR   be32 packet id · be16 hw protocol · u8 hook
    NFQA_PAYLOAD      the IPv4 packet (copy mode PACKET, up to 65535 bytes)
    NFQA_HWADDR       be16 length · u16 pad · 8 bytes: the frame's source MAC
    NFQA_IFINDEX_*    be32 ifindex; PHYSINDEV is the bridge port of a bridged packet
    NFQA_VERDICT_HDR  be32 verdict (NF_DROP 0, NF_ACCEPT 1) · be32 packet id

Example: accepting packet 7 unchanged on queue 5 is one NFQNL_MSG_VERDICT (0x0301) with
resource id 5 and the attribute ``0c 00 02 00 | 00 00 00 01 | 00 00 00 07``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ._netlink import NLM_F_ACK, NLM_F_REQUEST, attr, iter_attrs, iter_messages, message, wait_ack
from ._netlink import open_socket as open_netlink

__all__ = ["NfQueue", "QueueStatistics", "QueuedPacket"]

_SUBSYS_QUEUE = 3
_MSG_PACKET = _SUBSYS_QUEUE << 8 | 0
_MSG_VERDICT = _SUBSYS_QUEUE << 8 | 1
_MSG_CONFIG = _SUBSYS_QUEUE << 8 | 2
_CFG_CMD, _CFG_PARAMS, _CFG_QUEUE_MAXLEN = 1, 2, 3
_CMD_BIND = 1
_COPY_PACKET = 2
_PACKET_HDR, _VERDICT_HDR, _INDEV, _PHYSINDEV, _HWADDR, _PAYLOAD = 1, 2, 5, 7, 9, 10
_NF_DROP, _NF_ACCEPT = 0, 1
_RCVBUF_BYTES = 8 << 20


@dataclass(frozen=True)
class QueuedPacket:
    """One packet the kernel holds until ``NfQueue.accept`` or ``drop`` names ``packet_id``."""

    packet_id: int
    payload: bytes  # the IPv4 packet
    in_ifindex: int  # the device it arrived on: the bridge port when bridged
    src_mac: bytes | None  # source MAC of its frame (6 bytes), None if the kernel gave none


@dataclass(frozen=True)
class QueueStatistics:
    received: int
    accepted: int
    dropped: int
    replaced: int


class NfQueue:
    """Bound to queue ``number`` in the calling thread's network namespace.  One thread reads
    and answers; ``close`` unbinds (the kernel then drops packets for the queue)."""

    def __init__(self, number: int, max_len: int = 4096) -> None:
        self.number = number
        self._seq = 0
        self._counts = [0, 0, 0, 0]  # received, accepted, dropped, replaced
        self._sock = open_netlink()
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
            self._config(attr(_CFG_CMD, struct.pack("!BxH", _CMD_BIND, 0)), "bind")
            params = struct.pack("!IB", 0xFFFF, _COPY_PACKET) + b"\0" * 3
            self._config(attr(_CFG_PARAMS, params), "copy mode")
            self._config(attr(_CFG_QUEUE_MAXLEN, struct.pack("!I", max_len)), "max length")
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(*self._counts)

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _config(self, payload: bytes, what: str) -> None:
        seq = self._next_seq()
        flags = NLM_F_REQUEST | NLM_F_ACK
        self._sock.send(message(_MSG_CONFIG, flags, seq, socket.AF_UNSPEC, self.number, payload))
        wait_ack(self._sock, seq, f"queue {self.number}: {what}")

    def receive(self) -> list[QueuedPacket]:
        """The packets of one datagram from the kernel (blocks until there is one)."""
        packets = []
        for kind, _seq, body in iter_messages(self._sock.recv(1 << 17)):
            if kind == _MSG_PACKET:
                packets.append(_packet(body[4:]))  # after the nfgenmsg
        self._counts[0] += len(packets)
        return packets

    def accept(self, packet_id: int, replacement: bytes | None = None) -> None:
        """Let the packet go on, or send ``replacement`` (a whole IPv4 packet) in its place."""
        extra = b"" if replacement is None else attr(_PAYLOAD, replacement)
        self._verdict(_NF_ACCEPT, packet_id, extra)
        self._counts[1 if replacement is None else 3] += 1

    def drop(self, packet_id: int) -> None:
        self._verdict(_NF_DROP, packet_id, b"")
        self._counts[2] += 1

    def _verdict(self, verdict: int, packet_id: int, extra: bytes) -> None:
        payload = attr(_VERDICT_HDR, struct.pack("!II", verdict, packet_id)) + extra
        seq = self._next_seq()
        msg = message(_MSG_VERDICT, NLM_F_REQUEST, seq, socket.AF_UNSPEC, self.number, payload)
        self._sock.send(msg)


def _packet(body: bytes) -> QueuedPacket:
    packet_id, payload, indev, physindev, mac = 0, b"", 0, 0, None
    for kind, value in iter_attrs(body):
        if kind == _PACKET_HDR:
            (packet_id,) = struct.unpack_from("!I", value)
        elif kind == _PAYLOAD:
            payload = value
        elif kind == _INDEV:
            (indev,) = struct.unpack_from("!I", value)
        elif kind == _PHYSINDEV:
            (physindev,) = struct.unpack_from("!I", value)
        elif kind == _HWADDR:
            (length,) = struct.unpack_from("!H", value)
            mac = value[4 : 4 + length] if length == 6 else None
    return QueuedPacket(packet_id, payload, physindev or indev, mac)
