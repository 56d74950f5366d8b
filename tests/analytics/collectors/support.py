"""Packets built by hand from the RFCs' layouts (struct, big-endian), for the decoders' tests,
fuzzing and benchmark.  Each builder says which layout it follows."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tagwall.analytics import FlowBatch, ip_text
from tagwall.analytics.collectors import DecodeError, Decoder

EXPORT_S = 1_790_000_000  # 2026-09-21T...Z, an export time in the tests
Field = tuple[int, int] | tuple[int, int, int]  # (element, length[, enterprise])


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# -- IPFIX (RFC 7011 §3) ---------------------------------------------------------------------


def ipfix_message(*sets: bytes, domain: int = 1, export_s: int = EXPORT_S, seq: int = 0) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_s, seq, domain) + body


def ipfix_set(set_id: int, *records: bytes, padding: int = 0) -> bytes:
    body = b"".join(records) + bytes(padding)
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def _specifiers(fields: Sequence[Field]) -> bytes:
    out = b""
    for spec in fields:
        element, length = spec[0], spec[1]
        if len(spec) == 3:
            out += struct.pack(">HHI", element | 0x8000, length, spec[2])
        else:
            out += struct.pack(">HH", element, length)
    return out


def ipfix_template(template_id: int, fields: Sequence[Field]) -> bytes:
    return struct.pack(">HH", template_id, len(fields)) + _specifiers(fields)


def ipfix_options_template(template_id: int, scope: int, fields: Sequence[Field]) -> bytes:
    return struct.pack(">HHH", template_id, len(fields), scope) + _specifiers(fields)


def varlen(value: bytes) -> bytes:
    """RFC 7011 §7: a 1-byte length below 255, else 255 and a 2-byte length."""
    if len(value) < 255:
        return bytes([len(value)]) + value
    return b"\xff" + struct.pack(">H", len(value)) + value


# softflowd-like: 44-byte records, 31 to a 1,400-byte message (the benchmark's template).
TYPICAL: list[Field] = [
    (8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (0xD2, 1),
    (1, 8), (2, 8), (152, 8), (10, 2), (14, 2),
]  # fmt: skip
TYPICAL_FORMAT = ">4s4sHHBBBBQQQHH"


def typical_record(i: int) -> bytes:
    return struct.pack(
        TYPICAL_FORMAT,
        addr(f"10.0.{i // 256 % 256}.{i % 256}"),
        addr("192.0.2.7"),
        40000 + i % 1000,
        443,
        6,
        0x18,
        0,
        0,
        1500 * (i % 7 + 1),
        i % 7 + 1,
        EXPORT_S * 1000 - i,
        1,
        2,
    )


# -- NetFlow v5 and v9 -------------------------------------------------------------------------


def v5_record(
    src: str,
    dst: str,
    packets: int,
    size: int,
    first: int,
    last: int,
    src_port: int = 0,
    dst_port: int = 0,
    proto: int = 6,
) -> bytes:
    return struct.pack(
        ">4s4s4sHHIIIIHHBBBBHHBBH",
        addr(src),
        addr(dst),
        bytes(4),
        1,
        2,
        packets,
        size,
        first,
        last,
        src_port,
        dst_port,
        0,
        0x1B,
        proto,
        0,
        0,
        0,
        24,
        24,
        0,
    )


def v5_packet(
    *records: bytes,
    uptime_ms: int = 10_000,
    secs: int = EXPORT_S,
    nsecs: int = 0,
    sampling: int = 0,
) -> bytes:
    header = struct.pack(">HHIIIIBBH", 5, len(records), uptime_ms, secs, nsecs, 0, 0, 0, sampling)
    return header + b"".join(records)


def v9_packet(
    *flowsets: bytes, source_id: int = 0, uptime_ms: int = 10_000, secs: int = EXPORT_S
) -> bytes:
    count = len(flowsets)
    return struct.pack(">HHIIII", 9, count, uptime_ms, secs, 0, source_id) + b"".join(flowsets)


def v9_template(template_id: int, fields: Sequence[tuple[int, int]]) -> bytes:
    return struct.pack(">HH", template_id, len(fields)) + _specifiers(fields)


def v9_options_template(
    template_id: int, scope: Sequence[tuple[int, int]], options: Sequence[tuple[int, int]]
) -> bytes:
    head = struct.pack(">HHH", template_id, 4 * len(scope), 4 * len(options))
    return head + _specifiers(scope) + _specifiers(options)


# -- sFlow v5 ------------------------------------------------------------------------------------


def xdr_opaque(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def ethernet(
    src: str,
    dst: str,
    proto: int,
    src_port: int,
    dst_port: int,
    *,
    vlan: int | None = None,
    payload: int = 0,
) -> bytes:
    """An Ethernet frame (802.1Q tag if ``vlan``) with an IPv4 or IPv6 header and ports."""
    v6 = ":" in src
    l4 = struct.pack(">HH", src_port, dst_port) + bytes(4 + payload)
    if v6:
        ip = struct.pack(">IHBB", 6 << 28, len(l4), proto, 64) + addr(src) + addr(dst)
        ethertype = 0x86DD
    else:
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0)
        ip += addr(src) + addr(dst)
        ethertype = 0x0800
    tag = b"" if vlan is None else struct.pack(">HH", 0x8100, vlan)
    return b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack(">H", ethertype) + ip + l4


def raw_header_record(frame: bytes, frame_length: int | None = None, protocol: int = 1) -> bytes:
    body = struct.pack(">IIII", protocol, frame_length or len(frame) + 4, 4, len(frame))
    body += xdr_opaque(frame)
    return struct.pack(">II", 1, len(body)) + body


def flow_sample(rate: int, *records: bytes, expanded: bool = False) -> bytes:
    if expanded:
        head = struct.pack(">11I", 1, 0, 7, rate, rate * 10, 0, 0, 1, 0, 2, len(records))
    else:
        head = struct.pack(">8I", 1, 7, rate, rate * 10, 0, 1, 2, len(records))
    body = head + b"".join(records)
    return struct.pack(">II", 3 if expanded else 1, len(body)) + body


def counter_sample() -> bytes:
    body = struct.pack(">III", 1, 7, 0)
    return struct.pack(">II", 2, len(body)) + body


def sflow_datagram(*samples: bytes, agent: str = "192.0.2.9") -> bytes:
    family = 2 if ":" in agent else 1
    head = (
        struct.pack(">II", 5, family) + addr(agent) + struct.pack(">IIII", 0, 1, 5000, len(samples))
    )
    return head + b"".join(samples)


# -- reading batches back --------------------------------------------------------------------


def rows(batch: FlowBatch) -> list[dict[str, Any]]:
    """The batch's records as dicts of ints (addresses as text), sorted, for equality checks."""
    out = []
    for i in range(len(batch)):
        row: dict[str, Any] = {n: int(c[i]) for n, c in batch.columns.items()}
        row["src"] = ip_text(row.pop("src_hi"), row.pop("src_lo"))
        row["dst"] = ip_text(row.pop("dst_hi"), row.pop("dst_lo"))
        out.append(row)
    return sorted(out, key=repr)


