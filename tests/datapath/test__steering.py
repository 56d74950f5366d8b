"""``_steering``: which flows a host steers and the marks, labels and routes it uses (pure; the
real packets are tests/lab/test_steering_privileged.py), and what the compiler gives it."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from tagwall.compiler import (
    Compiler,
    Program,
    apply_delta,
    compile_program,
    diff_programs,
    program_from_wire,
    program_to_wire,
)
from tagwall.compiler._distill import MAX_TRANSIT_PEERS
from tagwall.datapath import NftDatapath
from tagwall.datapath._nft_render import layout_for, render_health, render_load, render_update
from tagwall.datapath._steering import (
    MAX_MEMBERS,
    TRANSPARENT_NEXT_HOP,
    Port,
    Steering,
    Tunnel,
    left_bit,
    pinned_bit,
    steered_paths,
    steering_for,
    tunnel_key,
    tunnel_mac,
)
from tagwall.errors import DatapathError
from tagwall.model import (
    HealthCheck,
    HealthCheckType,
    InterfaceRole,
    Ref,
    ServiceTemplateMode,
    WhenAllDown,
    load,
    parse_documents,
)

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
    """Original direction: into fw-1 by its left, from fw-1's right on into ids-1's left,
    from ids-1's right delivered; replies: into ids-1 by its right, from its left on into
    fw-1's right, from fw-1's left delivered."""
    steering = steering_for(_program(CHAIN), PORTS, None)
    (bit,) = steering.paths.values()
    fw, ids = steering.instances().index(Ref("fw-1")), steering.instances().index(Ref("ids-1"))
    back = "meta mark set 0x73800000 accept"
    lines = steering.lines()
    assert f'iifname "tw-fw-1" ct label {bit} ct direction original goto svc_p{bit}_o1' in lines
    assert f'iifname "tw-ids-1" ct label {bit} ct direction original {back}' in lines
    assert f'iifname "tw-ids" ct label {bit} ct direction reply goto svc_p{bit}_r0' in lines
    assert f'iifname "tw-fw" ct label {bit} ct direction reply {back}' in lines
    assert f"ct label {bit} ct direction original goto svc_p{bit}_o0" in lines
    assert f"ct label {bit} ct direction reply goto svc_p{bit}_r1" in lines
    chains = dict(steering.chains())
    # Entering: mark 0 (the forward chains evaluate it); back from a service: BACK_FLAG.
    assert chains[f"svc_p{bit}_o0"] == [
        "meta mark set 0x00000000",
        f"jump svc_i{fw}_l",
        f"jump svc_i{ids}_l",
        "accept",
    ]
    assert chains[f"svc_p{bit}_o1"] == ["meta mark set 0x73800000", f"jump svc_i{ids}_l", "accept"]
    assert chains[f"svc_p{bit}_r1"] == [
        "meta mark set 0x00000000",
        f"jump svc_i{ids}_r",
        f"jump svc_i{fw}_r",
        "accept",
    ]
    assert chains[f"svc_p{bit}_r0"] == ["meta mark set 0x73800000", f"jump svc_i{fw}_r", "accept"]
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
    """A flow pinned by its label bits keeps its path and member across updates."""
    both = CHAIN + (
        "- {name: c, from: {tags: tier=app}, to: {any: true}, action: redirect, via: [ids-1]}\n"
    )
    first = steering_for(_program(both), PORTS, None)
    only_c = steering_for(
        _program(both.replace("via: [fw-1, ids-1]", "via: [far-1]")), PORTS, first
    )
    path, member = (Ref("ids-1"),), (Ref("ids-1"), "ids")
    assert only_c.paths[path] == first.paths[path]
    assert only_c.slots[member] == first.slots[member]
    key = (member, InterfaceRole.LEFT)
    assert only_c.hop_ids[key] == first.hop_ids[key]


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


# -- scale-out and health ------------------------------------------------------------------

POOL = (
    "".join(
        f"""\
---
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: p{n}}}
spec:
  host: h1
  interfaces: [{{name: left, ips: [10.8.0.{n}], role: left}},
               {{name: right, ips: [10.8.1.{n}], role: right}}]
