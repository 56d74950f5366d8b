"""sFlow v5 decoding of datagrams built by hand per the sFlow v5 spec: one record per flow
sample, scaled by its sampling rate; counter samples and unknown formats skipped."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagwall.analytics import Source
from tagwall.analytics.collectors import DecodeError, SflowDecoder

from .support import (
    FUZZ,
    addr,
    counter_sample,
    decodes_or_rejects,
    ethernet,
    flow_sample,
    mutated,
    raw_header_record,
    rows,
    sflow_datagram,
)

RECEIVED_MS = 1_790_000_000_123


def decode(*datagrams: bytes, decoder: SflowDecoder | None = None) -> list[dict[str, object]]:
    decoder = decoder or SflowDecoder()
    out: list[dict[str, object]] = []
    for datagram in datagrams:
        for batch in decoder.decode(datagram, "192.0.2.9", RECEIVED_MS).batches:
            assert (batch.source, batch.exporter) == (Source.SFLOW, "192.0.2.9")
            out += rows(batch)
    return out


def test_flow_sample_of_an_ethernet_ipv4_tcp_frame_scaled_by_the_rate() -> None:
    frame = ethernet("10.0.0.1", "10.0.0.2", 6, 40000, 443)
    (row,) = decode(sflow_datagram(flow_sample(512, raw_header_record(frame, 1514))))
    assert (row["src"], row["dst"], row["proto"], row["src_port"], row["dst_port"]) == (
        "10.0.0.1",
        "10.0.0.2",
        6,
        40000,
        443,
    )
    assert (row["packets"], row["bytes"]) == (512, 1514 * 512)
    assert (row["start_ms"], row["end_ms"]) == (RECEIVED_MS, RECEIVED_MS)


def test_expanded_flow_sample_of_a_vlan_tagged_ipv6_udp_frame() -> None:
    frame = ethernet("2001:db8::1", "2001:db8::2", 17, 5353, 53, vlan=10)
    datagram = sflow_datagram(
        flow_sample(100, raw_header_record(frame, 90), expanded=True), agent="2001:db8::9"
    )
    (row,) = decode(datagram)
    assert (row["src"], row["dst"], row["proto"], row["src_port"], row["dst_port"]) == (
        "2001:db8::1",
        "2001:db8::2",
        17,
        5353,
        53,
    )
    assert (row["packets"], row["bytes"]) == (100, 9_000)


def test_sampled_ipv4_record_serves_when_there_is_no_raw_header() -> None:
    body = struct.pack(">II4s4sIIII", 60, 17, addr("10.0.0.5"), addr("10.0.0.6"), 1, 2, 0, 0)
    record = struct.pack(">II", 3, len(body)) + body
    (row,) = decode(sflow_datagram(flow_sample(10, record)))
    assert (row["src"], row["dst"], row["src_port"], row["packets"], row["bytes"]) == (
        "10.0.0.5",
        "10.0.0.6",
        1,
        10,
        600,
    )


def test_sampled_ipv6_record() -> None:
    body = struct.pack(">II", 120, 6) + addr("2001:db8::5") + addr("2001:db8::6")
    body += struct.pack(">IIII", 443, 50000, 0x12, 0)
    record = struct.pack(">II", 4, len(body)) + body
    (row,) = decode(sflow_datagram(flow_sample(4, record)))
    assert (row["src"], row["dst"], row["src_port"], row["dst_port"], row["bytes"]) == (
        "2001:db8::5",
        "2001:db8::6",
        443,
        50000,
        480,
    )


def test_raw_ipv4_header_protocol_and_a_later_fragment_without_ports() -> None:
    frame = ethernet("10.0.0.1", "10.0.0.2", 17, 1000, 2000)
    ip = bytearray(frame[14:])
    ip[6:8] = struct.pack(">H", 100)  # fragment offset 100: no transport header
    (row,) = decode(sflow_datagram(flow_sample(1, raw_header_record(bytes(ip), 1500, 11))))
    assert (row["src"], row["proto"], row["src_port"], row["dst_port"]) == ("10.0.0.1", 17, 0, 0)


def test_counter_samples_are_skipped_and_non_ip_frames_dropped_and_counted() -> None:
    decoder = SflowDecoder()
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    frame = ethernet("10.0.0.1", "10.0.0.2", 6, 1, 2)
    datagram = sflow_datagram(
        counter_sample(),
        flow_sample(2, raw_header_record(arp)),
        flow_sample(2, raw_header_record(frame)),
        struct.pack(">II", (4413 << 12) | 1, 4) + bytes(4),  # another enterprise's sample
    )
    (batch,) = decoder.decode(datagram, "192.0.2.9", RECEIVED_MS).batches
    assert (len(batch), batch.dropped) == (1, 1)
    stats = decoder.statistics()
    assert (stats.packets, stats.records, stats.dropped, stats.skipped) == (1, 1, 1, 2)


def test_decode_many_gives_one_batch_and_counts_bad_datagrams() -> None:
    decoder = SflowDecoder()
    frames = [ethernet("10.0.0.1", "10.0.0.2", 6, port, 80) for port in range(5)]
    good = sflow_datagram(*(flow_sample(1, raw_header_record(frame)) for frame in frames))
    decoded = decoder.decode_many([good, good[:30], good], "192.0.2.9", RECEIVED_MS)
    (batch,) = decoded.batches
    assert len(batch) == 10
    assert sorted({r["src_port"] for r in rows(batch)}) == [0, 1, 2, 3, 4]
    assert sum(decoder.statistics().errors.values()) == 1


@pytest.mark.parametrize(
    ("datagram", "field"),
    [
        (b"\x00\x00\x00\x04" + sflow_datagram()[4:], "sflow.datagram.version"),
        (sflow_datagram()[:4] + b"\x00\x00\x00\x03" + bytes(24), "sflow.datagram.agent_address"),
        (sflow_datagram()[:20], "sflow.datagram.length"),
        (sflow_datagram(struct.pack(">II", 1, 400) + bytes(8)), "sflow.sample.length"),
        (
            sflow_datagram(flow_sample(1, struct.pack(">II", 1, 99) + bytes(12))),
            "sflow.flow_record.length",
        ),
    ],
)
def test_malformed_datagrams_raise_naming_the_field(datagram: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        SflowDecoder().decode(datagram, "192.0.2.9", RECEIVED_MS)
    assert caught.value.field == field


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(packet: bytes) -> None:
    decodes_or_rejects(SflowDecoder(), b"\x00\x00\x00\x05" + packet)
    decodes_or_rejects(SflowDecoder(), packet)


_VALID = [
    sflow_datagram(
        counter_sample(),
        flow_sample(3, raw_header_record(ethernet("10.0.0.1", "10.0.0.2", 6, 1, 2, vlan=4))),
        flow_sample(
            5, raw_header_record(ethernet("2001:db8::1", "2001:db8::2", 17, 3, 4)), expanded=True
        ),
    ),
]


@FUZZ
@given(mutated(_VALID))
def test_fuzz_mutated_datagrams(packet: bytes) -> None:
    decodes_or_rejects(SflowDecoder(), packet)
