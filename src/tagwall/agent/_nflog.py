"""Denied packets as nftables logged them: a raw netlink reader of one NFLOG group.

Why it is raw: no Python library speaks nfnetlink_log (pyroute2 has no NFLOG), and the wire
format is small.  The rules (``log group G prefix "tw:…"`` before a drop or reject) name the
deciding rule in the prefix; a record carries that prefix and the packet's 5-tuple.

Guarantees: one record per logged IP packet, in the order the kernel logged them, unless the
receive buffer (8 MiB, forced past ``rmem_max``) overflowed: each overflow is one ENOBUFS,
counted in ``statistics().lost_overruns`` (it may have cost several records), and reading goes
on.  A logged packet that is not IPv4/IPv6 or whose copied header is too short to parse is
counted in ``skipped``, not yielded.  The group binding belongs to the socket: ``close()``
releases both (the kernel drops the instance with the socket); a group already bound by
another socket in the namespace makes the constructor raise ``PermissionError`` (EPERM, the
kernel's answer).

Threads, not asyncio, for the reasons in ``_conntrack``; ``close()`` behaves as
``_netlink.NetlinkReader`` says.

Wire layout (values big-endian; the netlink message header and the attribute headers, ``u16
len, u16 type``, in host order; each attribute padded to 4 bytes).  Binding group 5 sends
``NFULNL_MSG_CONFIG`` (type ``NFNL_SUBSYS_ULOG << 8 | 1`` = 0x0401) with ``res_id`` = 5 and
``NFULA_CFG_CMD`` = BIND, ``NFULA_CFG_MODE`` = (copy_range, COPY_PACKET), ``NFULA_CFG_TIMEOUT``
(flush after this many 1/100 s).  A logged packet arrives as ``NFULNL_MSG_PACKET`` (0x0400).
Worked example, as this kernel sent it: group 5, rule ``meta mark set 0x2a log group 5 prefix
"tw:r7" drop`` in the output hook, a UDP datagram 127.0.0.1:40000 → 127.0.0.1:53 with 1 byte
of data (a 29-byte IP packet)::

    6c000000 0004 0000 00000000 00000000   nlmsghdr: length 108, type 0x0400, flags, seq, port
    02 00 0005                             nfgenmsg: family AF_INET, version 0, res_id = group 5
    0800 0100 0800 03 00                   NFULA_PACKET_HDR: hw_protocol 0x0800, hook 3 (output)
    0a00 0a00 74773a72 3700 0000           NFULA_PREFIX: "tw:r7\\0", then 2 bytes of padding
    0800 0500 00000001                     NFULA_IFINDEX_OUTDEV: 1 (lo); no INDEV when sent here
    0800 0200 0000002a                     NFULA_MARK: 0x2a
    0800 0b00 00000000                     NFULA_UID: 0 (ignored here)
    0800 0e00 00000000                     NFULA_GID: 0 (ignored here)
    2100 0900 4500001d 77ff4000 4011c4ce   NFULA_PAYLOAD (33 = 4 + 29, then 3 bytes of padding):
              7f000001 7f000001            IPv4, total length 0x1d = 29, protocol 17, addresses,
              9c400035 0009fe1c 78 000000  UDP ports 0x9c40 = 40000 → 0x0035 = 53, data "x"

gives ``NflogRecord(prefix="tw:r7", flow=FiveTuple("127.0.0.1", "127.0.0.1", 17, 40000, 53),
length=29, mark=0x2a, in_ifindex=None, out_ifindex=1, timestamp_ns=None, ...)``.  ``length`` is
the IP packet's own length field, so it is right although only ``copy_range`` bytes are copied.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .._netns import entered
from ._conntrack import FiveTuple
from ._netlink import NLMSG, NLMSG_ERROR, RECV_BYTES, NetlinkReader, messages, netlink_socket

__all__ = ["NflogReader", "NflogRecord", "NflogStatistics", "parse_packet"]

_NFGEN = struct.Struct("!BBH")  # family, version, res_id (the group)
_ATTR = struct.Struct("=HH")  # length (header included), type
_MSG_PACKET, _MSG_CONFIG = 4 << 8 | 0, 4 << 8 | 1  # NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_*
_CFG_CMD, _CFG_MODE, _CFG_TIMEOUT = 1, 2, 4
_CMD_BIND, _COPY_PACKET = 1, 2
# NFULA_* packet attributes used here.
_PACKET_HDR, _MARK, _TIMESTAMP, _INDEV, _OUTDEV, _PAYLOAD, _PREFIX = 1, 2, 3, 4, 5, 9, 10
_PORTS = {6, 17, 33, 132, 136}  # TCP, UDP, DCCP, SCTP, UDP-Lite: ports in the first 4 bytes
_V6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options


@dataclass(frozen=True, slots=True)
class NflogRecord:
    """One logged packet.  ``length``: bytes of the whole IP packet.  Times are ns since the
    epoch; ``timestamp_ns`` is the kernel's packet time (None when the packet had none, as for
    locally sent packets), ``observed_ns`` when the reader received it."""

    prefix: str
    flow: FiveTuple
    length: int
    mark: int  # the packet mark (meta mark), uint32
    in_ifindex: int | None  # None when the packet had no input interface (sent locally)
    out_ifindex: int | None  # None when it had none yet (input hook)
    timestamp_ns: int | None
    observed_ns: int


@dataclass(frozen=True, slots=True)
class NflogStatistics:
    records: int
    skipped: int  # logged packets that were not parseable IP
    lost_overruns: int  # ENOBUFS: the receive buffer overflowed and records were dropped


class NflogReader(NetlinkReader):
    def __init__(
        self,
        group: int,
        netns: str | None = None,
        *,
        copy_range: int = 128,
        flush_timeout_s: float = 0.1,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.group = group
        self.netns = netns
        self._clock = clock
        with entered(netns):
            self._sock = netlink_socket()
        try:
            self._bind(copy_range, round(flush_timeout_s * 100))
        except BaseException:
            self._sock.close()
            raise
        super().__init__({"records": 0, "skipped": 0, "lost_overruns": 0})

    def _bind(self, copy_range: int, timeout_cs: int) -> None:
        attrs = (
            _attr(_CFG_CMD, bytes([_CMD_BIND]))
            + _attr(_CFG_MODE, struct.pack("!IBx", copy_range, _COPY_PACKET))
            + _attr(_CFG_TIMEOUT, struct.pack("!I", timeout_cs))
        )
        body = _NFGEN.pack(socket.AF_UNSPEC, 0, self.group) + attrs
        flags = 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK
        self._sock.send(NLMSG.pack(NLMSG.size + len(body), _MSG_CONFIG, flags, 1, 0) + body)
        reply = self._sock.recv(RECV_BYTES)
        _, kind, _, _, _ = NLMSG.unpack_from(reply)
        (code,) = struct.unpack_from("=i", reply, NLMSG.size)
        if kind != NLMSG_ERROR or code != 0:
            why = "bound by another socket" if -code == errno.EPERM else os.strerror(-code)
            raise OSError(-code, f"NFLOG group {self.group} cannot be bound: {why}")

    def __enter__(self) -> NflogReader:
        return self

    def statistics(self) -> NflogStatistics:
        with self._lock:
            return NflogStatistics(**self._counts)

    def __iter__(self) -> Iterator[NflogRecord]:
        """Records until ``close()``.  One iterator at a time."""
        with self._iteration():
            while self._wait(self._sock):
                yield from self._receive()

    def _release_sockets(self) -> None:
        self._sock.close()  # the kernel unbinds the group with the socket

    def _receive(self) -> list[NflogRecord]:
        data = self._recv_nowait(self._sock)
        if data is None:
            return []
        now = self._clock()
        out: list[NflogRecord] = []
        skipped = 0
        for kind, _, message in messages(data):
            if kind == _MSG_PACKET:
                record = parse_packet(message, now)
                if record is None:
                    skipped += 1
                else:
                    out.append(record)
        self._count(records=len(out), skipped=skipped)
        return out


def parse_packet(message: bytes, observed_ns: int) -> NflogRecord | None:
    """One ``NFULNL_MSG_PACKET`` message (netlink header included) as a record; None when
    its payload is not a parseable IP packet."""
    attrs: dict[int, bytes] = {}
    offset = NLMSG.size + _NFGEN.size
    while offset + _ATTR.size <= len(message):
        length, kind = _ATTR.unpack_from(message, offset)
        if length < _ATTR.size:
            break
        attrs[kind & 0x3FFF] = message[offset + _ATTR.size : offset + length]
        offset += (length + 3) & ~3
    parsed = _parse_ip(attrs.get(_PAYLOAD, b""))
    if parsed is None:
        return None
    flow, ip_length = parsed
    stamp = attrs.get(_TIMESTAMP)
    seconds, micros = struct.unpack("!QQ", stamp) if stamp else (None, None)
    return NflogRecord(
        prefix=attrs.get(_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace"),
        flow=flow,
        length=ip_length,
        mark=_u32(attrs.get(_MARK)) or 0,
        in_ifindex=_u32(attrs.get(_INDEV)),
        out_ifindex=_u32(attrs.get(_OUTDEV)),
        timestamp_ns=None if seconds is None else seconds * 10**9 + micros * 1000,
        observed_ns=observed_ns,
    )


def _parse_ip(packet: bytes) -> tuple[FiveTuple, int] | None:
    """The 5-tuple and IP length of an IPv4 or IPv6 packet's first bytes."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        proto, fragment_offset = packet[9], struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
        src = socket.inet_ntop(socket.AF_INET, packet[12:16])
        dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
        l4 = packet[(packet[0] & 0x0F) * 4 :] if fragment_offset == 0 else b""
        length = struct.unpack_from("!H", packet, 2)[0]
    elif version == 6 and len(packet) >= 40:
        proto, offset = packet[6], 40
        src = socket.inet_ntop(socket.AF_INET6, packet[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        while proto in _V6_EXTENSIONS and len(packet) >= offset + 8:
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        l4 = packet[offset:]
        if proto == 44 and len(packet) >= offset + 8:  # fragment header
            later_fragment = struct.unpack_from("!H", packet, offset + 2)[0] >> 3 != 0
            proto, l4 = packet[offset], b"" if later_fragment else packet[offset + 8 :]
        length = 40 + struct.unpack_from("!H", packet, 4)[0]
    else:
        return None
    flow = FiveTuple(src, dst, proto)
    if proto in _PORTS and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
        flow = FiveTuple(src, dst, proto, sport, dport)
    elif proto in (1, 58) and len(l4) >= 2:
        flow = FiveTuple(src, dst, proto, icmp_type=l4[0], icmp_code=l4[1])
    return flow, length


def _attr(kind: int, value: bytes) -> bytes:
    header = _ATTR.pack(_ATTR.size + len(value), kind)
    return header + value + bytes(-len(value) % 4)


def _u32(value: bytes | None) -> int | None:
    return None if value is None else int(struct.unpack("!I", value)[0])
