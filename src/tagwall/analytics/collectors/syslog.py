"""Syslog datagrams (RFC 5424 and RFC 3164) → flow records of known firewall formats, or
messages.

One UDP datagram is one message (no octet-counting framing on UDP).  The header:

* ``<PRI>``: ``facility * 8 + severity`` (``<134>`` is local0.info); a datagram without
  one is user.notice (13), as RFC 3164 §4.3.3 has a relay treat it;
* RFC 5424: ``1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG``, ``-`` for
  a missing value, TIMESTAMP in RFC 3339 (``2026-11-26T10:00:00.5Z``);
* RFC 3164: ``Mmm dd hh:mm:ss HOSTNAME TAG: MSG`` (also ``Mmm dd yyyy hh:mm:ss:`` as
  Cisco ASA writes it, and no host); the year is the receive time's (last year's if that
  would put the message more than a day ahead), the zone UTC.

Known formats (``_firewall``) become :data:`Source.SYSLOG` records with one packet each (a
record counts a log line, not the packets of the flow).  Anything else comes back as a
:class:`SyslogMessage`.  Worked example: ``<4>Nov 26 10:00:00 gw kernel: drop IN=eth0 OUT=
SRC=10.0.0.1 DST=10.0.0.2 LEN=60 PROTO=TCP SPT=40000 DPT=22`` is one record 10.0.0.1:40000 →
10.0.0.2:22/tcp of 60 bytes at 10:00:00 UTC of the receive year.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from .._batch import FlowBatch, Source
from ._base import Counters, Decoded, DecodeError, DecoderStatistics, SyslogMessage
from ._firewall import Connections, FlowLine, parse_firewall_line

__all__ = ["SyslogDecoder"]

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424 = re.compile(r"1 (\S+) (\S+) (\S+) \S+ \S+ ")
_RFC3164 = re.compile(
    r"(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2})(?: (?P<year>\d{4}))? "
    r"(?P<time>\d\d:\d\d:\d\d)(?:\.\d+)?:? "
)
_TAG = re.compile(r"([\w./-]{1,48})(?:\[[^\]]*\])?: ?")
_MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_DAY_MS = 86_400_000


class SyslogDecoder:
    """Decodes syslog datagrams.  State: the Cisco ASA connections built and not yet torn
    down (to orient teardown lines), bounded per decoder."""

    def __init__(self) -> None:
        self._counters = Counters()
        self._connections = Connections()

    def decode(self, packet: bytes, exporter: str, received_ms: int) -> Decoded:
        """The flow record or message of one datagram.  Raises :class:`DecodeError` for an
        empty datagram or a PRI above 191."""
        return self.decode_many([packet], exporter, received_ms, strict=True)

    def decode_many(
        self, packets: Iterable[bytes], exporter: str, received_ms: int, *, strict: bool = False
    ) -> Decoded:
        """Many datagrams: one batch of their flow records, and their other messages."""
        lines: list[tuple[int, FlowLine]] = []
        messages: list[SyslogMessage] = []
        for packet in packets:
            self._counters.packets += 1
            try:
                message = _parse(packet, exporter, received_ms)
            except DecodeError as error:
                self._counters.errors[error.key] += 1
                if strict:
                    raise
                continue
            flow = parse_firewall_line(message.text, exporter, self._connections)
            if flow is None:
                messages.append(message)
            else:
                lines.append((message.timestamp_ms or received_ms, flow))
        self._counters.messages += len(messages)
        self._counters.records += len(lines)
        return Decoded(_batch(lines, exporter), tuple(messages))

    def statistics(self) -> DecoderStatistics:
        return self._counters.snapshot()


def _batch(lines: list[tuple[int, FlowLine]], exporter: str) -> tuple[FlowBatch, ...]:
    if not lines:
        return ()
    flows = [flow for _, flow in lines]
    return (
        FlowBatch.of(
            Source.SYSLOG,
            exporter,
            {
                "start_ms": [at - flow.duration_ms for at, flow in lines],
                "end_ms": [at for at, _ in lines],
                "src_hi": [f.src >> 64 for f in flows],
                "src_lo": [f.src & 0xFFFF_FFFF_FFFF_FFFF for f in flows],
                "dst_hi": [f.dst >> 64 for f in flows],
                "dst_lo": [f.dst & 0xFFFF_FFFF_FFFF_FFFF for f in flows],
                "proto": [f.proto for f in flows],
                "src_port": [f.src_port for f in flows],
                "dst_port": [f.dst_port for f in flows],
                "packets": [1] * len(flows),
                "bytes": [f.bytes for f in flows],
            },
        ),
    )


def _parse(packet: bytes, exporter: str, received_ms: int) -> SyslogMessage:
    """The header fields and text of one datagram."""
    text = packet.decode("utf-8", "replace").rstrip("\r\n\x00")
    if not text.strip():
        raise DecodeError("syslog", "empty datagram")
    pri = 13
    if match := _PRI.match(text):
        pri = int(match[1])
        if pri > 191:
            raise DecodeError("syslog.pri", "above 191", pri)
        text = text[match.end() :]
    timestamp_ms: int | None = None
    hostname = app = None
    if match := _RFC5424.match(text):
        timestamp_ms = _rfc3339_ms(match[1])
        hostname, app = _nil(match[2]), _nil(match[3])
        text = _skip_structured_data(text[match.end() :]).removeprefix("\ufeff")
    elif match := _RFC3164.match(text):
        timestamp_ms = _rfc3164_ms(match, received_ms)
        text = text[match.end() :]
        host, _, rest = text.partition(" ")
        if host and not _TAG.fullmatch(host) and not host.startswith("%"):
            hostname, text = host, rest
        if tag := _TAG.match(text):
            app, text = tag[1], text[tag.end() :]
    return SyslogMessage(
        received_ms, exporter, pri // 8, pri % 8, timestamp_ms, hostname, app, text
    )


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _rfc3339_ms(value: str) -> int | None:
    """Unix ms of an RFC 3339 time; ``None`` for ``-`` or a time that does not parse."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):  # not RFC 3339, or out of datetime's range
        return None


def _rfc3164_ms(match: re.Match[str], received_ms: int) -> int | None:
    received = datetime.fromtimestamp(received_ms / 1000, UTC)
    month = _MONTHS.get(match["month"])
    hour, minute, second = (int(part) for part in match["time"].split(":"))
    year = int(match["year"]) if match["year"] else received.year
    if month is None:
        return None
    try:
        moment = datetime(year, month, int(match["day"]), hour, minute, second, tzinfo=UTC)
        if not match["year"] and moment.timestamp() * 1000 > received_ms + _DAY_MS:
            moment = moment.replace(year=year - 1)
    except ValueError:  # 31 Feb, 25:00:00, 29 Feb of the year before
        return None
    return int(moment.timestamp() * 1000)


def _skip_structured_data(text: str) -> str:
    """``text`` after RFC 5424 STRUCTURED-DATA: ``-`` or ``[id k="v" ...]...``, where
    ``\\]``, ``\\"`` and ``\\\\`` escape inside quoted values."""
    if text.startswith("-"):
        return text[2:]
    at = 0
    while at < len(text) and text[at] == "[":
        quoted = False
        at += 1
        while at < len(text):
            char = text[at]
            if char == "\\" and quoted:
                at += 2
                continue
            if char == '"':
                quoted = not quoted
            elif char == "]" and not quoted:
                break
            at += 1
        at += 1
    return text[at + 1 :] if text[at : at + 1] == " " else text[at:]