"""
        for n in (1, 2, 3)
    )
    + """\
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: pooled}
spec:
  mode: in-network
  healthCheck: {type: tcp, port: 8080, intervalS: 0.5, timeoutS: 0.25, failures: 2}
  whenAllDown: WHEN
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: pool-1}
spec: {template: pooled, workloads: [p1, p2, p3]}
"""
)
POOL_PORTS = {
    **PORTS,
    **{
        (f"p{n}", side): Port(f"tw-p{n}{'-1' if side == 'right' else ''}", f"02:00:00:00:01:{n}{i}")
        for n in (1, 2, 3)
        for i, side in enumerate(("left", "right"))
    },
}
SCALED = (
    "- {name: a, from: {tags: tier=web}, to: {tags: tier=app}, action: redirect,"
    " via: [pool-1, ids-1]}\n"
)


def _pool_program(when: str = "fail-open") -> Program:
    policy = (
        "---\napiVersion: tagwall/v1\nkind: FirewallPolicy\nmetadata: {name: p}\nspec:\n"
        "  rules:\n" + textwrap.indent(SCALED, "  ")
    )
    config = load(parse_documents(BASE + POOL.replace("WHEN", when) + policy, "t.yaml"))
    return compile_program(config, "h1")


def test_the_program_lists_every_local_workload_of_a_scaled_out_instance() -> None:
    """One entry per (instance, local workload), with the template's check and whenAllDown;
    the list survives the wire."""
    program = _pool_program("fail-closed")
    pool = [s for s in program.services if s.instance == Ref("pool-1")]
    assert [s.workload for s in pool] == ["p1", "p2", "p3"]
    assert {(s.when_all_down, s.health_check) for s in pool} == {
        (WhenAllDown.FAIL_CLOSED, HealthCheck(HealthCheckType.TCP, "/", 8080, 0.5, 0.25, 2))
    }
    assert program_from_wire(program_to_wire(program)) == program


def _instance_chains(steering: Steering, instance: str) -> dict[str, list[str]]:
    n = steering.instances().index(Ref(instance))
    return {k: v for k, v in steering.chains() if k.startswith(f"svc_i{n}_")}


def test_new_flows_hash_over_the_healthy_members_and_pinned_ones_stay() -> None:
    """Each member's pinned flows go to its keep chain first; a new flow (or one whose member
    left) is pinned by a symmetric hash over the healthy members, the same for both sides."""
    steering = steering_for(_pool_program(), POOL_PORTS, None)
    slots = [steering.slots[(Ref("pool-1"), f"p{n}")] for n in (1, 2, 3)]
    chains = _instance_chains(steering, "pool-1")
    assert sorted(chains) == [f"svc_i{steering.instances().index(Ref('pool-1'))}_{s}" for s in "lr"]
    for side, lines in zip("lr", chains.values(), strict=False):
        assert lines[:3] == [f"ct label {32 + 2 * s} jump svc_keep_{s}_{side}" for s in slots]
        buckets = ", ".join(f"{n} : goto svc_pin_{s}_{side}" for n, s in enumerate(slots))
        assert lines[3:] == [f"symhash mod 3 vmap {{ {buckets} }}"]
    keep = dict(steering.chains())[f"svc_keep_{slots[0]}_l"]
    assert keep[0] == f"ct label {33 + 2 * slots[0]} return"  # the flow left it once
    assert keep[1].startswith(f'counter name "svc_{slots[0]}_packets" meta mark set meta mark or')


def test_a_down_member_leaves_the_hash_and_its_flows_leave_it() -> None:
    steering = steering_for(_pool_program(), POOL_PORTS, None, down={"p2", "not-a-service"})
    assert steering.down == {"p2"}
    p2 = steering.slots[(Ref("pool-1"), "p2")]
    (left, _) = _instance_chains(steering, "pool-1").values()
    assert left[-1].startswith("symhash mod 2 vmap") and f"svc_pin_{p2}_l" not in left[-1]
    assert dict(steering.chains())[f"svc_keep_{p2}_l"] == [
        f"ct label {33 + 2 * p2} return",
        f"ct label set {33 + 2 * p2}",  # and back to the instance chain: pinned anew
    ]


@pytest.mark.parametrize(("when", "end"), [("fail-open", None), ("fail-closed", "drop")])
def test_all_members_down_bypass_or_drop_as_the_template_says(when: str, end: str | None) -> None:
    """fail-open: the instance chain ends without a verdict, so the path chain goes on to
    the next instance (or delivers); fail-closed: it drops."""
    steering = steering_for(_pool_program(when), POOL_PORTS, None, down={"p1", "p2", "p3"})
    for lines in _instance_chains(steering, "pool-1").values():
        assert not any("symhash" in line for line in lines)
        assert (lines[-1] if lines[-1] == "drop" else None) == end


def test_a_health_change_rewrites_only_that_instances_chains() -> None:
    """One transaction of flushed and refilled chains: the keep and instance chains of pool-1;
    nothing of ids-1, no table replaced, the named counters untouched."""
    program = _pool_program()
    steering = steering_for(program, POOL_PORTS, None)
    layout = layout_for(program, "tagwall", None, steering)
    loaded = render_load(program, layout, {"svc_0_packets": (7, 700)})
    assert "counter svc_0_packets { packets 7 bytes 700; }" in loaded
    assert "counter svc_1_flows { packets 0 bytes 0; }" in loaded
    script = render_health(layout, steering.with_down({"p3"}))
    pool = steering.instances().index(Ref("pool-1"))
    flushed = {line.split()[-1] for line in script.splitlines() if line.startswith("flush")}
    keeps = {
        f"svc_keep_{steering.slots[(Ref('pool-1'), f'p{n}')]}_{s}" for n in (1, 2, 3) for s in "lr"
    }
    assert flushed == {f"svc_i{pool}_l", f"svc_i{pool}_r", *keeps}
    assert "delete" not in script and "counter svc" not in script
    assert render_health(layout, steering.with_down({"ids-gone"})) == ""


def test_the_label_holds_at_most_48_members() -> None:
    """Two label bits per member after 32 path bits: a 49th member is refused."""
    n = MAX_MEMBERS + 1
    workloads = "".join(
        f"---\napiVersion: tagwall/v1\nkind: Workload\nmetadata: {{name: q{i}}}\nspec:\n"
        f"  host: h1\n  interfaces: [{{name: l, ips: [10.7.0.{i}], role: left}},"
        f" {{name: r, ips: [10.7.1.{i}], role: right}}]\n"
        for i in range(1, n + 1)
    )
    names = ", ".join(f"q{i}" for i in range(1, n + 1))
    rest = (
        "---\napiVersion: tagwall/v1\nkind: ServiceInstance\nmetadata: {name: big}\n"
        f"spec: {{template: routed, workloads: [{names}]}}\n"
        "---\napiVersion: tagwall/v1\nkind: FirewallPolicy\nmetadata: {name: p}\n"
        "spec: {rules: [{name: a, from: {any: true}, to: {any: true}, action: redirect,"
        " via: [big]}]}\n"
    )
    program = compile_program(load(parse_documents(BASE + workloads + rest, "t.yaml")), "h1")
    ports = {
        (f"q{i}", side): Port(f"tw-q{i}{side}", "02:00:00:00:00:00")
        for i in range(1, n + 1)
        for side in "lr"
    }
    with pytest.raises(DatapathError, match="at most 48 service workloads"):
        steering_for(program, ports, None)


# -- NftDatapath: health over a recording nft (the kernel's side is the privileged lab test) --


class _RecordingNft:
    """Stands in for libnftables: records scripts, refuses when told, lists no counters."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.refuse = False

    def run(self, script: str, *, operation: str, json: bool = False) -> str:
        if script.startswith("list counters"):
            return '{"nftables": []}'
        if self.refuse:
            raise DatapathError(f"{operation}: refused")
        self.scripts.append(script)
        return ""

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> tuple[NftDatapath, _RecordingNft]:
    from tagwall.datapath import _routing

    monkeypatch.setattr(_routing, "find_ports", lambda netns: POOL_PORTS)
    monkeypatch.setattr(_routing, "sync", lambda netns, hops, tunnels=(): None)
    dp = NftDatapath()
    nft = _RecordingNft()
    dp._ctx = nft  # type: ignore[assignment]  # the recording stand-in
    dp.load(_pool_program())
    return dp, nft


