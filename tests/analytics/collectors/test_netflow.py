"""NetFlow v5 and v9 (RFC 3954) decoding of packets built by hand, and the port-2055
dispatcher that tells them apart."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagwall.analytics import Source
from tagwall.analytics.collectors import (
    DecodeError,
    Netflow5Decoder,
    Netflow9Decoder,
    NetflowDecoder,
)

from .support import (
    EXPORT_S,
    FUZZ,
    addr,
    decodes_or_rejects,
    mutated,
    rows,
    v5_packet,
    v5_record,
    v9_options_template,
    v9_packet,
    v9_template,
)

BOOT_MS = EXPORT_S * 1000 - 10_000  # sysUptime 10,000 ms at the export time
V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4)]


def v9_record(src: str, dst: str, packets: int, size: int, first: int, last: int) -> bytes:
    return struct.pack(
        ">4s4sHHBIIII", addr(src), addr(dst), 1234, 80, 6, packets, size, first, last
    )


def flowset(flowset_id: int, *records: bytes) -> bytes:
    body = b"".join(records)
    body += bytes(-len(body) % 4)
    return struct.pack(">HH", flowset_id, 4 + len(body)) + body


def test_v5_records_with_times_from_sysuptime() -> None:
    decoder = Netflow5Decoder()
    packet = v5_packet(
        v5_record("10.0.0.1", "10.0.0.2", 4, 400, 2_000, 9_000, 40000, 443),
        v5_record("10.0.0.2", "10.0.0.1", 3, 3_000, 2_500, 9_500, 443, 40000),
        nsecs=250_000_000,
    )
    (batch,) = decoder.decode(packet, "192.0.2.5", 0).batches
    assert (batch.source, batch.exporter) == (Source.NETFLOW5, "192.0.2.5")
    boot = BOOT_MS + 250
    assert [
        (
            r["src"],
            r["src_port"],
            r["dst"],
            r["dst_port"],
            r["proto"],
            r["packets"],
            r["bytes"],
            r["start_ms"],
            r["end_ms"],
        )
        for r in rows(batch)
    ] == [
        ("10.0.0.1", 40000, "10.0.0.2", 443, 6, 4, 400, boot + 2_000, boot + 9_000),
        ("10.0.0.2", 443, "10.0.0.1", 40000, 6, 3, 3_000, boot + 2_500, boot + 9_500),
    ]
    assert decoder.statistics().records == 2


def test_v5_first_and_last_before_a_sysuptime_wrap() -> None:
    """sysUptime wrapped (32-bit ms) since the flow started: First/Last above the header's
    sysUptime were counted before the wrap."""
    record = v5_record("10.0.0.1", "10.0.0.2", 1, 1, 2**32 - 3_000, 2**32 - 1_000)
    packet = v5_packet(record, uptime_ms=500)
    (row,) = rows(Netflow5Decoder().decode(packet, "192.0.2.5", 0).batches[0])
    export_ms = EXPORT_S * 1000
    assert (row["start_ms"], row["end_ms"]) == (export_ms - 3_500, export_ms - 1_500)


def test_v5_sampling_interval_in_the_header_scales_the_counters() -> None:
    decoder = Netflow5Decoder()
    packet = v5_packet(v5_record("10.0.0.1", "10.0.0.2", 2, 200, 0, 0), sampling=(1 << 14) | 10)
    (row,) = rows(decoder.decode(packet, "192.0.2.5", 0).batches[0])
    assert (row["packets"], row["bytes"]) == (20, 2_000)


def test_v5_count_beyond_the_packet_is_an_error() -> None:
    packet = v5_packet(v5_record("10.0.0.1", "10.0.0.2", 1, 1, 0, 0))
    bad = packet[:2] + struct.pack(">H", 2) + packet[4:]
    with pytest.raises(DecodeError) as caught:
        Netflow5Decoder().decode(bad, "192.0.2.5", 0)
    assert caught.value.field == "netflow5.header.count"


def test_v9_template_then_data_times_from_the_header() -> None:
    decoder = Netflow9Decoder()
    decoder.decode(v9_packet(flowset(0, v9_template(256, V9_FIELDS))), "192.0.2.6", 0)
    packet = v9_packet(
        flowset(256, v9_record("10.0.0.1", "10.0.0.2", 5, 500, 1_000, 8_000)),
    )
    (batch,) = decoder.decode(packet, "192.0.2.6", 0).batches
    (row,) = rows(batch)
    assert batch.source is Source.NETFLOW9
    assert (row["src"], row["dst"], row["packets"], row["bytes"]) == (
        "10.0.0.1",
        "10.0.0.2",
        5,
        500,
    )
    assert (row["start_ms"], row["end_ms"]) == (BOOT_MS + 1_000, BOOT_MS + 8_000)


def test_v9_templates_are_per_exporter_and_source_id() -> None:
    decoder = Netflow9Decoder()
    swapped = [(12, 4), (8, 4), (2, 4)]
    plain = [(8, 4), (12, 4), (2, 4)]
    decoder.decode(v9_packet(flowset(0, v9_template(256, plain)), source_id=1), "A", 0)
    decoder.decode(v9_packet(flowset(0, v9_template(256, swapped)), source_id=2), "A", 0)
    record = struct.pack(">4s4sI", addr("10.0.0.1"), addr("10.0.0.2"), 7)
    got = []
    for source_id in (1, 2, 3):
        decoded = decoder.decode(v9_packet(flowset(256, record), source_id=source_id), "A", 0)
        got += [(source_id, r["src"], r["dst"]) for b in decoded.batches for r in rows(b)]
    decoded = decoder.decode(v9_packet(flowset(256, record), source_id=1), "B", 0)
    assert decoded.batches == ()
    assert got == [(1, "10.0.0.1", "10.0.0.2"), (2, "10.0.0.2", "10.0.0.1")]
    assert decoder.statistics().skipped == 2  # source id 3 and exporter B: no template


def test_v9_options_sampling_interval_and_data_before_template() -> None:
    decoder = Netflow9Decoder()
    record = v9_record("10.0.0.1", "10.0.0.2", 2, 100, 0, 0)
    assert decoder.decode(v9_packet(flowset(256, record)), "E", 0).batches == ()
    packet = v9_packet(
        flowset(1, v9_options_template(300, [(1, 4)], [(34, 4)])),
        flowset(300, struct.pack(">II", 0, 64)),
        flowset(0, v9_template(256, V9_FIELDS)),
        flowset(256, record),
    )
    (row,) = rows(decoder.decode(packet, "E", 0).batches[0])
    assert (row["packets"], row["bytes"]) == (128, 6_400)
    stats = decoder.statistics()
    assert (stats.skipped, stats.templates, stats.records) == (2, 2, 1)  # data set, options


def test_v9_ipv6_template() -> None:
    decoder = Netflow9Decoder()
    packet = v9_packet(
        flowset(0, v9_template(256, [(27, 16), (28, 16), (2, 4)])),
        flowset(256, addr("2001:db8::a") + addr("2001:db8::b") + struct.pack(">I", 9)),
    )
    (row,) = rows(decoder.decode(packet, "E", 0).batches[0])
    assert (row["src"], row["dst"], row["packets"]) == ("2001:db8::a", "2001:db8::b", 9)


@pytest.mark.parametrize(
    ("packet", "field"),
    [
        (v9_packet()[:10], "netflow9.header"),
        (v9_packet(struct.pack(">HH", 256, 40)), "netflow9.flowset.length"),
        (v9_packet(flowset(0, struct.pack(">HHHH", 256, 2, 8, 4))), "netflow9.template.fields"),
        (v9_packet(flowset(0, struct.pack(">HHHH", 7, 1, 8, 4))), "netflow9.template.id"),
        (v9_packet(flowset(1, struct.pack(">HHH", 300, 3, 4))), "netflow9.options.length"),
        (v9_packet(flowset(0, struct.pack(">HH", 256, 0))), "template.fields"),
    ],
)
def test_v9_malformed_packets_raise_naming_the_field(packet: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        Netflow9Decoder().decode(packet, "E", 0)
    assert caught.value.field == field


def test_dispatcher_picks_v5_or_v9_by_version_and_rejects_others() -> None:
    decoder = NetflowDecoder()
    v5 = v5_packet(v5_record("10.0.0.1", "10.0.0.2", 1, 10, 0, 0))
    v9 = v9_packet(
        flowset(0, v9_template(256, V9_FIELDS)),
        flowset(256, v9_record("10.0.0.3", "10.0.0.4", 2, 20, 0, 0)),
    )
    assert [b.source for b in decoder.decode(v5, "E", 0).batches] == [Source.NETFLOW5]
    assert [b.source for b in decoder.decode(v9, "E", 0).batches] == [Source.NETFLOW9]
    with pytest.raises(DecodeError) as caught:
        decoder.decode(b"\x00\x0a" + v9[2:], "E", 0)
    assert caught.value.field == "netflow.header.version"
    decoded = decoder.decode_many([v5, v9, b"\x00\x07", v5], "E", 0)
    assert sorted((b.source.value, len(b)) for b in decoded.batches) == [
        ("netflow5", 2),
        ("netflow9", 1),
    ]
    stats = decoder.statistics()
    assert (stats.packets, stats.records, stats.templates) == (7, 5, 1)
    assert stats.errors == {"netflow.header.version: not 5 or 9": 2}


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(packet: bytes) -> None:
    decodes_or_rejects(NetflowDecoder(), packet)
    decodes_or_rejects(NetflowDecoder(), b"\x00\x09" + packet)
    decodes_or_rejects(NetflowDecoder(), b"\x00\x05" + packet)


_VALID = [
    v5_packet(*(v5_record("10.0.0.1", "10.0.0.2", i, i, 0, i) for i in range(3))),
    v9_packet(
        flowset(1, v9_options_template(300, [(1, 4)], [(34, 4)])),
        flowset(300, struct.pack(">II", 0, 64)),
        flowset(0, v9_template(256, V9_FIELDS)),
        flowset(256, v9_record("10.0.0.1", "10.0.0.2", 2, 100, 0, 0)),
    ),
]


@FUZZ
@given(mutated(_VALID), st.booleans())
def test_fuzz_mutated_packets(packet: bytes, primed: bool) -> None:
    decoder = NetflowDecoder()
    if primed:
        decoder.decode_many(_VALID, "192.0.2.1", 0)
    decodes_or_rejects(decoder, packet)
