"""The probe's pure parts (``tagwall.lab._probe``): which addresses each pair uses, what it
refuses.  Real packets: test_probe_privileged.py."""

from __future__ import annotations

import ipaddress

import pytest

from tagwall.lab import LabError, LabWorkload, probe_pairs
from tagwall.lab._probe import _attempts
from tagwall.model import parse_flow_service


def _w(name: str, *ips: str) -> LabWorkload:
    return LabWorkload(name, f"twlab-w-{name}", "h1", tuple(ipaddress.ip_address(i) for i in ips))


def test_pairs_use_the_first_source_address_and_the_first_destination_one_of_its_family() -> None:
    """As reach does: src.ips[0], then dst's first address of that family."""
    dual = _w("dual", "2001:db8::1", "10.0.0.1")
    v4 = _w("v4", "10.0.0.2", "10.0.0.3")
    attempts, warnings = _attempts([dual, v4], parse_flow_service("tcp/80"))
    chosen = {(a.src.name, a.dst.name): (str(a.src_ip), str(a.dst_ip)) for a in attempts}
    assert chosen == {
        ("dual", "dual"): ("2001:db8::1", "2001:db8::1"),
        ("v4", "dual"): ("10.0.0.2", "10.0.0.1"),
        ("v4", "v4"): ("10.0.0.2", "10.0.0.2"),
    }
    assert warnings == ["dual → v4: no IPv6 address at the destination: false"]


def test_workloads_without_addresses_are_named_once_and_never_tried() -> None:
    attempts, warnings = _attempts([_w("a", "10.0.0.1"), _w("bare")], parse_flow_service("udp/53"))
    assert [(a.src.name, a.dst.name) for a in attempts] == [("a", "a")]
    assert warnings == ["bare has no address: every pair from or to it is false"]


def test_icmp_needs_an_ipv4_source_and_icmpv6_an_ipv6_one() -> None:
    workloads = [_w("v6", "2001:db8::1"), _w("v4", "10.0.0.1")]
    attempts, warnings = _attempts(workloads, parse_flow_service("icmp"))
    assert [(a.src.name, a.dst.name) for a in attempts] == [("v4", "v4")]
    assert warnings == [
        "v6: icmp cannot leave from its first address 2001:db8::1: every pair from it is false",
        "v4 → v6: no IPv4 address at the destination: false",
    ]
    attempts, _ = _attempts(workloads, parse_flow_service("icmpv6"))
    assert [(a.src.name, a.dst.name) for a in attempts] == [("v6", "v6")]


@pytest.mark.parametrize(("service", "match"), [("sctp/80", "sctp"), ("icmp/0", "echo")])
def test_services_the_probe_cannot_ask_for_are_refused(service: str, match: str) -> None:
    with pytest.raises(LabError, match=match):
        probe_pairs([_w("a", "10.0.0.1")], parse_flow_service(service))