def test_set_service_health_is_one_transaction_idempotent_and_kept_when_refused(
    recorded: tuple[NftDatapath, _RecordingNft],
) -> None:
    dp, nft = recorded
    loaded = len(nft.scripts)
    dp.set_service_health({"p2"})
    assert len(nft.scripts) == loaded + 1 and "svc_keep" in nft.scripts[-1]
    dp.set_service_health(["p2"])  # the same: nothing to do
    assert len(nft.scripts) == loaded + 1
    nft.refuse = True
    with pytest.raises(DatapathError, match="refused"):
        dp.set_service_health({"p1", "p2"})
    nft.refuse = False
    health = {(s.workload, s.healthy) for s in dp.service_status() if s.instance == "pool-1"}
    assert health == {("p1", True), ("p2", False), ("p3", True)}
    dp.set_service_health({"p1", "p2"})  # the refused change, again: applied now
    assert "symhash mod 1" in nft.scripts[-1]


def test_the_down_set_survives_a_new_program(
    recorded: tuple[NftDatapath, _RecordingNft],
) -> None:
    """Health set before a program (or before the instance is steered) is applied by the
    next load."""
    dp, nft = recorded
    dp.set_service_health({"p1", "p2", "p3"})
    dp.load(_pool_program("fail-closed"))
    assert (
        "drop"
        in dict(_svc_chains(nft.scripts[-1]))[f"svc_i{dp_instances(dp).index(Ref('pool-1'))}_l"]
    )


