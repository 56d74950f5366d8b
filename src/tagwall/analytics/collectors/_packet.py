"""Endpoints of a sampled packet's first bytes: Ethernet (with 802.1Q / 802.1ad tags),
IPv4, IPv6 (walking its extension headers), and TCP/UDP/SCTP ports.

Why here: sFlow ships the first bytes of each sampled frame, not a flow record, so the
decoder must read the headers itself.  A header cut short before the addresses gives
``None``; cut short before the ports, ports 0.  Never raises: the bytes are untrusted.

Worked example: ``ff..ff | 00 11 22 33 44 55 | 81 00 00 0a | 08 00 | 45 00 ...`` is an
Ethernet frame with VLAN 10 carrying IPv4; its addresses sit at 12 and 16 bytes into the IP
header, its ports right after the IP header's ``IHL * 4`` bytes.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Endpoints", "parse_header"]

ETHERNET, IPV4, IPV6 = 1, 11, 12  # sFlow header protocol numbers
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_PORTED = (6, 17, 132, 136)  # TCP, UDP, SCTP, UDP-Lite: ports are the first 4 bytes
_V6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options
_V6_FRAGMENT = 44
_V4_MAPPED = 0xFFFF_0000_0000


class Endpoints(NamedTuple):
    """A packet's 5-tuple; addresses as 128-bit integers, IPv4 mapped (``::ffff:a.b.c.d``)."""

    src: int
    dst: int
    proto: int
    src_port: int
    dst_port: int

    @classmethod
    def of(cls, src: bytes, dst: bytes, proto: int, src_port: int, dst_port: int) -> Endpoints:
        """From 4- or 16-byte addresses."""
        return cls(_address(src), _address(dst), proto, src_port, dst_port)


def _address(raw: bytes) -> int:
    value = int.from_bytes(raw, "big")
    return value | _V4_MAPPED if len(raw) == 4 else value


def parse_header(protocol: int, header: bytes) -> Endpoints | None:
    """The endpoints of a header of sFlow ``protocol`` (1, 11 or 12), or ``None``."""
    if protocol == IPV4:
        return _ipv4(header)
    if protocol == IPV6:
        return _ipv6(header)
    if protocol != ETHERNET or len(header) < 14:
        return None
    at = 12
    ethertype = int.from_bytes(header[at : at + 2], "big")
    while ethertype in _VLAN_TYPES and len(header) >= at + 6:
        at += 4
        ethertype = int.from_bytes(header[at : at + 2], "big")
    if ethertype == 0x0800:
        return _ipv4(header[at + 2 :])
    if ethertype == 0x86DD:
        return _ipv6(header[at + 2 :])
    return None


def _ports(packet: bytes, at: int, proto: int) -> tuple[int, int]:
    if proto not in _PORTED or len(packet) < at + 4:
        return 0, 0
    return int.from_bytes(packet[at : at + 2], "big"), int.from_bytes(
        packet[at + 2 : at + 4], "big"
    )


def _ipv4(packet: bytes) -> Endpoints | None:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    proto = packet[9]
    later_fragment = (packet[6] & 0x1F) | packet[7]  # the fragment offset's 13 bits
    ports = (0, 0) if later_fragment else _ports(packet, (packet[0] & 0x0F) * 4, proto)
    src = int.from_bytes(packet[12:16], "big") | _V4_MAPPED
    dst = int.from_bytes(packet[16:20], "big") | _V4_MAPPED
    return Endpoints(src, dst, proto, *ports)


def _ipv6(packet: bytes) -> Endpoints | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    proto = packet[6]
    at = 40
    first_fragment = True
    for _ in range(8):  # a bound on extension headers: the bytes are untrusted
        if proto in _V6_EXTENSIONS and len(packet) >= at + 2:
            proto, at = packet[at], at + (packet[at + 1] + 1) * 8
        elif proto == _V6_FRAGMENT and len(packet) >= at + 8:
            first_fragment = int.from_bytes(packet[at + 2 : at + 4], "big") >> 3 == 0
            proto, at = packet[at], at + 8
        else:
            break
    ports = _ports(packet, at, proto) if first_fragment else (0, 0)
    src, dst = int.from_bytes(packet[8:24], "big"), int.from_bytes(packet[24:40], "big")
    return Endpoints(src, dst, proto, *ports)
