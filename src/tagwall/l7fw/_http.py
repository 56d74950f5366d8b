"""HTTP/1.x request heads: bytes in, a parsed request (or why not) out.  Pure.

Contract of ``parse_request(data)``, where ``data`` is the client's bytes from the start of a
request (what a connection has sent since the previous request's body ended):

- ``Framing.NEED_MORE``: ``data`` is a prefix of a request head; ask again with more bytes.
- ``Framing.NOT_HTTP``: ``data`` cannot start an HTTP/1.x request (the first word is not a
  method token followed by a space), so the connection speaks something else.
- ``Malformed(reason)``: it starts like HTTP but is not a head this module understands. A
  firewall must refuse it: a server may read it differently than we do (e.g. the HTTP/0.9
  ``GET /admin`` without a version, or both Content-Length and Transfer-Encoding).
- ``HttpRequest``: a complete head; ``head_bytes`` says where the body starts.

Worked example: ``b"GET /a/../admin?id=1%27 HTTP/1.1\\r\\nHost: shop\\r\\n\\r\\n"`` gives
``method="GET"``, ``path="/a/../admin"``, ``query="id=1%27"``, ``host="shop"``,
``head_bytes=50``, and ``normalized_path="/admin"`` — rules match the normalized path, so
``/%61dmin`` and ``//admin`` are ``/admin`` too, as a file server would read them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus, urlsplit

__all__ = [
    "MAX_HEAD_BYTES",
    "BodyFraming",
    "Framing",
    "HttpRequest",
    "Malformed",
    "parse_request",
]

MAX_HEAD_BYTES = 16384  # a longer head is Malformed; servers refuse such heads too
_MAX_METHOD_BYTES = 32
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(1\.[01])")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")


class Framing(enum.Enum):
    NEED_MORE = "need-more"  # a prefix of a request head: wait for more bytes
    NOT_HTTP = "not-http"  # cannot begin an HTTP/1.x request


@dataclass(frozen=True)
class Malformed:
    """Starts like an HTTP request but cannot be read safely; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class BodyFraming:
    """How the body after the head ends: ``content_length`` bytes, or chunked encoding.
    Invariant: not both; a request without either has no body (RFC 9112 §6.3)."""

    content_length: int = 0
    chunked: bool = False


@dataclass(frozen=True)
class HttpRequest:
    """A complete request head.  Header names are lower case, values as sent (ASCII or
    Latin-1); ``path`` and ``query`` are as sent, without the ``?``."""

    method: str
    path: str
    query: str
    version: str  # "1.0" or "1.1"
    host: str | None
    headers: tuple[tuple[str, str], ...]
    body: BodyFraming
    head_bytes: int  # request line + headers + the blank line, in bytes

    @property
    def normalized_path(self) -> str:
        """The path as a server maps it: percent-decoded, ``.``/``..`` and empty segments
        removed, always starting with ``/``."""
        segments: list[str] = []
        for segment in unquote(self.path).split("/"):
            if segment == "..":
                if segments:
                    segments.pop()
            elif segment not in ("", "."):
                segments.append(segment)
        trailing = "/" if self.path.endswith("/") and segments else ""
        return "/" + "/".join(segments) + trailing

    @property
    def decoded_query(self) -> str:
        """The query string with ``+`` as space and percent escapes decoded."""
        return unquote_plus(self.query)


def _starts_like_http(data: bytes) -> bool | None:
    """Whether ``data`` begins with a method token and a space (None: too short to say)."""
    space = data.find(b" ", 0, _MAX_METHOD_BYTES + 1)
    if space == -1:
        prefix = data[:_MAX_METHOD_BYTES]
        if len(data) > _MAX_METHOD_BYTES or (prefix and not _TOKEN.fullmatch(prefix)):
            return False
        return None
    return space > 0 and _TOKEN.fullmatch(data[:space]) is not None


def _split_target(target: str) -> tuple[str, str] | None:
    """``(path, query)`` of an origin-form (``/p?q``) or absolute-form target."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if "://" in target:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. an unclosed IPv6 literal: "http://[::1"
            return None
        return parts.path or "/", parts.query
    return None


def _body_framing(headers: list[tuple[str, str]]) -> BodyFraming | Malformed:
    lengths = {value for name, value in headers if name == "content-length"}
    codings = [value.lower() for name, value in headers if name == "transfer-encoding"]
    if codings and lengths:
        return Malformed("both Content-Length and Transfer-Encoding")
    if codings:
        if codings != ["chunked"]:
            return Malformed(f"Transfer-Encoding {', '.join(codings)!r} is not 'chunked'")
        return BodyFraming(chunked=True)
    if len(lengths) > 1:
        return Malformed(f"conflicting Content-Length values {sorted(lengths)!r}")
    if lengths:
        (length,) = lengths
        if not length.isdigit() or not length.isascii():
            return Malformed(f"Content-Length {length!r} is not a number")
        return BodyFraming(content_length=int(length))
    return BodyFraming()


def parse_request(data: bytes) -> HttpRequest | Malformed | Framing:
    """Parse the request head at the start of ``data`` (see the module docstring)."""
    looks = _starts_like_http(data)
    if looks is False:
        return Framing.NOT_HTTP
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end == -1:
        if len(data) >= MAX_HEAD_BYTES:
            return Malformed(f"request head longer than {MAX_HEAD_BYTES} bytes")
        return Framing.NEED_MORE
    lines = data[:end].split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return Malformed(f"request line {lines[0][:80]!r} is not 'METHOD TARGET HTTP/1.x'")
    method, raw_target, version = (part.decode("latin-1") for part in line.groups())
    split = _split_target(raw_target)
    if split is None:
        return Malformed(f"request target {raw_target[:80]!r} is neither /path nor a URL")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        header = _HEADER.fullmatch(raw)
        if header is None:
            return Malformed(f"header line {raw[:80]!r} is not 'Name: value'")
        name, value = (part.decode("latin-1") for part in header.groups())
        headers.append((name.lower(), value))
    body = _body_framing(headers)
    if isinstance(body, Malformed):
        return body
    hosts = [value for name, value in headers if name == "host"]
    if len(hosts) > 1:
        return Malformed(f"{len(hosts)} Host headers")
    return HttpRequest(
        method=method,
        path=split[0],
        query=split[1],
        version=version,
        host=hosts[0] if hosts else None,
        headers=tuple(headers),
        body=body,
        head_bytes=end + 4,
    )
