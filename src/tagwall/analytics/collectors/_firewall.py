"""Firewall log lines that are flow records: Linux netfilter ``LOG`` and Cisco ASA.

Formats read (anywhere in the message text, so any syslog header or log prefix may precede):

* netfilter ``LOG`` / nftables ``log`` (what the kernel prints, ``key=value`` tokens, the
  first occurrence of a key counts — a UDP line has a second ``LEN=``, the UDP length)::

      IN=eth0 OUT= MAC=… SRC=10.0.0.1 DST=10.0.0.2 LEN=60 … PROTO=TCP SPT=40000 DPT=22 …

  → bytes = ``LEN`` (the IP packet's length); ``PROTO`` a name (TCP, UDP, UDPLITE, SCTP,
  ICMP, ICMPv6) or a number;
* ASA 106023 ``Deny tcp src outside:1.2.3.4/1234 dst inside:5.6.7.8/80 by access-group …``
  (no port for ICMP) → bytes 0;
* ASA 302013 / 302015 ``Built {inbound|outbound} {TCP|UDP} connection ID for
  outside:A/p (mapped) to inside:B/q (mapped)`` → bytes 0.  The ASA names the lower
  security side first whichever side opened, so the source is the ``for`` end when
  inbound and the ``to`` end when outbound;
* ASA 302014 / 302016 ``Teardown {TCP|UDP} connection ID for outside:A/p to inside:B/q
  duration h:mm:ss bytes N …`` → bytes N (both directions: the ASA does not split them),
  start = the line's time - duration, oriented as its Built line was (``for`` → ``to``
  when that line was not seen).

The gear's own verdict (deny, built) is not a tagwall verdict and is not stored in the
record's verdict columns (``_batch``: those are for tagwall's ends).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["Connections", "FlowLine", "parse_firewall_line"]

_NETFILTER = re.compile(r"(?:^|\s)IN=\S* OUT=\S* ")
_TOKEN = re.compile(r"([A-Z]+)=(\S*)")
_ASA = re.compile(r"%ASA-\d-(\d{6}): ")
_END = r"[^\s:]+:([0-9A-Fa-f.:]+)"  # interface:address, the address captured
_DENY = re.compile(rf"Deny (\S+) src {_END}(?:/(\d+))? dst {_END}(?:/(\d+))?")
_BUILT = re.compile(
    rf"Built (inbound|outbound) (TCP|UDP) connection (\d+) for {_END}/(\d+) .*?to {_END}/(\d+)"
)
_TEARDOWN = re.compile(
    rf"Teardown (TCP|UDP) connection (\d+) for {_END}/(\d+) (?:\([^)]*\) )?to {_END}/(\d+)"
    r".*? duration (\d+):(\d\d):(\d\d) bytes (\d+)"
)
_PROTOCOLS = {
    "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "icmp6": 58, "udplite": 136, "sctp": 132,
    "gre": 47, "esp": 50, "ah": 51,
}  # fmt: skip
_V4_MAPPED = 0xFFFF_0000_0000


@dataclass(frozen=True, slots=True)
class FlowLine:
    """One log line's flow; addresses as 128-bit integers, IPv4 mapped."""

    src: int
    dst: int
    proto: int
    src_port: int
    dst_port: int
    bytes: int = 0
    duration_ms: int = 0


class Connections:
    """ASA connections whose Built line was seen: ``(exporter, id) → outbound``, at most
    ``limit`` (the oldest forgotten first), so a lost Teardown cannot grow it forever."""

    def __init__(self, limit: int = 65_536) -> None:
        self._outbound: dict[tuple[str, int], bool] = {}
        self._limit = limit

    def built(self, exporter: str, connection: int, outbound: bool) -> None:
        self._outbound[(exporter, connection)] = outbound
        if len(self._outbound) > self._limit:
            del self._outbound[next(iter(self._outbound))]

    def torn_down(self, exporter: str, connection: int) -> bool:
        """Whether the connection was outbound (``False`` if its Built line was not seen)."""
        return self._outbound.pop((exporter, connection), False)


def parse_firewall_line(text: str, exporter: str, connections: Connections) -> FlowLine | None:
    """The flow of a known firewall line, or ``None`` (not one, or an unparsable value)."""
    try:
        if _NETFILTER.search(text):
            return _netfilter(text)
        if match := _ASA.search(text):
            return _asa(match[1], text[match.end() :], exporter, connections)
    except ValueError:  # an address or number that does not parse: keep the line as text
        return None
    return None


def _address(text: str) -> int:
    address = ipaddress.ip_address(text)
    return int(address) | (_V4_MAPPED if address.version == 4 else 0)


def _protocol(name: str) -> int:
    number = int(name) if name.isdigit() else _PROTOCOLS.get(name.lower(), 256)
    if number > 255:
        raise ValueError(f"protocol {name!r} is not a known name or a number to 255")
    return number


def _port(text: str | None) -> int:
    return _unsigned(text, 0xFFFF)


def _unsigned(text: str | None, maximum: int = (1 << 64) - 1) -> int:
    """A logged number, 0 if absent; ``ValueError`` if negative or above ``maximum``."""
    value = int(text or 0)
    if not 0 <= value <= maximum:
        raise ValueError(f"{text!r} is not in 0..{maximum}")
    return value


def _netfilter(text: str) -> FlowLine | None:
    tokens: dict[str, str] = {}
    for key, value in _TOKEN.findall(text):
        tokens.setdefault(key, value)
    if not {"SRC", "DST", "PROTO"} <= tokens.keys():
        return None
    proto = _PROTOCOLS.get(tokens["PROTO"].lower())
    return FlowLine(
        _address(tokens["SRC"]),
        _address(tokens["DST"]),
        _protocol(tokens["PROTO"]) if proto is None else proto,
        _port(tokens.get("SPT")),
        _port(tokens.get("DPT")),
        _unsigned(tokens.get("LEN")),
    )


def _asa(message_id: str, text: str, exporter: str, connections: Connections) -> FlowLine | None:
    if message_id == "106023" and (m := _DENY.match(text)):
        return FlowLine(_address(m[2]), _address(m[4]), _protocol(m[1]), _port(m[3]), _port(m[5]))
    if message_id in ("302013", "302015") and (m := _BUILT.match(text)):
        outbound = m[1] == "outbound"
        connections.built(exporter, int(m[3]), outbound)
        ends = [(m[6], m[7]), (m[4], m[5])] if outbound else [(m[4], m[5]), (m[6], m[7])]
        return _connection(m[2], ends)
    if message_id in ("302014", "302016") and (m := _TEARDOWN.match(text)):
        ends = [(m[3], m[4]), (m[5], m[6])]
        if connections.torn_down(exporter, int(m[2])):
            ends.reverse()
        hours, minutes, seconds = _unsigned(m[7], 1_000_000), int(m[8]), int(m[9])
        duration_ms = ((hours * 60 + minutes) * 60 + seconds) * 1000
        return _connection(m[1], ends, _unsigned(m[10]), duration_ms)
    return None


def _connection(
    proto: str, ends: list[tuple[str, str]], size: int = 0, duration_ms: int = 0
) -> FlowLine:
    (src, src_port), (dst, dst_port) = ends
    return FlowLine(
        _address(src),
        _address(dst),
        _protocol(proto),
        _port(src_port),
        _port(dst_port),
        size,
        duration_ms,
    )
