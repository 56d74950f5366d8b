"""``FlowTable`` as transcripts: segments in, steps out (what to accept, drop, refuse, log).

Each test plays one client connection 10.0.0.1:40000 → 10.0.0.2:80 whose first data byte has
sequence number 1001.
"""

from __future__ import annotations

from tagwall.l7fw import DEFAULT_RULES, Action, FlowTable, Refusal, Step, parse_rules
from tagwall.l7fw._packet import ACK, FIN, PSH, RST, SYN, TcpSegment

RULES = parse_rules(DEFAULT_RULES)


def seg(seq: int, payload: bytes = b"", flags: int = ACK | PSH) -> TcpSegment:
    return TcpSegment("10.0.0.1", "10.0.0.2", 40000, 80, seq, 5001, flags, payload)


def opened() -> FlowTable:
    table = FlowTable(RULES)
    assert table.feed(1, seg(1000, flags=SYN)) == Step(accept=(1,))
    assert table.feed(2, seg(1001, flags=ACK)) == Step(accept=(2,))
    return table


def test_an_allowed_request_in_one_segment_passes_at_once() -> None:
    step = opened().feed(3, seg(1001, b"GET / HTTP/1.1\r\n\r\n"))
    assert step.accept == (3,) and step.drop == () and step.refuse is None
    (decided,) = step.decided
    assert decided.verdict.action is Action.ALLOW and decided.request is not None


def test_the_docstring_example_a_head_split_then_denied() -> None:
    """Held while incomplete; denied once complete: the held packet dropped, the last one
    replaced by a reset with the sequence number of the first held byte."""
    table = opened()
    assert table.feed(7, seg(1001, b"GET /ad")) == Step()
    last = seg(1008, b"min HTTP/1.1\r\n\r\n")
    step = table.feed(8, last)
    assert step.drop == (7,) and step.accept == ()
    assert step.refuse == Refusal(8, last, server_seq=1001, client_next_seq=1024)
    assert [d.verdict.rule for d in step.decided] == ["no-admin"]
    assert table.statistics().denied == 1


def test_after_a_refusal_payloads_are_dropped_and_bare_acks_pass() -> None:
    table = opened()
    assert table.feed(3, seg(1001, b"GET /admin HTTP/1.1\r\n\r\n")).refuse is not None
    assert table.feed(4, seg(1025, b"more")) == Step(drop=(4,))
    assert table.feed(5, seg(1029, flags=ACK | FIN)) == Step(accept=(5,))


def test_held_bytes_released_in_order_when_the_head_is_allowed() -> None:
    table = opened()
    assert table.feed(3, seg(1001, b"GET /shop HT")) == Step()
    assert table.feed(4, seg(1001, b"GET /shop HT")) == Step(drop=(4,))  # a retransmission
    assert table.feed(5, seg(1020, b"later")) == Step(drop=(5,))  # after a gap
    step = table.feed(6, seg(1013, b"TP/1.1\r\n\r\n"))
    assert step.accept == (3, 6) and len(step.decided) == 1
    assert table.feed(7, seg(1001, b"GET /shop HT")) == Step(accept=(7,))  # already released


def test_a_retransmission_that_carries_new_bytes_is_read_from_the_new_byte() -> None:
    table = opened()
    assert table.feed(3, seg(1001, b"GET /adm")) == Step()
    step = table.feed(4, seg(1001, b"GET /admin HTTP/1.1\r\n\r\n"))  # collapsed by the client
    assert step.drop == (3,) and step.refuse is not None and step.refuse.server_seq == 1001


def test_pipelined_requests_after_bodies_are_each_decided() -> None:
    """Content-Length and chunked bodies are skipped; the request after them is inspected."""
    stream = (
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n\r\n"
        b"GET /admin HTTP/1.1\r\n\r\n"
    )
    step = opened().feed(3, seg(1001, stream))
    assert [(d.request.path if d.request else None, d.verdict.rule) for d in step.decided] == [
        ("/a", None),
        ("/b", None),
        ("/admin", "no-admin"),
    ]
    assert step.refuse is not None


def test_a_body_spanning_segments_is_not_read_as_a_head() -> None:
    table = opened()
    head = b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
    assert table.feed(3, seg(1001, head + b"GET /admi")).accept == (3,)
    assert table.feed(4, seg(1001 + len(head) + 9, b"n")) == Step(accept=(4,))


def test_a_connection_that_is_not_http_is_passed_from_then_on() -> None:
    table = opened()
    assert table.feed(3, seg(1001, b"\x16\x03\x01\x00\x05hello")) == Step(accept=(3,))
    assert table.feed(4, seg(1011, b"GET /admin HTTP/1.1\r\n\r\n")) == Step(accept=(4,))


def test_garbage_after_an_http_request_is_refused_as_malformed() -> None:
    step = opened().feed(3, seg(1001, b"GET / HTTP/1.1\r\n\r\n\x00\x01\x02 junk"))
    assert step.refuse is not None
    assert [d.verdict.rule for d in step.decided] == [None, "malformed-request"]


def test_a_reset_forgets_the_connection_and_drops_what_was_held() -> None:
    table = opened()
    assert table.feed(3, seg(1001, b"GET /")) == Step()
    assert table.feed(4, seg(1006, flags=RST)) == Step(accept=(4,), drop=(3,))
    assert table.statistics().flows == 0


def test_a_connection_older_than_the_firewall_is_read_from_its_first_segment() -> None:
    table = FlowTable(RULES)
    assert table.feed(1, seg(777, b"GET /admin HTTP/1.1\r\n\r\n")).refuse is not None


def test_sequence_numbers_wrap() -> None:
    table = FlowTable(RULES)
    table.feed(1, seg(0xFFFFFFFE, flags=SYN))
    assert table.feed(2, seg(0xFFFFFFFF, b"GET /a")) == Step()
    assert table.feed(3, seg(5, b" HTTP/1.1\r\n\r\n")).accept == (2, 3)
