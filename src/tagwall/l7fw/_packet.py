"""IPv4/TCP segments: reading the ones the queue hands over, and building the two the firewall
sends when it refuses a request.  Pure.

When a request is refused (``_flows`` decided DENY), the connection is ended on both sides
without the server seeing a byte of the request (client C, server S, the refused segment
``seq=s, ack=a`` carries ``n`` bytes from C to S)::

    reset_toward_server:  C → S  RST|ACK  seq=s      ack=a     (replaces the refused segment)
    refusal_to_client:    S → C  FIN|PSH|ACK  seq=a  ack=s+n  payload: an HTTP 403 response

``seq=s`` is exactly what S expects next, so S accepts the reset; ``seq=a`` is what C has
acknowledged from S, so C reads the 403 as the next bytes of the response stream, then the end
of the stream.  Both carry correct IPv4 and TCP checksums (RFC 791, RFC 9293).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from .._checksum import internet_checksum

__all__ = [
    "ACK",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "TcpSegment",
    "parse_segment",
    "refusal_to_client",
    "reset_toward_server",
]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_TTL = 64


@dataclass(frozen=True)
class TcpSegment:
    """One TCP segment of an IPv4 packet; addresses are dotted quads, numbers host order."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes

    @property
    def client(self) -> str:
        return f"{self.src}:{self.sport}"

    @property
    def server(self) -> str:
        return f"{self.dst}:{self.dport}"


def parse_segment(packet: bytes) -> TcpSegment | None:
    """The TCP segment in an IPv4 packet; None for anything else (IPv6, other protocols,
    fragments, truncated headers)."""
    if len(packet) < _IPV4.size or packet[0] >> 4 != 4:
        return None
    ver_ihl, _tos, total, _id, frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(packet)
    ihl = (ver_ihl & 0x0F) * 4
    if proto != 6 or frag & 0x3FFF or ihl < 20 or len(packet) < ihl + _TCP.size:
        return None
    sport, dport, seq, ack, off, flags, _win, _csum, _urg = _TCP.unpack_from(packet, ihl)
    data_at = ihl + (off >> 4) * 4
    end = min(total, len(packet))
    if data_at > end:
        return None
    return TcpSegment(
        str(IPv4Address(src)),
        str(IPv4Address(dst)),
        sport,
        dport,
        seq,
        ack,
        flags,
        packet[data_at:end],
    )


def _build(
    src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes
) -> bytes:
    saddr, daddr = IPv4Address(src).packed, IPv4Address(dst).packed
    tcp = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", internet_checksum(pseudo + tcp)) + tcp[18:]
    header = _IPV4.pack(0x45, 0, 20 + len(tcp), 0, 0x4000, _TTL, 6, 0, saddr, daddr)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + tcp


def reset_toward_server(refused: TcpSegment, server_seq: int) -> bytes:
    """The IPv4 packet that replaces ``refused``: a reset the server accepts.  ``server_seq``
    is the first client byte the server has not received (``refused.seq`` unless earlier
    segments of the request are held back too)."""
    s = refused
    return _build(s.src, s.dst, s.sport, s.dport, server_seq, s.ack, RST | ACK, b"")


def refusal_to_client(refused: TcpSegment, client_next_seq: int, body: bytes) -> bytes:
    """The IPv4 packet from the server's address to the client carrying ``body`` and FIN.
    ``client_next_seq`` is the sequence number after every byte the client has sent."""
    s = refused
    flags = FIN | PSH | ACK
    return _build(s.dst, s.src, s.dport, s.sport, s.ack, client_next_seq & 0xFFFFFFFF, flags, body)