def dp_instances(dp: NftDatapath) -> list[Ref]:
    layout = dp._layout
    assert layout is not None
    return layout.steering.instances()


def _svc_chains(script: str) -> list[tuple[str, str]]:
    """(chain name, its body) of the ``svc_`` chains of a load script."""
    out: list[tuple[str, str]] = []
    name: str | None = None
    body: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("chain svc_"):
            name, body = stripped.split()[1], []
        elif name is not None and stripped == "}":
            out.append((name, "\n".join(body)))
            name = None
        elif name is not None:
            body.append(stripped)
    return out


def test_carriers_read_a_flows_label_back_to_its_service_workloads() -> None:
    """The module docstring's worked example, and a chain of two: the members a label pins,
    in the path's order, without the ones the flow left."""
    fw, ids = Ref("fw-1"), Ref("ids-1", "shop")
    steering = Steering(
        paths={(fw,): 0, (fw, ids): 1},
        slots={(fw, "fw-a"): 0, (fw, "fw-b"): 1, (fw, "fw-c"): 2, (ids, "ids"): 3},
    )
    bits = lambda *ns: sum(1 << n for n in ns)  # noqa: E731
    assert steering.carriers(bits(0, pinned_bit(2))) == ("fw-1/fw-c",)
    moved = bits(0, pinned_bit(2), left_bit(2), pinned_bit(0))
    assert steering.carriers(moved) == ("fw-1/fw-a",)
    chain = bits(1, pinned_bit(3), pinned_bit(1))
    assert steering.carriers(chain) == ("fw-1/fw-b", "shop/ids-1/ids")
    assert steering.carriers(0) == () and steering.carriers(bits(5)) == ()


# -- cross-host: remote instances and transit ------------------------------------------------

HOSTS = """\
apiVersion: tagwall/v1
kind: Host
metadata: {name: h1}
spec: {address: 169.254.64.1}
---
apiVersion: tagwall/v1
kind: Host
metadata: {name: h2}
spec: {address: 169.254.64.2}
---
apiVersion: tagwall/v1
kind: Host
metadata: {name: h3}
spec: {address: 169.254.64.3}
---
"""
FAR_PORTS = {
    ("far", "left"): Port("tw-far", "02:00:00:00:00:05"),
    ("far", "right"): Port("tw-far-1", "02:00:00:00:00:06"),
}


def _hosted(rules: str, host: str) -> Program:
    policy = (
        "apiVersion: tagwall/v1\nkind: FirewallPolicy\nmetadata: {name: p}\nspec:\n  rules:\n"
        + textwrap.indent(rules, "  ")
    )
    config = load(parse_documents(HOSTS + BASE + "---\n" + policy, "t.yaml"))
    return compile_program(config, host)


