"""Services: what a rule matches on L4, and the concrete service of one flow.

Written forms (a rule's ``services`` entries and ServiceGroup entries)::

    any                  every protocol and port
    tcp | udp | sctp     every port of the protocol
    tcp/443              one port            tcp/8000-8080   a range, both ends inclusive
    icmp | icmpv6        every type          icmp/8          one ICMP type (echo request)
    http | tcp/http      a named port, resolved on the flow's destination workload (the
                         responder), as Kubernetes resolves named ports on the destination pod

A flow's service (``trace --service``) is concrete: ``tcp/80``, ``udp/53``, ``sctp/5000``,
``icmp`` (= ``icmp/8``), ``icmp/0``, ``icmpv6`` (= ``icmpv6/128``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "FlowService",
    "NamedPort",
    "Protocol",
    "Service",
    "ServiceSyntaxError",
    "parse_flow_service",
    "parse_service",
]


class Protocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"
    ICMP = "icmp"
    ICMPV6 = "icmpv6"

    @property
    def has_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)


class ServiceSyntaxError(ValueError):
    def __init__(self, text: str, reason: str, allowed: tuple[str, ...] = ()) -> None:
        self.text = text
        self.reason = reason
        self.allowed = allowed
        super().__init__(f"{text!r}: {reason}")


_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME, as Kubernetes


@dataclass(frozen=True, slots=True)
class NamedPort:
    """A workload's named port (``spec.ports``)."""

    name: str
    port: int
    protocol: Protocol = Protocol.TCP


@dataclass(frozen=True, slots=True)
class FlowService:
    """The concrete L4 service of one flow: destination port, or ICMP type."""

    protocol: Protocol
    port: int | None = None  # destination port for tcp/udp/sctp, else None
    icmp_type: int | None = None  # for icmp/icmpv6, else None

    def __str__(self) -> str:
        if self.protocol.has_ports:
            return f"{self.protocol.value}/{self.port}"
        return f"{self.protocol.value}/{self.icmp_type}"


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of a rule's services.

    Invariant: at most one of ``ports``, ``icmp_type``, ``named_port`` is set; ``ports`` is an
    inclusive (first, last) range with 1 ≤ first ≤ last ≤ 65535 and needs a port protocol;
    ``protocol`` None means any protocol (only with ``named_port`` or nothing else).
    """

    protocol: Protocol | None = None
    ports: tuple[int, int] | None = None
    icmp_type: int | None = None
    named_port: str | None = None

    def matches(self, flow: FlowService, dst_ports: tuple[NamedPort, ...] = ()) -> bool:
        """Does ``flow`` match this entry?  ``dst_ports`` are the destination's named ports."""
        if self.named_port is not None:
            return any(
                np.name == self.named_port
                and np.protocol == flow.protocol
                and np.port == flow.port
                and (self.protocol is None or self.protocol == flow.protocol)
                for np in dst_ports
            )
        if self.protocol is None:
            return True
        if self.protocol != flow.protocol:
            return False
        if self.ports is not None:
            return flow.port is not None and self.ports[0] <= flow.port <= self.ports[1]
        if self.icmp_type is not None:
            return flow.icmp_type == self.icmp_type
        return True

    def __str__(self) -> str:
        proto = self.protocol.value if self.protocol else ""
        if self.named_port is not None:
            return f"{proto}/{self.named_port}" if proto else self.named_port
        if self.ports is not None:
            first, last = self.ports
            return f"{proto}/{first}" if first == last else f"{proto}/{first}-{last}"
        if self.icmp_type is not None:
            return f"{proto}/{self.icmp_type}"
        return proto or "any"


_PROTOCOLS = tuple(p.value for p in Protocol)


def _port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ServiceSyntaxError(whole, f"{text!r} is not a port number")
    value = int(text)
    if not 1 <= value <= 65535:
        raise ServiceSyntaxError(whole, f"port {value} is outside 1-65535")
    return value


def parse_service(text: str) -> Service:
    """Parse a rule service entry; raises ``ServiceSyntaxError`` with the reason."""
    whole = text
    text = text.strip().lower()
    if text == "any":
        return Service()
    proto_text, sep, rest = text.partition("/")
    if not sep:
        if proto_text in _PROTOCOLS:
            return Service(Protocol(proto_text))
        if _NAME_RE.match(proto_text) and not proto_text.isdigit():
            return Service(named_port=proto_text)
        raise ServiceSyntaxError(
            whole, "not a protocol or a named port", ("any", *_PROTOCOLS, "<name>")
        )
    if proto_text not in _PROTOCOLS:
        raise ServiceSyntaxError(whole, f"unknown protocol {proto_text!r}", _PROTOCOLS)
    proto = Protocol(proto_text)
    if proto.has_ports:
        first_text, dash, last_text = rest.partition("-")
        if not dash and not rest.isdigit():
            if _NAME_RE.match(rest):
                return Service(proto, named_port=rest)
            raise ServiceSyntaxError(whole, f"{rest!r} is not a port, range or named port")
        first = _port(first_text, whole)
        last = _port(last_text, whole) if dash else first
        if first > last:
            raise ServiceSyntaxError(whole, f"port range {first}-{last} ends before it starts")
        return Service(proto, ports=(first, last))
    if not rest.isdigit() or not 0 <= int(rest) <= 255:
        raise ServiceSyntaxError(whole, f"ICMP type {rest!r} is not a number in 0-255")
    return Service(proto, icmp_type=int(rest))


def parse_flow_service(text: str) -> FlowService:
    """Parse the concrete service of a flow (``--service``)."""
    whole = text
    text = text.strip().lower()
    proto_text, sep, rest = text.partition("/")
    if proto_text not in _PROTOCOLS:
        raise ServiceSyntaxError(whole, f"unknown protocol {proto_text!r}", _PROTOCOLS)
    proto = Protocol(proto_text)
    if proto.has_ports:
        if not sep:
            raise ServiceSyntaxError(whole, f"a {proto.value} flow needs a port, e.g. tcp/80")
        return FlowService(proto, port=_port(rest, whole))
    if not sep:
        return FlowService(proto, icmp_type=8 if proto is Protocol.ICMP else 128)
    if not rest.isdigit() or not 0 <= int(rest) <= 255:
        raise ServiceSyntaxError(whole, f"ICMP type {rest!r} is not a number in 0-255")
    return FlowService(proto, icmp_type=int(rest))
