"""The ctnetlink decoder on its own: one message decodes to its event, garbled or truncated
bytes to None; a run of DESTROY messages decoded column by column is what decoding each
message says, for any messages, and the columns are used where the layout repeats."""

from __future__ import annotations

import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tagwall.agent._ctdecode import (
    ConntrackBatch,
    ConntrackEvent,
    EventKind,
    FiveTuple,
    decode,
    decode_destroys,
)

from .support import attr, message, messages

DESTROY = EventKind.DESTROY


def each(run: list[bytes], observed_ns: int = 5) -> list[ConntrackEvent | None]:
    return [decode(DESTROY, data, observed_ns) for data in run]


def agrees(run: list[bytes], min_columnar: int = 1) -> ConntrackBatch:
    """Asserts the batch is what ``decode`` of each message says; returns it."""
    batch = decode_destroys(run, 5, min_columnar=min_columnar)
    expected = each(run)
    assert batch.events() == [e for e in expected if e is not None]
    assert batch.malformed == expected.count(None)
    assert len(batch) == len(run) - batch.malformed
    return batch


def test_a_repeated_layout_is_decoded_as_columns() -> None:
    """Twenty TCP/IPv4 DESTROYs differing in their values: one group of columns, nothing
    walked, and each event as ``decode`` makes it."""
    run = [
        message(ct_id=i, ports=(40000 + i, 80), counters=(i, 60 * i, 2 * i, 2**64 - 1 - i))
        for i in range(20)
    ]
    batch = agrees(run, min_columnar=8)
    assert (len(batch.groups), batch.others, len(batch.groups[0])) == (1, (), 20)
    assert batch.events()[3] == ConntrackEvent(
        DESTROY,
        3,
        FiveTuple("10.0.0.1", "10.0.0.2", 6, 40003, 80),
        0x0007_0003,
        3,
        180,
        6,
        2**64 - 4,
        10**9,
        3 * 10**9,
        5,
        7,
    )


def test_layouts_protocols_and_families_each_get_their_columns_in_the_runs_order() -> None:
    """TCP, UDP, ICMP and ICMPv6 with labels interleaved: events in the run's order; an ICMP
    row reads its type and code, labels across all 128 bits."""
    kinds = [
        {},
        {"proto": 17, "tcp_state": None, "ports": (5353, 53)},
        {"proto": 1, "tcp_state": None, "ports": (7, 8, 0)},
        {"src": "fd00::1", "dst": "fd00::2", "proto": 58, "tcp_state": None, "ports": (7, 1, 4)},
        {"labels": 2**127 | 2**64 | 1},
    ]
    run = [message(ct_id=i, **kinds[i % len(kinds)]) for i in range(50)]
    batch = agrees(run, min_columnar=4)
    assert len(batch.groups) == 5 and batch.others == ()
    events = batch.events()
    assert (events[2].flow.icmp_type, events[2].flow.icmp_code) == (8, 0)
    assert (events[3].flow.icmp_type, events[3].flow.icmp_code) == (1, 4)
    assert events[4].labels == 2**127 | 2**64 | 1


def test_a_layout_the_columns_do_not_cover_is_walked_message_by_message() -> None:
    """A 3-byte mark (no dtype reads it) and runs too short for columns: walked, same
    events."""
    odd = message().replace(attr(8, (0x0007_0003).to_bytes(4, "big")), attr(8, b"\x07\x00\x03"))
    batch = agrees([odd] * 10)
    assert batch.groups == () and len(batch.others) == 10 and batch.events()[0].mark == 0x070003
    batch = agrees([message(ct_id=i) for i in range(5)], min_columnar=8)
    assert batch.groups == () and len(batch.others) == 5


def test_a_message_that_breaks_the_layout_of_its_length_is_walked_and_the_rest_kept() -> None:
    """Same length, one header byte different (the mark's type): the other nineteen stay
    columns; a message without an original tuple is malformed, counted, no event."""
    run = [message(ct_id=i) for i in range(20)]
    at = run[7].index(attr(8, (0x0007_0003).to_bytes(4, "big")))
    run[7] = run[7][: at + 2] + struct.pack("=H", 30) + run[7][at + 4 :]
    run.append(bytes(len(run[0])))
    batch = agrees(run, min_columnar=8)
    assert sum(len(g) for g in batch.groups) == 19 and batch.malformed == 1
    assert batch.events()[7].mark == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(messages(), max_size=24), st.integers(1, 9))
def test_any_run_of_destroys_decodes_as_each_message_does(
    run: list[bytes], min_columnar: int
) -> None:
    agrees(run, min_columnar)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(messages(), min_size=1, max_size=4),
    st.integers(2, 6),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 255))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 400))),
)
@example([message()], 2, [(0, 20, 0)], [])  # a zeroed header length: the walk stops there
def test_garbled_and_truncated_runs_decode_as_each_message_does(
    templates: list[bytes],
    copies: int,
    flips: list[tuple[int, int, int]],
    cuts: list[tuple[int, int]],
) -> None:
    """Copies of a few messages (so that columns are tried), with bytes overwritten (header
    bytes too) and messages cut: never an exception, always what ``decode`` says."""
    run = [bytearray(t) for t in templates for _ in range(copies)]
    for which, where, value in flips:
        data = run[which % len(run)]
        data[where % len(data)] = value
    for which, at in cuts:
        del run[which % len(run)][at:]
    agrees([bytes(data) for data in run], min_columnar=2)


def test_a_message_decodes_to_its_event() -> None:
    assert decode(EventKind.DESTROY, message(), 5) == ConntrackEvent(
        kind=EventKind.DESTROY,
        ct_id=4242,
        flow=FiveTuple("10.0.0.1", "10.0.0.2", 6, 40000, 80),
        mark=0x00070003,
        packets_orig=3,
        bytes_orig=180,
        packets_reply=2,
        bytes_reply=120,
        start_ns=10**9,
        stop_ns=3 * 10**9,
        observed_ns=5,
        tcp_state=7,
    )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_any_bytes_decode_to_an_event_or_none(junk: bytes, cut: int) -> None:
    """Truncated or garbled messages never raise: the reader counts them and goes on."""
    for data in (message()[:cut] + junk, message()[:20] + junk):
        event = decode(EventKind.DESTROY, data, 0)
        assert event is None or isinstance(event, ConntrackEvent)
