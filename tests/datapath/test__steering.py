"""``_steering``: which flows a host steers and the marks, labels and routes it uses (pure; the
real packets are tests/lab/test_steering_privileged.py), and what the compiler gives it."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from tagwall.compiler import (
    Program,
    compile_program,
    diff_programs,
    program_from_wire,
    program_to_wire,
)
from tagwall.datapath._nft_render import layout_for, render_load, render_update
from tagwall.datapath._steering import (
    TRANSPARENT_NEXT_HOP,
    Port,
    steered_paths,
    steering_for,
)
from tagwall.errors import DatapathError
from tagwall.model import InterfaceRole, Ref, ServiceTemplateMode, load, parse_documents

BASE = """\
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web}
spec: {host: h1, interfaces: [{ips: [10.1.0.11]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: app}
spec: {host: h1, interfaces: [{ips: [10.1.0.21]}], tags: {tier: app}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw}
spec:
  host: h1
  interfaces: [{name: left, ips: [10.9.0.1], role: left},
               {name: right, ips: [10.9.1.1], role: right}]
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: ids}
spec: {host: h1, interfaces: [{name: l, role: left}, {name: r, role: right}]}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: far}
spec: {host: h2, interfaces: [{name: left, ips: [10.9.2.1], role: left},
                              {name: right, ips: [10.9.3.1], role: right}]}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: routed}
spec: {mode: in-network}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: bump}
spec: {mode: transparent}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1}
spec: {template: routed, workloads: [fw]}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: ids-1}
spec: {template: bump, workloads: [ids]}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: far-1}
spec: {template: routed, workloads: [far]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: s}
spec: {tier: admin, all: true, directions: [egress], policies: [p]}
"""

PORTS = {
    ("fw", "left"): Port("tw-fw", "02:00:00:00:00:01"),
    ("fw", "right"): Port("tw-fw-1", "02:00:00:00:00:02"),
    ("ids", "l"): Port("tw-ids", "02:00:00:00:00:03"),
    ("ids", "r"): Port("tw-ids-1", "02:00:00:00:00:04"),
}


def _program(rules: str, mode: str = "enforce") -> Program:
    policy = f"""\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {{name: p}}
spec:
  mode: {mode}
  rules:
{textwrap.indent(rules, "  ")}
"""
    config = load(parse_documents(BASE + "---\n" + policy, "t.yaml"))
    return compile_program(config, "h1")


CHAIN = """\
- {name: a, from: {tags: tier=web}, to: {tags: tier=app}, action: redirect, via: [fw-1, ids-1]}
- {name: b, from: {tags: tier=web}, to: {any: true}, action: redirect, via: [far-1]}
"""


def test_the_program_lists_the_local_instances_its_redirect_rules_name() -> None:
    """fw-1 and ids-1 run on h1; far-1 runs on h2, so h1's program does not list it and its
    rule is not steered here.  The list survives the wire."""
    program = _program(CHAIN)
    assert [(str(s.instance), s.mode, s.workload) for s in program.services] == [
        ("fw-1", ServiceTemplateMode.IN_NETWORK, "fw"),
        ("ids-1", ServiceTemplateMode.TRANSPARENT, "ids"),
    ]
    assert program.services[1].left.interface == "l"
    assert program_from_wire(program_to_wire(program)) == program
    assert steered_paths(program) == {(Ref("fw-1"), Ref("ids-1"))}


def test_audit_rules_and_other_actions_steer_nothing() -> None:
    assert _program(CHAIN, mode="audit").services == ()
    assert steered_paths(_program(CHAIN, mode="audit")) == set()
    allow = "- {name: a, from: {any: true}, to: {any: true}, action: allow}\n"
    assert steered_paths(_program(allow)) == set()


def test_a_chain_of_two_is_walked_in_order_and_back_in_reverse() -> None:
    """Original direction: into fw-1 by its left, from fw-1's right into ids-1's left, from
    ids-1's right delivered; replies: into ids-1 by its right, from its left into fw-1's
    right, from fw-1's left delivered."""
    steering = steering_for(_program(CHAIN), PORTS, None)
    (bit,) = steering.paths.values()
    hop = {
        (str(i), side): steering.hop_mark(i, side)
        for i in (Ref("fw-1"), Ref("ids-1"))
        for side in InterfaceRole
    }
    back = 0x73800000
    lines = steering.lines()
    assert (
        f'iifname "tw-fw-1" ct label {bit} ct direction original '
        f"meta mark set {back | hop[('ids-1', InterfaceRole.LEFT)]:#010x} accept"
    ) in lines
    assert (
        f'iifname "tw-ids-1" ct label {bit} ct direction original meta mark set {back:#010x} accept'
    ) in lines
    assert (
        f'iifname "tw-ids" ct label {bit} ct direction reply '
        f"meta mark set {back | hop[('fw-1', InterfaceRole.RIGHT)]:#010x} accept"
    ) in lines
    assert (
        f"ct label {bit} ct direction reply meta mark set "
        f"{hop[('ids-1', InterfaceRole.RIGHT)]:#010x} accept"
    ) in lines
    # Packets coming back from a service are matched before those entering the path.
    first_entry = next(i for i, line in enumerate(lines) if line.startswith("ct label"))
    assert all(line.startswith("iifname") for line in lines[:first_entry])


