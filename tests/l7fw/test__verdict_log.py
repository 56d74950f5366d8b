"""One JSON line per decided request, with the fields the ``_verdict_log`` docstring lists."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from tagwall.l7fw import DEFAULT_RULES, FlowTable, VerdictLog, parse_rules
from tagwall.l7fw._packet import ACK, TcpSegment


def test_each_decided_request_is_one_line() -> None:
    stream = io.StringIO()
    log = VerdictLog(stream, clock=lambda: datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    table = FlowTable(parse_rules(DEFAULT_RULES))
    data = b"GET /shop HTTP/1.1\r\nHost: shop\r\n\r\nGET /admin/x HTTP/1.1\r\n\r\n"
    step = table.feed(1, TcpSegment("10.81.1.2", "10.81.2.2", 41000, 80, 1, 9, ACK, data))
    for decided in step.decided:
        log.record(decided)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    common = {"time": "2025-01-02T03:04:05.678Z", "client": "10.81.1.2:41000"}
    common |= {"server": "10.81.2.2:80", "method": "GET", "query": ""}
    assert lines == [
        {**common, "host": "shop", "path": "/shop", "verdict": "allow", "rule": None},
        {**common, "host": None, "path": "/admin/x", "verdict": "deny", "rule": "no-admin"},
    ]
    assert log.lines == 2