def test_a_remote_instance_is_named_with_the_host_that_serves_it() -> None:
    """With underlay addresses, h1's program says far-1 is served by h2 at 169.254.64.2, and
    its rule is steered; h2, which holds far, lists it and every other host as a peer.  Both
    survive the wire and a delta."""
    h1, h2 = _hosted(CHAIN, "h1"), _hosted(CHAIN, "h2")
    assert [(str(r.instance), r.host, str(r.address)) for r in h1.remote_services] == [
        ("far-1", "h2", "169.254.64.2")
    ]
    assert [p.host for p in h1.peers] == ["h2", "h3"]  # h1 holds fw and ids: transit too
    assert steered_paths(h1) == {(Ref("fw-1"), Ref("ids-1")), (Ref("far-1"),)}
    assert [s.workload for s in h2.services] == ["far"]
    assert [(p.host, str(p.address)) for p in h2.peers] == [
        ("h1", "169.254.64.1"),
        ("h3", "169.254.64.3"),
    ]
    for program in (h1, h2):
        assert program_from_wire(program_to_wire(program)) == program
    delta = diff_programs(_program(CHAIN), h1)
    assert delta.remote_services == h1.remote_services


def test_a_remote_instance_is_entered_and_left_by_its_tunnel() -> None:
    """At the deciding host, far-1 is a hop into its VXLAN device (routed to h2's tunnel MAC
    at h2's address); what comes back by the device goes on (here: delivered), both
    directions; the flow's carrier is the instance at its host."""
    steering = steering_for(_hosted(CHAIN, "h1"), PORTS, None)
    bit = steering.paths[(Ref("far-1"),)]
    device = f"twv{tunnel_key(Ref('far-1')):06x}"
    (hop,) = [h for h in steering.hops() if h.device == device]
    assert (str(hop.gateway), hop.lladdr) == ("169.254.64.2", tunnel_mac("h2"))
    chains = dict(steering.chains())
    to = f"meta mark set meta mark or {hop.mark:#010x} accept"
    assert chains[f"svc_p{bit}_o0"] == ["meta mark set 0x00000000", to]
    assert chains[f"svc_p{bit}_r0"] == ["meta mark set 0x00000000", to]
    lines = steering.lines()
    back = "meta mark set 0x73800000 accept"
    assert f'iifname "{device}" ct label {bit} ct direction original {back}' in lines
    assert f'iifname "{device}" ct label {bit} ct direction reply {back}' in lines
    assert lines.index('iifname "twv*" drop') > lines.index(
        f"ct label {bit} ct direction original goto svc_p{bit}_o0"
    )
    tunnels = {t.device: t for t in steering.tunnels()}
    assert tunnels[device] == Tunnel(
        device, tunnel_key(Ref("far-1")), tunnel_mac("h1"), ((tunnel_mac("h2"), "169.254.64.2"),)
    )
    assert steering.carriers(1 << bit) == ("far-1@h2",)


def test_transit_enters_the_local_instance_and_goes_back_to_its_peer() -> None:
    """At the instance's host: a peer's packet (by the device and the peer's tunnel MAC) is
    pinned to that peer in a label bit and enters the instance (left, or right for replies);
    out of the instance's other side it goes back into the tunnel to that peer; a flow
    another peer had carried already is sent straight back; the flow is never classified
    again.  A host that only carries transit has no classify chains."""
    program = _hosted(CHAIN, "h2")
    steering = steering_for(program, FAR_PORTS, None)
    assert steering.paths == {} and steering.transit == {Ref("far-1")}
    device = f"twv{tunnel_key(Ref('far-1')):06x}"
    h1, h3 = steering.peers["h1"], steering.peers["h3"]
    hop = steering.tunnel_hops[("h1", Ref("far-1"))]
    source = f'iifname "{device}" ether saddr {tunnel_mac("h1")}'
    lines = steering.lines()
    assert f"{source} ct direction original ct label set {h1} goto svc_x0_{h1}_o" in lines
    assert f"{source} ct direction reply ct label set {h1} goto svc_x0_{h1}_r" in lines
    assert f"{source} ct label {h3} meta mark set {0x73000000 | hop:#010x} accept" in lines
    out = f"meta mark set {0x73800000 | hop:#010x} accept"
    assert f'iifname "tw-far-1" ct label {h1} ct direction original {out}' in lines
    assert f'iifname "tw-far" ct label {h1} ct direction reply {out}' in lines
    assert f"ct label {h1} accept" in lines
    chains = dict(steering.chains())
    assert chains[f"svc_x0_{h1}_o"] == [
        "meta mark set 0x00000000",
        "jump svc_i0_l",
        f"meta mark set meta mark or {0x73000000 | hop:#010x} accept",  # bypassed: back
    ]
    text = render_load(program, layout_for(program, "tagwall", None, steering))
    assert "chain classify" not in text and "ct state new jump classify" not in text
    assert 'oifname "twv*" tcp flags & syn == syn tcp option maxseg size set rt mtu' in text


