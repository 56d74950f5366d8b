"""The netfilter netlink wire format, enough for NFQUEUE and one nf_tables rule.

Why by hand: the two conversations this package has with the kernel (reading a queue, and
adding the one rule that feeds it, see ``_nftables``) need a dozen message types; the standard
library's ``socket`` and ``struct`` cover them without a dependency.

Encoding (linux/netlink.h, linux/netfilter/nfnetlink.h), host byte order unless stated::

    nlmsghdr   u32 length (header included) · u16 type · u16 flags · u32 seq · u32 port id
    nfgenmsg   u8 family · u8 version (0) · be16 resource id (queue number, or subsystem)
    nlattr     u16 length (header included, padding excluded) · u16 type · value · pad to 4

A message type is ``subsystem << 8 | message``: NFQNL_MSG_VERDICT of the queue subsystem (3)
is ``0x0301``.  Values inside netfilter attributes are big endian (``be32``).  Example: the
attribute NFQA_MARK (3) holding mark 0x10 is ``08 00 03 00 00 00 00 10``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

__all__ = [
    "NLA_F_NESTED",
    "NetlinkError",
    "attr",
    "iter_attrs",
    "iter_messages",
    "message",
    "open_socket",
    "wait_ack",
]

NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLA_F_NESTED = 0x8000
_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # the resource id is packed by the caller, big endian
_NLATTR = struct.Struct("=HH")
_TYPE_MASK = 0x3FFF  # attribute type without the NESTED and BYTEORDER flags


class NetlinkError(OSError):
    """The kernel refused a request: ``errno`` and ``strerror`` are the kernel's, and
    ``request`` names what was asked."""

    def __init__(self, code: int, request: str) -> None:
        super().__init__(code, f"{request}: {os.strerror(code)}")
        self.request = request


def open_socket() -> socket.socket:
    """A netfilter netlink socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    return sock


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    """One attribute, padded to 4 bytes; nest by passing ``kind | NLA_F_NESTED`` and the
    concatenated inner attributes as ``value``."""
    length = _NLATTR.size + len(value)
    return _NLATTR.pack(length, kind) + value + b"\0" * (_pad4(length) - length)


def message(
    kind: int, flags: int, seq: int, family: int, resource_id: int, payload: bytes
) -> bytes:
    """One netfilter message: header, nfgenmsg (``resource_id`` big endian), attributes."""
    body = _NFGENMSG.pack(family, 0, socket.htons(resource_id)) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def iter_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(type, seq, body)`` for each message of one datagram; ``body`` starts after the
    netlink header.  An NLMSG_ERROR with a non-zero code raises ``NetlinkError``; one with
    code 0 (an acknowledgement) is yielded like any other message."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        body = data[offset + _NLMSGHDR.size : offset + length]
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", body)
            if code != 0:
                raise NetlinkError(-code, f"netlink request seq={seq}")
        yield kind, seq, body
        offset += _pad4(length)


def iter_attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(type, value)`` for each attribute in ``data``, flags stripped from the type."""
    offset = 0
    while offset + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            return
        yield kind & _TYPE_MASK, data[offset + _NLATTR.size : offset + length]
        offset += _pad4(length)


def wait_ack(sock: socket.socket, seq: int, request: str) -> None:
    """Read until the acknowledgement of message ``seq``; a refusal raises ``NetlinkError``
    naming ``request``."""
    while True:
        data = sock.recv(65536)
        try:
            for kind, got, _body in iter_messages(data):
                if got == seq and kind in (NLMSG_ERROR, NLMSG_DONE):
                    return
        except NetlinkError as exc:
            raise NetlinkError(exc.errno or errno.EIO, request) from None
