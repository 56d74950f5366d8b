"""The Internet checksum (RFC 1071), for the few packets tagwall builds itself: the lab's
probes, the agent's ICMP health checks and the reference L7 firewall's TCP segments.  A leaf:
imports only the standard library, so even the standalone ``l7fw`` may use it."""

from __future__ import annotations

import struct

__all__ = ["internet_checksum"]


def internet_checksum(data: bytes) -> int:
    """The one's-complement sum of ``data``'s 16-bit big-endian words, complemented (an odd
    length is padded with a zero byte).  Worked example: ``45 00 00 1c … `` header bytes give
    the value to store in the IPv4 checksum field, which then sums to 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
