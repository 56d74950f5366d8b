"""IPFIX decoding (RFC 7011) of messages built by hand: templates, options, withdrawal,
variable-length and enterprise fields, IPv6, per-domain template state, malformed input, and
bursts (a receive buffer's datagrams) decoded as the same messages one by one."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagwall.analytics import Source
from tagwall.analytics.collectors import Burst, Decoded, DecodeError, IpfixDecoder

from .support import (
    EXPORT_S,
    FUZZ,
    TYPICAL,
    Field,
    addr,
    decodes_or_rejects,
    ipfix_message,
    ipfix_options_template,
    ipfix_set,
    ipfix_template,
    mutated,
    rows,
    typical_record,
    varlen,
)

V4_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 8), (1, 8), (152, 8), (153, 8)]
START_MS = EXPORT_S * 1000 - 5_000


def v4_record(src: str, dst: str, sport: int, dport: int, packets: int, size: int) -> bytes:
    return struct.pack(
        ">4s4sHHBQQQQ",
        addr(src),
        addr(dst),
        sport,
        dport,
        17,
        packets,
        size,
        START_MS,
        START_MS + 1_000,
    )


def decode(decoder: IpfixDecoder, *messages: bytes) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for message in messages:
        for batch in decoder.decode(message, "192.0.2.1", 0).batches:
            assert (batch.source, batch.exporter) == (Source.IPFIX, "192.0.2.1")
            out += rows(batch)
    return out


def test_template_then_data_gives_the_records_fields() -> None:
    decoder = IpfixDecoder()
    template = ipfix_message(ipfix_set(2, ipfix_template(256, V4_FIELDS)))
    data = ipfix_message(
        ipfix_set(
            256,
            v4_record("10.0.0.1", "10.0.0.2", 5353, 53, 3, 210),
            v4_record("10.0.0.3", "10.0.0.2", 5354, 53, 1, 70),
            padding=3,
        )
    )
    got = decode(decoder, template, data)
    assert [(r["src"], r["dst"], r["src_port"], r["dst_port"], r["proto"]) for r in got] == [
        ("10.0.0.1", "10.0.0.2", 5353, 53, 17),
        ("10.0.0.3", "10.0.0.2", 5354, 53, 17),
    ]
    assert [(r["packets"], r["bytes"], r["rpackets"], r["rbytes"]) for r in got] == [
        (3, 210, 0, 0),
        (1, 70, 0, 0),
    ]
    assert {(r["start_ms"], r["end_ms"]) for r in got} == {(START_MS, START_MS + 1_000)}
    stats = decoder.statistics()
    assert (stats.packets, stats.records, stats.templates, stats.errors) == (2, 2, 1, {})


def test_data_before_its_template_is_skipped_and_counted_then_decoded() -> None:
    decoder = IpfixDecoder()
    data = ipfix_message(ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 1, 1)))
    assert decode(decoder, data) == []
    assert decoder.statistics().skipped == 1
    decode(decoder, ipfix_message(ipfix_set(2, ipfix_template(256, V4_FIELDS))))
    assert [r["src"] for r in decode(decoder, data)] == ["10.0.0.1"]


def test_templates_are_per_exporter_and_observation_domain() -> None:
    """Same template id 256, three layouts: exporter A domain 1, A domain 2, B domain 1."""
    decoder = IpfixDecoder()
    layouts = {
        ("A", 1): [(8, 4), (12, 4), (2, 4)],
        ("A", 2): [(12, 4), (8, 4), (2, 2)],
        ("B", 1): [(2, 8), (8, 4), (12, 4)],
    }
    records = {
        ("A", 1): struct.pack(">4s4sI", addr("10.1.0.1"), addr("10.1.0.2"), 11),
        ("A", 2): struct.pack(">4s4sH", addr("10.2.0.2"), addr("10.2.0.1"), 22),
        ("B", 1): struct.pack(">Q4s4s", 33, addr("10.3.0.1"), addr("10.3.0.2")),
    }
    for (exporter, domain), fields in layouts.items():
        message = ipfix_message(ipfix_set(2, ipfix_template(256, fields)), domain=domain)
        decoder.decode(message, exporter, 0)
    got = set()
    for (exporter, domain), record in records.items():
        message = ipfix_message(ipfix_set(256, record), domain=domain)
        (batch,) = decoder.decode(message, exporter, 0).batches
        got |= {(exporter, r["src"], r["dst"], r["packets"]) for r in rows(batch)}
    assert got == {
        ("A", "10.1.0.1", "10.1.0.2", 11),
        ("A", "10.2.0.1", "10.2.0.2", 22),
        ("B", "10.3.0.1", "10.3.0.2", 33),
    }
    assert decoder.statistics().templates == 3


def test_options_boot_time_places_sysuptime_relative_times() -> None:
    """systemInitTimeMilliseconds (160) from an options record; flowStart/EndSysUpTime
    (22/21) are ms after it."""
    boot_ms = EXPORT_S * 1000 - 3_600_000
    decoder = IpfixDecoder()
    message = ipfix_message(
        ipfix_set(3, ipfix_options_template(300, 1, [(149, 4), (160, 8)])),
        ipfix_set(300, struct.pack(">IQ", 1, boot_ms)),
        ipfix_set(2, ipfix_template(256, [(8, 4), (12, 4), (22, 4), (21, 4)])),
        ipfix_set(256, struct.pack(">4s4sII", addr("10.0.0.1"), addr("10.0.0.2"), 1_000, 4_000)),
    )
    (row,) = decode(decoder, message)
    assert (row["start_ms"], row["end_ms"]) == (boot_ms + 1_000, boot_ms + 4_000)
    assert decoder.statistics().skipped == 1  # the options record: no flow


def test_an_implausible_boot_time_is_ignored() -> None:
    """A boot time beyond int64 ms arithmetic: SysUpTime times fall back to the export time."""
    decoder = IpfixDecoder()
    message = ipfix_message(
        ipfix_set(3, ipfix_options_template(300, 1, [(149, 4), (160, 8)])),
        ipfix_set(300, struct.pack(">IQ", 1, 2**64 - 1)),
        ipfix_set(2, ipfix_template(256, [(8, 4), (12, 4), (22, 4), (21, 4)])),
        ipfix_set(256, struct.pack(">4s4sII", addr("10.0.0.1"), addr("10.0.0.2"), 1, 2)),
    )
    (row,) = decode(decoder, message)
    assert (row["start_ms"], row["end_ms"]) == (EXPORT_S * 1000, EXPORT_S * 1000)


def test_options_sampling_interval_scales_the_counters() -> None:
    decoder = IpfixDecoder()
    message = ipfix_message(
        ipfix_set(3, ipfix_options_template(300, 1, [(149, 4), (34, 4)])),
        ipfix_set(300, struct.pack(">II", 1, 100)),
        ipfix_set(2, ipfix_template(256, V4_FIELDS)),
        ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 3, 300)),
    )
    (row,) = decode(decoder, message)
    assert (row["packets"], row["bytes"]) == (300, 30_000)


def test_withdrawal_of_one_template_and_of_all() -> None:
    decoder = IpfixDecoder()
    templates = ipfix_message(
        ipfix_set(2, ipfix_template(256, V4_FIELDS), ipfix_template(257, V4_FIELDS)),
        ipfix_set(3, ipfix_options_template(300, 1, [(149, 4), (34, 4)])),
    )
    data = ipfix_message(
        ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 1, 1)),
        ipfix_set(257, v4_record("10.0.0.3", "10.0.0.4", 1, 2, 1, 1)),
    )
    decode(decoder, templates)
    assert len(decode(decoder, data)) == 2
    decode(decoder, ipfix_message(ipfix_set(2, struct.pack(">HH", 256, 0))))
    assert [r["src"] for r in decode(decoder, data)] == ["10.0.0.3"]
    decode(decoder, templates)
    decode(decoder, ipfix_message(ipfix_set(2, struct.pack(">HH", 2, 0))))
    assert decode(decoder, data) == []
    assert decoder.statistics().templates == 1  # the options template stays
    decode(decoder, ipfix_message(ipfix_set(3, struct.pack(">HH", 3, 0))))
    assert decoder.statistics().templates == 0


def test_variable_length_fields_both_length_forms() -> None:
    """interfaceName (82) as a variable-length field, short and long form, between fixed
    fields."""
    decoder = IpfixDecoder()
    fields = [(8, 4), (82, 0xFFFF), (12, 4), (2, 4)]
    records = [
        addr("10.0.0.1") + varlen(b"eth0") + addr("10.0.0.2") + struct.pack(">I", 5),
        addr("10.0.0.3") + varlen(b"x" * 300) + addr("10.0.0.4") + struct.pack(">I", 6),
        addr("10.0.0.5") + b"\xff\x00\x01y" + addr("10.0.0.6") + struct.pack(">I", 7),
    ]
    got = decode(
        decoder,
        ipfix_message(ipfix_set(2, ipfix_template(256, fields)), ipfix_set(256, *records)),
    )
    assert [(r["src"], r["dst"], r["packets"]) for r in got] == [
        ("10.0.0.1", "10.0.0.2", 5),
        ("10.0.0.3", "10.0.0.4", 6),
        ("10.0.0.5", "10.0.0.6", 7),
    ]


def test_variable_length_field_past_the_set_is_an_error() -> None:
    decoder = IpfixDecoder()
    fields = [(8, 4), (82, 0xFFFF), (12, 4)]
    record = addr("10.0.0.1") + bytes([200]) + b"short" + addr("10.0.0.2")
    message = ipfix_message(ipfix_set(2, ipfix_template(256, fields)), ipfix_set(256, record))
    with pytest.raises(DecodeError) as caught:
        decoder.decode(message, "192.0.2.1", 0)
    assert caught.value.field == "data.record"
    assert decoder.statistics().errors == {"data.record: record runs past the set": 1}


def test_enterprise_fields_are_skipped_and_rfc5103_reverse_counters_read() -> None:
    decoder = IpfixDecoder()
    fields: list[Field] = [
        (8, 4), (100, 6, 9), (12, 4), (1, 8), (1, 8, 29305), (2, 4), (2, 4, 29305)
    ]  # fmt: skip
    record = (
        addr("10.0.0.1") + b"vendor" + addr("10.0.0.2") + struct.pack(">QQII", 1000, 20000, 4, 9)
    )
    message = ipfix_message(ipfix_set(2, ipfix_template(256, fields)), ipfix_set(256, record))
    (row,) = decode(decoder, message)
    assert (row["src"], row["dst"]) == ("10.0.0.1", "10.0.0.2")
    assert (row["bytes"], row["packets"], row["rbytes"], row["rpackets"]) == (1000, 4, 20000, 9)


def test_ipv6_addresses_and_time_encodings() -> None:
    """IPv6 (27/28); seconds (150/151) in one template, NTP microseconds (154/155) in
    another; reduced-size counters (3 bytes)."""
    decoder = IpfixDecoder()
    ntp_s = EXPORT_S + 2_208_988_800
    half = 1 << 31  # 0.5 s as an NTP fraction
    message = ipfix_message(
        ipfix_set(2, ipfix_template(256, [(27, 16), (28, 16), (150, 4), (151, 4), (1, 3)])),
        ipfix_set(2, ipfix_template(257, [(27, 16), (28, 16), (154, 8), (155, 8)])),
        ipfix_set(
            256,
            addr("2001:db8::1")
            + addr("2001:db8::2")
            + struct.pack(">II", EXPORT_S - 9, EXPORT_S)
            + (70_000).to_bytes(3, "big"),
        ),
        ipfix_set(
            257,
            addr("2001:db8::3")
            + addr("2001:db8::4")
            + struct.pack(">QQ", (ntp_s - 1) << 32, (ntp_s << 32) | half),
        ),
    )
    got = {r["src"]: r for r in decode(decoder, message)}
    assert got["2001:db8::1"]["dst"] == "2001:db8::2"
    assert got["2001:db8::1"]["bytes"] == 70_000
    assert (got["2001:db8::1"]["start_ms"], got["2001:db8::1"]["end_ms"]) == (
        (EXPORT_S - 9) * 1000,
        EXPORT_S * 1000,
    )
    assert (got["2001:db8::3"]["start_ms"], got["2001:db8::3"]["end_ms"]) == (
        (EXPORT_S - 1) * 1000,
        EXPORT_S * 1000 + 500,
    )


def test_records_without_addresses_are_dropped_and_counted() -> None:
    decoder = IpfixDecoder()
    message = ipfix_message(
        ipfix_set(2, ipfix_template(256, [(8, 4), (2, 4)])),
        ipfix_set(256, bytes(8), bytes(8), bytes(8)),
    )
    (batch,) = decoder.decode(message, "192.0.2.1", 0).batches
    assert (len(batch), batch.dropped) == (0, 3)  # the store counts FlowBatch.dropped
    assert decoder.statistics().dropped == 3


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (b"\x00\x0a\x00", "ipfix.header"),
        (ipfix_message()[:2] + b"\x00\x20" + ipfix_message()[4:], "ipfix.header.length"),
        (b"\x00\x09" + ipfix_message()[2:], "ipfix.header.version"),
        (ipfix_message(struct.pack(">HH", 256, 40) + bytes(8)), "ipfix.set.length"),
        (ipfix_message(struct.pack(">HH", 256, 2)), "ipfix.set.length"),
        (ipfix_message(ipfix_set(2, struct.pack(">HHHH", 256, 3, 8, 4))), "ipfix.template.field"),
        (ipfix_message(ipfix_set(2, struct.pack(">HHHH", 5, 1, 8, 4))), "ipfix.template.id"),
        (ipfix_message(ipfix_set(3, struct.pack(">HHH", 300, 2, 0))), "ipfix.options.scope_count"),
        (
            ipfix_message(ipfix_set(2, ipfix_template(256, [(8, 4), (12, 65534)]))),
            "template.fields",
        ),
    ],
)
def test_malformed_messages_raise_naming_the_field(message: bytes, field: str) -> None:
    decoder = IpfixDecoder()
    with pytest.raises(DecodeError) as caught:
        decoder.decode(message, "192.0.2.1", 0)
    assert caught.value.field == field
    assert sum(decoder.statistics().errors.values()) == 1


def test_decode_many_equals_decoding_one_by_one_and_skips_bad_packets() -> None:
    template = ipfix_message(ipfix_set(2, ipfix_template(256, TYPICAL)))
    data = [ipfix_message(ipfix_set(256, *map(typical_record, range(i, i + 31)))) for i in (0, 31)]
    one_by_one = IpfixDecoder()
    expected = decode(one_by_one, template, *data)
    many = IpfixDecoder()
    decoded = many.decode_many([template, data[0], b"junk", data[1]], "192.0.2.1", 0)
    (batch,) = decoded.batches  # one template: one batch
    assert rows(batch) == sorted(expected, key=repr)
    assert len(expected) == 62
    stats = many.statistics()
    assert (stats.packets, stats.records, sum(stats.errors.values())) == (4, 62, 1)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(packet: bytes) -> None:
    decodes_or_rejects(IpfixDecoder(), packet)


_VALID = [
    ipfix_message(ipfix_set(2, ipfix_template(256, TYPICAL)), ipfix_set(256, typical_record(1))),
    ipfix_message(
        ipfix_set(3, ipfix_options_template(300, 1, [(149, 4), (160, 8)])),
        ipfix_set(300, struct.pack(">IQ", 1, 5)),
        ipfix_set(2, ipfix_template(257, [(8, 4), (82, 0xFFFF), (12, 4), (100, 2, 9)])),
        ipfix_set(257, addr("10.0.0.1") + varlen(b"eth0") + addr("10.0.0.2") + b"ab"),
    ),
    ipfix_message(ipfix_set(2, struct.pack(">HH", 2, 0)), ipfix_set(3, struct.pack(">HH", 300, 0))),
]


@FUZZ
@given(mutated(_VALID), st.booleans())
def test_fuzz_mutated_messages(packet: bytes, primed: bool) -> None:
    """Mutations of valid messages, to a fresh decoder or one that knows the templates."""
    decoder = IpfixDecoder()
    if primed:
        decoder.decode_many(_VALID, "192.0.2.1", 0)
    decodes_or_rejects(decoder, packet)


_ELEMENTS = [1, 2, 4, 7, 8, 11, 12, 21, 22, 27, 28, 34, 82, 85, 86, 150, 151, 152, 153, 154]
_ELEMENTS += [155, 158, 159, 160, 305, 306]
_LENGTHS = [0, 1, 2, 3, 4, 5, 8, 16, 17, 255, 0xFFFF]


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(_ELEMENTS), st.sampled_from(_LENGTHS)), min_size=1, max_size=10
    ),
    st.binary(max_size=300),
    st.booleans(),
)
def test_fuzz_any_template_with_any_data(
    fields: list[tuple[int, int]], data: bytes, options: bool
) -> None:
    """Any layout of the elements read, as a data or an options template, then any bytes
    as its data; options may set any boot time or sampling rate for a SysUpTime template."""
    if options:
        template = ipfix_set(3, ipfix_options_template(256, 1, fields))
    else:
        template = ipfix_set(2, ipfix_template(256, fields))
    uptime = ipfix_template(257, [(8, 4), (12, 4), (22, 4), (21, 4), (2, 4)])
    message = ipfix_message(
        template,
        ipfix_set(256, data),
        ipfix_set(2, uptime),
        ipfix_set(257, data[:20].ljust(20, b"\xff")),
    )
    decodes_or_rejects(IpfixDecoder(), message)


# -- bursts ------------------------------------------------------------------------------------


def _typical_data(count: int, first: int = 0, *, domain: int = 1, padding: int = 0) -> bytes:
    records = map(typical_record, range(first, first + count))
    return ipfix_message(ipfix_set(256, *records, padding=padding), domain=domain)


_TYPICAL_TEMPLATE = ipfix_message(ipfix_set(2, ipfix_template(256, TYPICAL)))
_V4_TEMPLATE = ipfix_message(ipfix_set(2, ipfix_template(256, V4_FIELDS)))
_SAMPLING = ipfix_message(
    ipfix_set(3, ipfix_options_template(300, 1, [(149, 4), (34, 4)])),
    ipfix_set(300, struct.pack(">II", 1, 10)),
)
_WITHDRAW = ipfix_message(ipfix_set(2, struct.pack(">HH", 256, 0)))


def _result(decoded: Decoded) -> list[tuple[object, ...]]:
    """Every batch in order, with its columns in record order (not sorted)."""
    return [
        (b.source, b.exporter, b.dropped, b.rules, {n: c.tolist() for n, c in b.columns.items()})
        for b in decoded.batches
    ]


def _burst_equals_one_by_one(messages: Sequence[bytes], primer: Sequence[bytes] = ()) -> None:
    by_message, by_burst = IpfixDecoder(), IpfixDecoder()
    for decoder in (by_message, by_burst):
        decoder.decode_many(primer, "192.0.2.1", 0)
    expected = by_message.decode_many(list(messages), "192.0.2.1", 0)
    got = by_burst.decode_many(Burst.of(messages), "192.0.2.1", 0)
    assert _result(got) == _result(expected)
    assert by_burst.statistics() == by_message.statistics()


def test_a_burst_decodes_as_its_messages_one_by_one() -> None:
    """Messages the burst path reads in bulk (one data set of a known fixed template) and
    the ones it hands to the per-message path, interleaved: templates learnt and redefined
    mid-burst, sampling options, a withdrawal, another domain, unknown templates, padding,
    trailing bytes, fewer records than the others, junk."""
    v4 = ipfix_message(ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 53, 2, 100)))
    other_domain = ipfix_message(ipfix_set(2, ipfix_template(256, TYPICAL)), domain=7)
    messages = [
        _typical_data(3),  # before its template: skipped
        _TYPICAL_TEMPLATE,
        _typical_data(30),
        _typical_data(30, 30, padding=5),
        _typical_data(7, 60) + b"trailing bytes",
        _typical_data(0),
        b"junk",
        _typical_data(30, 90, domain=7),  # that domain's template comes later
        other_domain,
        _typical_data(12, 120, domain=7),
        _SAMPLING,
        _typical_data(30, 200),  # scaled by 10 from here
        _V4_TEMPLATE,  # 256 redefined: the next data set is read with the new layout
        v4,
        _typical_data(2, 300)[:-9],  # truncated
        _WITHDRAW,
        v4,  # its template withdrawn: skipped
    ]
    _burst_equals_one_by_one(messages)
    decoder = IpfixDecoder()
    decoded = decoder.decode_many(Burst.of(messages), "192.0.2.1", 0)
    assert [len(b) for b in decoded.batches] == [30 + 30 + 7 + 30, 12, 1]
    assert decoded.batches[0].columns["packets"][-1] == 10 * (229 % 7 + 1)


def test_a_burst_of_datagrams_shorter_than_a_header_is_counted_as_errors() -> None:
    """The receive buffer of a burst of tiny datagrams is as narrow as they are."""
    burst = Burst(np.zeros((3, 5), np.uint8), np.arange(3), np.array([0, 3, 5]))
    decoder = IpfixDecoder()
    assert decoder.decode_many(burst, "192.0.2.1", 0) == Decoded()
    assert decoder.statistics().errors == {"ipfix.header: shorter than 16 bytes": 3}


def test_a_burst_of_messages_with_different_record_counts_keeps_their_order() -> None:
    """Records come out message after message, however many each carries."""
    messages = [_TYPICAL_TEMPLATE] + [_typical_data(n, 100 * n) for n in (31, 1, 17, 31, 0, 5)]
    _burst_equals_one_by_one(messages)
    (batch,) = IpfixDecoder().decode_many(Burst.of(messages), "192.0.2.1", 0).batches
    expected_ports = [
        40000 + i % 1000 for n in (31, 1, 17, 31, 0, 5) for i in range(100 * n, 101 * n)
    ]
    assert batch.columns["src_port"].tolist() == expected_ports


_BURSTS = [*_VALID, _typical_data(4), _typical_data(1, domain=2), _V4_TEMPLATE, _WITHDRAW]


@FUZZ
@given(
    st.lists(
        st.one_of(st.sampled_from(_BURSTS), mutated(_BURSTS)),
        max_size=12,
    ),
    st.booleans(),
)
def test_fuzz_a_burst_decodes_as_its_messages_one_by_one(
    messages: list[bytes], primed: bool
) -> None:
    """Any mix of messages and their mutations, to a fresh decoder or one that knows the
    data template and a sampling rate."""
    _burst_equals_one_by_one(messages, [_TYPICAL_TEMPLATE, _SAMPLING] if primed else [])