def test_a_workload_moving_in_makes_its_host_name_the_remote_instance() -> None:
    """The incremental compiler follows remote services on its fast paths: a tier=web
    workload placed on h3 (which held nothing) makes h3's delta say far-1 is served by h2,
    exactly as compiling from scratch does."""
    rules = "- {name: b, from: {tags: tier=web}, to: {any: true}, action: redirect, via: [far-1]}\n"
    policy = (
        "apiVersion: tagwall/v1\nkind: FirewallPolicy\nmetadata: {name: p}\nspec:\n  rules:\n"
        + textwrap.indent(rules, "  ")
    )
    web3 = (
        "---\napiVersion: tagwall/v1\nkind: Workload\nmetadata: {name: web3}\n"
        "spec: {host: h3, interfaces: [{ips: [10.1.0.13]}], tags: {tier: web}}\n"
    )
    before = load(parse_documents(HOSTS + BASE + "---\n" + policy, "t.yaml"))
    after = load(parse_documents(HOSTS + BASE + "---\n" + policy + web3, "t.yaml"))
    compiler = Compiler(before)
    program = compiler.program("h3")
    delta = compiler.update(after)["h3"]
    assert apply_delta(program, delta) == compile_program(after, "h3")
    assert [(str(r.instance), r.host) for r in compiler.program("h3").remote_services] == [
        ("far-1", "h2")
    ]


def test_a_host_serves_its_instances_to_a_bounded_ring_of_peers() -> None:
    """Each host costs a serving host a label bit, so a host serves at most
    MAX_TRANSIT_PEERS others: those after it in name order, as a ring.  An instance with a
    member on two hosts serves both hosts' peers; a host neither serves is not steered (its
    redirect allows), and the serving hosts' programs stay within what the data path holds."""
    many = "".join(
        f"---\napiVersion: tagwall/v1\nkind: Host\nmetadata: {{name: x{i:02d}}}\n"
        f"spec: {{address: 169.254.65.{i + 1}}}\n"
        f"---\napiVersion: tagwall/v1\nkind: Workload\nmetadata: {{name: web-x{i:02d}}}\n"
        f"spec: {{host: x{i:02d}, interfaces: [{{ips: [10.2.0.{i + 1}]}}], tags: {{tier: web}}}}\n"
        for i in range(40)
    )
    far2 = (
        "---\napiVersion: tagwall/v1\nkind: Workload\nmetadata: {name: far2}\n"
        "spec: {host: x20, interfaces: [{name: left, ips: [10.9.4.1], role: left},\n"
        "                               {name: right, ips: [10.9.5.1], role: right}]}\n"
    )
    rules = "- {name: b, from: {tags: tier=web}, to: {any: true}, action: redirect, via: [far-1]}\n"
    policy = (
        "---\napiVersion: tagwall/v1\nkind: FirewallPolicy\nmetadata: {name: p}\nspec:\n"
        "  rules:\n" + textwrap.indent(rules, "  ")
    )
    base = BASE.replace("workloads: [far]}", "workloads: [far, far2]}")
    config = load(parse_documents(HOSTS + base + many + far2 + policy, "t.yaml"))
    compiler = Compiler(config)

    def served_by(host: str) -> list[str]:
        return [r.host for r in compiler.program(host).remote_services]

    # The ring: h1 h2 h3 x00 … x39.  h2 serves the 16 after it: h3, x00 … x14.
    h2_peers = [p.host for p in compiler.program("h2").peers]
    assert h2_peers == ["h3", *(f"x{i:02d}" for i in range(15))]
    assert [p.host for p in compiler.program("x20").peers] == [f"x{i:02d}" for i in range(21, 37)]
    assert len(h2_peers) == MAX_TRANSIT_PEERS
    assert served_by("x00") == ["h2"] and served_by("x14") == ["h2"]
    assert served_by("x21") == ["x20"] and served_by("x36") == ["x20"]
    for outside in ("x17", "x37", "h1"):
        assert served_by(outside) == [], outside
        assert (Ref("far-1"),) not in steered_paths(compiler.program(outside))
    assert steered_paths(compiler.program("x00")) == {(Ref("far-1"),)}
