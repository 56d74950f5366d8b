"""The verdict log: one JSON object per line, one line per decided HTTP request.

Guarantees: every request the firewall decides (allowed, denied, or refused as malformed)
gets exactly one line, written and flushed before the packets that carry it are released or
refused, so a reader that has seen the server's answer (or the refusal) finds the line.
Connections that are not HTTP get no line.  Example::

    {"time": "2025-01-02T03:04:05.678Z", "client": "10.81.1.2:41000",
     "server": "10.81.2.2:80", "method": "GET", "host": "shop", "path": "/admin/x",
     "query": "", "verdict": "deny", "rule": "no-admin"}

(one line in the file).  ``rule`` is null for an allowed request no rule matched; ``method``,
``host``, ``path`` and ``query`` are null when the head could not be parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from ._flows import Decided

__all__ = ["VerdictLog"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class VerdictLog:
    """Writes to ``stream`` (which it does not close); ``clock`` returns an aware datetime."""

    def __init__(self, stream: TextIO, clock: Callable[[], datetime] = _utc_now) -> None:
        self._stream = stream
        self._clock = clock
        self.lines = 0

    def record(self, decided: Decided) -> None:
        request = decided.request
        entry = {
            "time": self._clock().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "client": decided.segment.client,
            "server": decided.segment.server,
            "method": None if request is None else request.method,
            "host": None if request is None else request.host,
            "path": None if request is None else request.path,
            "query": None if request is None else request.query,
            "verdict": decided.verdict.action.value,
            "rule": decided.verdict.rule,
        }
        self._stream.write(json.dumps(entry) + "\n")
        self._stream.flush()
        self.lines += 1