def five_tuple(row: dict[str, Any]) -> tuple[str, str, int, int, int]:
    """``(src, dst, proto, src_port, dst_port)`` of a :func:`rows` row."""
    return row["src"], row["dst"], row["proto"], row["src_port"], row["dst_port"]


# -- fuzzing -----------------------------------------------------------------------------------

# Modest and without deadline: the machine's two cores are shared.  A hang would still show
# as a test that never ends, and each decoder's loops are bounded by the packet's length.
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_BOGUS_LENGTHS = [0, 1, 2, 3, 4, 5, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]


@st.composite
def mutated(draw: st.DrawFn, packets: Sequence[bytes]) -> bytes:
    """One of ``packets`` after 1 to 4 mutations: truncation, a flipped byte, a bogus
    16- or 32-bit length written anywhere, or inserted bytes."""
    data = bytearray(draw(st.sampled_from(packets)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["truncate", "flip", "length16", "length32", "insert"]))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "length16":
            data[at : at + 2] = draw(st.sampled_from(_BOGUS_LENGTHS)).to_bytes(2, "big")
        elif kind == "length32":
            value = draw(st.sampled_from([*_BOGUS_LENGTHS, 0x7FFF_FFFF, 0xFFFF_FFFF]))
            data[at : at + 4] = value.to_bytes(4, "big")
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def decodes_or_rejects(decoder: Decoder, packet: bytes) -> None:
    """The fuzz property: ``decode`` returns well-formed batches or raises DecodeError, and
    ``decode_many`` never raises."""
    try:
        decoded = decoder.decode(packet, "192.0.2.1", EXPORT_S * 1000)
    except DecodeError as error:
        assert error.field and error.reason
    else:
        for batch in decoded.batches:
            assert all(len(column) == len(batch) for column in batch.columns.values())
            assert (batch.columns["end_ms"] >= batch.columns["start_ms"]).all()
    decoder.decode_many([packet, packet], "192.0.2.1", EXPORT_S * 1000)
