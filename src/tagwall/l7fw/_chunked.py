"""Skipping a chunked request body (RFC 9112 §7.1) to find where the next request starts.
Pure.

The firewall never needs a body's content, only its end: a pipelined request may follow it,
and must be inspected like the first.  ``ChunkedBody.feed`` takes the body's bytes as they
arrive, in pieces of any size, and says how many of them belong to the body.  Example: fed
``b"4\\r\\nWiki\\r\\n0\\r\\n\\r\\nGET /admin ..."`` it returns 14: the next request starts
at offset 14.  A body this module cannot frame (a bad size line, a missing CRLF after a
chunk's data) is ``Malformed`` and the request is refused, as a server might frame it
differently (request smuggling).
"""

from __future__ import annotations

import enum

from ._http import Malformed

__all__ = ["ChunkedBody"]

_MAX_LINE_BYTES = 4096  # a chunk-size line or a trailer line


class _State(enum.Enum):
    SIZE = "size"  # reading a chunk-size line
    DATA = "data"  # skipping ``_left`` bytes of chunk data
    DATA_END = "data-end"  # reading the CRLF after chunk data
    TRAILER = "trailer"  # reading trailer lines until an empty one
    DONE = "done"  # the body has ended


class ChunkedBody:
    """The framing state of one chunked body.  Only its owner (one connection) feeds it."""

    def __init__(self) -> None:
        self._state = _State.SIZE
        self._line = bytearray()  # Invariant: the unfinished line, without its "\n"
        self._left = 0  # Invariant: > 0 only in DATA

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> int | Malformed:
        """How many bytes at the start of ``data`` belong to the body: all of them while the
        body goes on, fewer once it has ended (``done`` is then True)."""
        pos = 0
        while pos < len(data) and self._state is not _State.DONE:
            if self._state is _State.DATA:
                take = min(self._left, len(data) - pos)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _State.DATA_END
                continue
            newline = data.find(b"\n", pos)
            end = len(data) if newline == -1 else newline
            self._line += data[pos:end]
            if len(self._line) > _MAX_LINE_BYTES:
                return Malformed(f"chunked body line longer than {_MAX_LINE_BYTES} bytes")
            if newline == -1:
                return len(data)
            pos = newline + 1
            line, self._line = bytes(self._line), bytearray()
            problem = self._end_line(line)
            if problem is not None:
                return problem
        return pos

    def _end_line(self, line: bytes) -> Malformed | None:
        if not line.endswith(b"\r"):
            return Malformed(f"chunked body line {line[:40]!r} does not end with CRLF")
        line = line[:-1]
        if self._state is _State.DATA_END:
            if line:
                return Malformed(f"chunk data followed by {line[:40]!r}, not CRLF")
            self._state = _State.SIZE
        elif self._state is _State.SIZE:
            digits = line.split(b";", 1)[0].strip()
            if not digits or len(digits) > 16 or digits.strip(b"0123456789abcdefABCDEF"):
                return Malformed(f"chunk size {line[:40]!r} is not hexadecimal")
            self._left = int(digits, 16)
            self._state = _State.DATA if self._left else _State.TRAILER
        elif not line:  # TRAILER: the empty line ends the body
            self._state = _State.DONE
        return None
