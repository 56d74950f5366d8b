"""Services: rule service entries and the concrete service of a flow."""

from __future__ import annotations

import pytest

from tagwall.model import (
    FlowService,
    NamedPort,
    Protocol,
    Service,
    ServiceSyntaxError,
    parse_flow_service,
    parse_service,
)


@pytest.mark.parametrize(
    ("text", "service", "canonical"),
    [
        ("any", Service(), "any"),
        ("tcp", Service(Protocol.TCP), "tcp"),
        ("tcp/443", Service(Protocol.TCP, ports=(443, 443)), "tcp/443"),
        ("TCP/8000-8080", Service(Protocol.TCP, ports=(8000, 8080)), "tcp/8000-8080"),
        ("udp/53", Service(Protocol.UDP, ports=(53, 53)), "udp/53"),
        ("sctp/1-65535", Service(Protocol.SCTP, ports=(1, 65535)), "sctp/1-65535"),
        ("icmp", Service(Protocol.ICMP), "icmp"),
        ("icmp/8", Service(Protocol.ICMP, icmp_type=8), "icmp/8"),
        ("icmpv6/0", Service(Protocol.ICMPV6, icmp_type=0), "icmpv6/0"),
        ("http", Service(named_port="http"), "http"),
        ("tcp/http", Service(Protocol.TCP, named_port="http"), "tcp/http"),
    ],
)
def test_parse_service_forms_and_canonical_text(
    text: str, service: Service, canonical: str
) -> None:
    """Every written form parses; str() gives the canonical form, which parses back."""
    assert parse_service(text) == service
    assert str(service) == canonical
    assert parse_service(canonical) == service


@pytest.mark.parametrize(
    ("text", "reason", "allowed"),
    [
        ("tcp/0", "port 0 is outside 1-65535", ()),
        ("tcp/65536", "port 65536 is outside 1-65535", ()),
        ("tcp/8080-80", "port range 8080-80 ends before it starts", ()),
        ("tcp/80-", "'' is not a port number", ()),
        ("gre/1", "unknown protocol 'gre'", ("tcp", "udp", "sctp", "icmp", "icmpv6")),
        ("icmp/256", "ICMP type '256' is not a number in 0-255", ()),
        (
            "8080",
            "not a protocol or a named port",
            ("any", "tcp", "udp", "sctp", "icmp", "icmpv6", "<name>"),
        ),
        ("tcp/a_b", "'a_b' is not a port, range or named port", ()),
    ],
)
def test_parse_service_errors_give_reason_and_allowed(
    text: str, reason: str, allowed: tuple[str, ...]
) -> None:
    with pytest.raises(ServiceSyntaxError) as info:
        parse_service(text)
    assert (info.value.text, info.value.reason, info.value.allowed) == (text, reason, allowed)


HTTP = (NamedPort("http", 8080), NamedPort("dns", 53, Protocol.UDP))


@pytest.mark.parametrize(
    ("service", "flow", "matches"),
    [
        ("any", "udp/53", True),
        ("tcp", "tcp/1", True),
        ("tcp", "udp/1", False),
        ("tcp/8000-8080", "tcp/8080", True),  # both ends inclusive
        ("tcp/8000-8080", "tcp/8081", False),
        ("icmp", "icmp/0", True),
        ("icmp/8", "icmp", True),  # a flow's bare icmp is an echo request
        ("icmp/8", "icmp/0", False),
        ("http", "tcp/8080", True),  # named ports resolve on the destination
        ("http", "tcp/80", False),
        ("udp/dns", "udp/53", True),
        ("tcp/dns", "udp/53", False),
    ],
)
def test_service_matches_a_flow(service: str, flow: str, matches: bool) -> None:
    assert parse_service(service).matches(parse_flow_service(flow), HTTP) is matches


def test_named_port_needs_the_destination_ports() -> None:
    """A bare address has no named ports: a named-port service never matches it."""
    assert not parse_service("http").matches(parse_flow_service("tcp/8080"))


@pytest.mark.parametrize(
    ("text", "flow"),
    [
        ("tcp/80", FlowService(Protocol.TCP, port=80)),
        ("icmp", FlowService(Protocol.ICMP, icmp_type=8)),
        ("icmpv6", FlowService(Protocol.ICMPV6, icmp_type=128)),
        ("icmp/0", FlowService(Protocol.ICMP, icmp_type=0)),
    ],
)
def test_parse_flow_service(text: str, flow: FlowService) -> None:
    assert parse_flow_service(text) == flow


@pytest.mark.parametrize("text", ["tcp", "any", "tcp/0", "gre/1", "icmp/x"])
def test_parse_flow_service_needs_a_concrete_service(text: str) -> None:
    with pytest.raises(ServiceSyntaxError):
        parse_flow_service(text)
