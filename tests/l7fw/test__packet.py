"""Refusal packets: addressed, sequenced and checksummed as the ``_packet`` docstring says."""

from __future__ import annotations

import struct

from tagwall.l7fw._packet import (
    ACK,
    FIN,
    PSH,
    RST,
    TcpSegment,
    parse_segment,
    refusal_to_client,
    reset_toward_server,
)

REFUSED = TcpSegment("10.0.0.1", "10.0.0.2", 40000, 80, 1001, 5001, ACK | PSH, b"GET /admin")


def _sum16(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _checksums_ok(packet: bytes) -> bool:
    tcp = packet[20:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    return _sum16(packet[:20]) == 0xFFFF and _sum16(pseudo + tcp) == 0xFFFF


def test_the_reset_toward_the_server() -> None:
    packet = reset_toward_server(REFUSED, server_seq=990)
    assert _checksums_ok(packet)
    assert parse_segment(packet) == TcpSegment(
        "10.0.0.1", "10.0.0.2", 40000, 80, 990, 5001, RST | ACK, b""
    )


def test_the_refusal_to_the_client() -> None:
    packet = refusal_to_client(REFUSED, client_next_seq=1011, body=b"HTTP/1.1 403 x\r\n\r\n")
    assert _checksums_ok(packet)
    assert parse_segment(packet) == TcpSegment(
        "10.0.0.2", "10.0.0.1", 80, 40000, 5001, 1011, FIN | PSH | ACK, b"HTTP/1.1 403 x\r\n\r\n"
    )


def test_what_is_not_an_ipv4_tcp_segment_is_none() -> None:
    udp = bytearray(reset_toward_server(REFUSED, 1))
    udp[9] = 17
    assert parse_segment(bytes(udp)) is None
    assert parse_segment(b"\x60" + b"\0" * 60) is None  # IPv6
    assert parse_segment(b"\x45\0") is None
