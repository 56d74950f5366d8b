"""The Internet checksum (``tagwall._checksum``) that the lab's probes, the agent's health
checks and the L7 firewall put in the packets they build."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from tagwall._checksum import internet_checksum


@given(st.binary(max_size=64))
def test_a_packet_with_its_checksum_in_place_sums_to_zero(payload: bytes) -> None:
    header = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7)
    packet = header + payload
    summed = header[:2] + struct.pack("!H", internet_checksum(packet)) + header[4:] + payload
    assert internet_checksum(summed) == 0


def test_the_rfc_1071_example() -> None:
    """RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; stored complemented."""
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
