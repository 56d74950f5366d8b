"""Syslog decoding: RFC 5424 and RFC 3164 headers; netfilter LOG and Cisco ASA lines become
flow records, every other line a message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tagwall.analytics import Source
from tagwall.analytics.collectors import DecodeError, SyslogDecoder, SyslogMessage

from .support import FUZZ, decodes_or_rejects, mutated, rows

RECEIVED_MS = int(datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp() * 1000)
NETFILTER_TCP = (
    "tw-drop IN=eth0 OUT= MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 SRC=10.0.0.1 "
    "DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=4242 DF PROTO=TCP SPT=40000 DPT=22 "
    "WINDOW=64240 RES=0x00 SYN URGP=0"
)
NETFILTER_UDP6 = (
    "IN= OUT=eth1 SRC=2001:db8::1 DST=2001:db8::2 LEN=88 TC=0 HOPLIMIT=64 FLOWLBL=0 "
    "PROTO=UDP SPT=5353 DPT=53 LEN=48"
)


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def decode(
    decoder: SyslogDecoder, line: str
) -> tuple[list[dict[str, object]], list[SyslogMessage]]:
    decoded = decoder.decode(line.encode(), "192.0.2.3", RECEIVED_MS)
    for batch in decoded.batches:
        assert (batch.source, batch.exporter) == (Source.SYSLOG, "192.0.2.3")
    return [r for b in decoded.batches for r in rows(b)], list(decoded.messages)


def five_tuple(row: dict[str, object]) -> tuple[object, ...]:
    return row["src"], row["src_port"], row["dst"], row["dst_port"], row["proto"]


def test_netfilter_log_line_in_rfc3164_is_a_record() -> None:
    (row,), messages = decode(SyslogDecoder(), f"<4>Nov 26 10:00:05 gw kernel: {NETFILTER_TCP}")
    assert messages == []
    assert five_tuple(row) == ("10.0.0.1", 40000, "10.0.0.2", 22, 6)
    assert (row["packets"], row["bytes"]) == (1, 60)
    assert row["start_ms"] == row["end_ms"] == ms(2026, 11, 26, 10, 0, 5)
    assert (row["src_verdict"], row["dst_verdict"]) == (0, 0)


def test_netfilter_ipv6_udp_line_in_rfc5424_takes_the_ip_length() -> None:
    line = f"<12>1 2026-11-26T10:00:00.250Z gw kernel - - - {NETFILTER_UDP6}"
    (row,), _ = decode(SyslogDecoder(), line)
    assert five_tuple(row) == ("2001:db8::1", 5353, "2001:db8::2", 53, 17)
    assert row["bytes"] == 88  # the IP length, not the UDP one that follows
    assert row["start_ms"] == ms(2026, 11, 26, 10, 0) + 250


def test_asa_deny_lines_tcp_and_icmp() -> None:
    decoder = SyslogDecoder()
    tcp = (
        "<164>Nov 26 2026 10:00:00: %ASA-4-106023: Deny tcp src outside:198.51.100.7/51000 "
        'dst inside:10.0.0.5/22 by access-group "outside_in" [0x0, 0x0]'
    )
    icmp = (
        "<164>Nov 26 2026 10:00:01 asa1 : %ASA-4-106023: Deny icmp src outside:198.51.100.7 "
        'dst inside:10.0.0.5 (type 8, code 0) by access-group "outside_in" [0x0, 0x0]'
    )
    (tcp_row,), _ = decode(decoder, tcp)
    (icmp_row,), _ = decode(decoder, icmp)
    assert five_tuple(tcp_row) == ("198.51.100.7", 51000, "10.0.0.5", 22, 6)
    assert five_tuple(icmp_row) == ("198.51.100.7", 0, "10.0.0.5", 0, 1)
    assert tcp_row["start_ms"] == ms(2026, 11, 26, 10, 0)


def test_asa_built_and_teardown_oriented_by_the_initiator() -> None:
    """Inbound: the ``for`` end opened; outbound: the ``to`` end.  Teardown carries the
    bytes and the duration, oriented as its Built line was."""
    decoder = SyslogDecoder()
    built_out = (
        "<166>%ASA-6-302013: Built outbound TCP connection 77 for outside:203.0.113.9/443 "
        "(203.0.113.9/443) to inside:10.0.0.8/50000 (192.0.2.50/50000)"
    )
    teardown = (
        "<166>Nov 26 2026 10:00:30: %ASA-6-302014: Teardown TCP connection 77 for "
        "outside:203.0.113.9/443 to inside:10.0.0.8/50000 duration 0:01:05 bytes 123456 "
        "TCP FINs"
    )
    built_in = (
        "<166>%ASA-6-302013: Built inbound TCP connection 78 for outside:203.0.113.9/50001 "
        "(203.0.113.9/50001) to inside:10.0.0.8/22 (192.0.2.50/22)"
    )
    (built_row,), _ = decode(decoder, built_out)
    (teardown_row,), _ = decode(decoder, teardown)
    (inbound_row,), _ = decode(decoder, built_in)
    assert five_tuple(built_row) == ("10.0.0.8", 50000, "203.0.113.9", 443, 6)
    assert (built_row["bytes"], built_row["start_ms"]) == (0, RECEIVED_MS)
    assert five_tuple(teardown_row) == ("10.0.0.8", 50000, "203.0.113.9", 443, 6)
    assert teardown_row["bytes"] == 123456
    end = ms(2026, 11, 26, 10, 0, 30)
    assert (teardown_row["start_ms"], teardown_row["end_ms"]) == (end - 65_000, end)
    assert five_tuple(inbound_row) == ("203.0.113.9", 50001, "10.0.0.8", 22, 6)


def test_unknown_lines_are_messages_with_their_header() -> None:
    decoder = SyslogDecoder()
    _, (rfc5424,) = decode(
        decoder,
        '<165>1 2026-11-26T10:00:00+01:00 web1 nginx 4242 ID47 [ex@32473 a="x\\]y"] \ufeffhello',
    )
    assert rfc5424 == SyslogMessage(
        RECEIVED_MS, "192.0.2.3", 20, 5, ms(2026, 11, 26, 9), "web1", "nginx", "hello"
    )
    _, (rfc3164,) = decode(decoder, "<13>Nov  2 23:59:00 db2 cron[99]: job done")
    assert (rfc3164.facility, rfc3164.severity, rfc3164.hostname, rfc3164.app) == (
        1,
        5,
        "db2",
        "cron",
    )
    assert (rfc3164.timestamp_ms, rfc3164.text) == (ms(2026, 11, 2, 23, 59), "job done")
    _, (bare,) = decode(decoder, "no header at all")
    assert (bare.facility, bare.severity, bare.timestamp_ms, bare.text) == (
        1,
        5,
        None,
        "no header at all",
    )
    stats = decoder.statistics()
    assert (stats.packets, stats.records, stats.messages) == (3, 0, 3)


def test_rfc3164_time_ahead_of_receipt_is_last_year() -> None:
    _, (message,) = decode(SyslogDecoder(), "<13>Dec 31 23:00:00 h app: x")
    assert message.timestamp_ms == ms(2025, 12, 31, 23)


def test_a_bad_address_keeps_the_line_as_a_message() -> None:
    line = "<4>Nov 26 10:00:05 gw kernel: IN=eth0 OUT= SRC=10.0.0.999 DST=10.0.0.2 PROTO=TCP"
    rows_, (message,) = decode(SyslogDecoder(), line)
    assert rows_ == []
    assert message.text.startswith("IN=eth0")


@pytest.mark.parametrize(("packet", "field"), [(b"", "syslog"), (b"<999>x", "syslog.pri")])
def test_empty_datagram_and_bad_pri_raise(packet: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        SyslogDecoder().decode(packet, "192.0.2.3", RECEIVED_MS)
    assert caught.value.field == field


def test_decode_many_batches_records_and_keeps_messages_in_order() -> None:
    decoder = SyslogDecoder()
    lines = [f"<4>kernel: {NETFILTER_TCP}", "<13>one", "", f"<4>{NETFILTER_UDP6}", "<13>two"]
    decoded = decoder.decode_many([x.encode() for x in lines], "192.0.2.3", RECEIVED_MS)
    (batch,) = decoded.batches
    assert len(batch) == 2
    assert [m.text for m in decoded.messages] == ["one", "two"]
    assert decoder.statistics().errors == {"syslog: empty datagram": 1}


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(packet: bytes) -> None:
    decodes_or_rejects(SyslogDecoder(), packet)


_VALID = [
    f"<4>Nov 26 10:00:05 gw kernel: {NETFILTER_TCP}".encode(),
    f'<12>1 2026-11-26T10:00:00.250Z gw kernel - - [a b="c"] {NETFILTER_UDP6}'.encode(),
    b"<164>Nov 26 2026 10:00:00: %ASA-4-106023: Deny tcp src outside:1.2.3.4/5 dst in:5.6.7.8/80",
    b"<166>%ASA-6-302014: Teardown TCP connection 7 for o:1.2.3.4/5 to i:5.6.7.8/80 duration "
    b"0:00:01 bytes 9 TCP FINs",
]


@FUZZ
@given(mutated(_VALID))
@example(b"<4>kernel: IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 PROTO=TC\x00\x05SPT=1")
@example(b"<166>%ASA-6-302013: Built inbound TCP connection 7 for o:1.2.3.4/5 to i:5.6.7.8/99999")
@example(b"<4>kernel: IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=-1 PROTO=TCP SPT=1 DPT=-2")
def test_fuzz_mutated_lines(packet: bytes) -> None:
    decodes_or_rejects(SyslogDecoder(), packet)