def test_hops_route_to_the_service_address_or_across_the_bridge() -> None:
    """In-network: via the interface's own address.  Transparent: via a fixed next hop whose
    permanent neighbour is the host's port on the other side of the bridge."""
    steering = steering_for(_program(CHAIN), PORTS, None)
    hops = {(h.device, str(h.gateway), h.lladdr) for h in steering.hops()}
    assert hops == {
        ("tw-fw", "10.9.0.1", None),
        ("tw-fw-1", "10.9.1.1", None),
        ("tw-ids", str(TRANSPARENT_NEXT_HOP), "02:00:00:00:00:04"),
        ("tw-ids-1", str(TRANSPARENT_NEXT_HOP), "02:00:00:00:00:03"),
    }
    assert {h.table - h.mark for h in steering.hops()} == {0x74770000 - 0x73000000}


def test_ids_stay_when_the_program_changes() -> None:
    """A flow pinned by its label bit keeps its path across updates."""
    both = CHAIN + (
        "- {name: c, from: {tags: tier=app}, to: {any: true}, action: redirect, via: [ids-1]}\n"
    )
    first = steering_for(_program(both), PORTS, None)
    only_c = steering_for(
        _program(both.replace("via: [fw-1, ids-1]", "via: [far-1]")), PORTS, first
    )
    path = (Ref("ids-1"),)
    assert only_c.paths[path] == first.paths[path]
    assert (
        only_c.hop_ids[(Ref("ids-1"), InterfaceRole.LEFT)]
        == first.hop_ids[(Ref("ids-1"), InterfaceRole.LEFT)]
    )


def test_a_missing_port_is_refused_naming_the_alias() -> None:
    ports = {k: v for k, v in PORTS.items() if k != ("ids", "r")}
    with pytest.raises(DatapathError, match=r"'tagwall:ids/r'"):
        steering_for(_program(CHAIN), ports, None)


def test_rendering_adds_the_steering_chains_only_when_something_is_steered() -> None:
    """The prerouting chain, the classify copies and the forward chains' skip of packets back
    from a service are there with a steered path and absent without."""
    program = _program(CHAIN)
    steering = steering_for(program, PORTS, None)
    steered = render_load(program, layout_for(program, "tagwall", None, steering))
    assert "hook prerouting priority -150" in steered
    assert "chain c_egress_admin" in steered and "chain classify" in steered
    assert "meta mark and 0xff800000 == 0x73800000 accept" in steered
    assert f"ct label set {steering.paths[(Ref('fw-1'), Ref('ids-1'))]}" in steered
    plain = render_load(program, layout_for(program, "tagwall"))
    assert "prerouting" not in plain and "ct label" not in plain and "0x738" not in plain


def test_an_in_network_side_without_ipv4_is_refused() -> None:
    text = BASE.replace("ips: [10.9.1.1], role: right", "ips: [fd00::1], role: right")
    config = load(
        parse_documents(
            text
            + "---\napiVersion: tagwall/v1\nkind: FirewallPolicy\nmetadata: {name: p}\n"
            + "spec: {rules: [{name: a, from: {any: true}, to: {any: true}, action: redirect,"
            + " via: [fw-1]}]}\n",
            "t.yaml",
        )
    )
    assert ipaddress.ip_address("fd00::1") in config.workloads["fw"].ips
    with pytest.raises(DatapathError, match="no IPv4 address on its right interface"):
        steering_for(compile_program(config, "h1"), PORTS, None)


def test_an_update_that_keeps_the_steering_rewrites_the_classify_copies_too() -> None:
    """A rule added beside a steered one changes the tier chain and its classify copy in the
    same transaction (the copy must decide as the forward chain does); the table is not
    replaced."""
    before = _program(CHAIN)
    deny = (
        "- {name: z, from: {tags: tier=app}, to: {any: true}, services: [tcp/81], action: deny}\n"
    )
    after = _program(CHAIN + deny)
    steering = steering_for(before, PORTS, None)
    layout = layout_for(before, "tagwall", None, steering)
    script, _ = render_update(
        before, after, layout, diff_programs(before, after), steering_for(after, PORTS, steering)
    )
    assert "delete table" not in script
    assert "flush chain inet tagwall egress_admin" in script
    assert "flush chain inet tagwall c_egress_admin" in script
    copy = [line for line in script.splitlines() if line.startswith("add rule inet tagwall c_")]
    assert any("th dport 81" in line and line.endswith("goto c_ingress") for line in copy)
