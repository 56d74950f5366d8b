"""``_nft_render``: the text of loads and updates (pure; no nftables needed).

What the kernel then does with the text is test__nft.py's and test_nft_differential.py's
business; here: which commands an update is made of, and what the rendering promises —
element changes stay element commands, named interval sets only for fragmented prefixes
(and for runs of addresses: test__nft_ranges.py), scratch marks confined.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import build, models, mutate

from tagwall.compiler import CompiledRule, CompiledService, Compiler, Program, apply_delta
from tagwall.datapath._nft_render import (
    ISOLATED_COMMENT,
    MARK_SCRATCH,
    MARK_SCRATCH_MASK,
    _Plan,
    _plan,
    chain_names,
    counter_index,
    layout_for,
    render_load,
    render_update,
)
from tagwall.model import Action, Config, Protocol, Ref, load, parse_documents


def config_of(text: str) -> Config:
    return load(parse_documents(text, "test.yaml"))


def doc(kind: str, name: str, spec: str) -> str:
    return f"apiVersion: tagwall/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n"


BASE = (
    doc(
        "Workload",
        "w1",
        "{host: h, interfaces: [{name: e, ips: [10.0.0.1]}], tags: "
        "{application: shop, tier: web, deployment: prod}}",
    )
    + doc(
        "Workload",
        "w2",
        "{host: h, interfaces: [{name: e, ips: [10.0.0.2]}], tags: "
        "{application: shop, tier: app, deployment: dev}}",
    )
    + doc(
        "Workload",
        "w9",
        "{host: other, interfaces: [{name: e, ips: [10.0.9.9]}], tags: "
        "{application: shop, tier: app, deployment: prod}}",
    )
    + doc("AddressGroup", "partners", "{prefixes: [192.0.2.0/28, 198.51.100.0/24]}")
    + doc(
        "FirewallPolicy",
        "p",
        """
  rules:
  - {name: web-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80],
     matchTags: [application, deployment], action: allow}
  - {name: partners, from: {addressGroup: partners}, to: {tags: tier=web}, action: reject}
  - {name: hand-over, from: {any: true}, to: {any: true}, services: [udp/53], action: pass}""",
    )
    + doc(
        "FirewallPolicy",
        "staged",
        "{mode: audit, rules: [{name: nothing, from: {any: true}, to: {any: true}, action: deny}]}",
    )
    + doc(
        "ApplicationPolicySet",
        "apps",
        "{tier: application, all: true, policies: [{name: p}, {name: staged}]}",
    )
)


def test_a_load_replaces_the_table_in_one_script() -> None:
    program = Compiler(config_of(BASE)).program("h")
    script = render_load(program, layout_for(program, "tagwall"))
    lines = script.splitlines()
    assert lines[:3] == [
        "table inet tagwall {}",
        "delete table inet tagwall",
        "table inet tagwall {",
    ]
    assert "goto refuse" in script and "return" in script
    assert "staged" not in script.replace('comment "', "")  # audit rules are not rendered
    assert "ip6" not in script  # no IPv6 workload on this host


def test_prefixes_are_masked_lookups_in_hash_sets_one_per_length() -> None:
    program = Compiler(config_of(BASE)).program("h")
    script = render_load(program, layout_for(program, "t"))
    assert "interval" not in script
    partners = [x.strip() for x in script.splitlines() if "partners" in x and "comment" in x]
    [s28, s24] = sorted(
        (x.split()[1] for x in partners if x.startswith("set ") and "/2" in x), reverse=True
    )
    assert s28.endswith("_4_28") and "elements = { 192.0.2.0 }" in script.split(s28)[1][:120]
    assert f"ip saddr & 255.255.255.240 == @{s28}" in script
    assert f"ip saddr & 255.255.255.0 == @{s24}" in script


def test_a_fragmented_group_gets_one_interval_set() -> None:
    """198.51.100.0/24 minus one address is 8 prefixes of 8 lengths: one named interval set
    shared by the rules, not 8 masked sets (nor 8 nft rules per rule); moving the exception
    is element commands on it."""
    text = BASE.replace("198.51.100.0/24]", '198.51.100.0/24], except: ["198.51.100.7/32"]')
    compiler = Compiler(config_of(text))
    program = compiler.program("h")
    script = render_load(program, layout_for(program, "t"))
    [decl] = [x.strip() for x in script.splitlines() if "flags interval" in x]
    name = decl.split()[1]
    assert name.endswith("_4_i") and "198.51.100.0/30, 198.51.100.4/31, " in decl
    assert f"ip saddr @{name} " in script
    assert "== @" not in script  # no masked lookup: the only prefixes are this group's

    delta = compiler.update(config_of(text.replace("198.51.100.7/32", "198.51.100.6/32")))["h"]
    update, _ = render_update(program, apply_delta(program, delta), layout_for(program, "t"))
    lines = update.splitlines()
    assert lines and all(f" element inet t {name} " in line for line in lines)


def test_every_matchtags_rule_looks_up_through_its_chain_and_clears_the_mark() -> None:
    """The service compare comes before the set lookups and the lookup chain; the pair lookup
    runs only when the lookup chain set a scratch mark."""
    program = Compiler(config_of(BASE)).program("h")
    script = render_load(program, layout_for(program, "tagwall"))
    lines = [x.strip() for x in script.splitlines()]
    jumps = [i for i, line in enumerate(lines) if " jump mt_" in line]
    assert jumps
    for i in jumps:
        chain = lines[i].rsplit(" ", 1)[1]
        assert f"chain {chain} {{" in lines
        # the pair lookup only behind the compare that the jump wrote a scratch mark
        assert lines[i].startswith("meta l4proto tcp th dport 80 ")  # cheap compares first
        assert lines[i + 1].startswith(
            "meta mark and 0xff000000 == 0x74000000 ip daddr . meta mark @t_"
        )
        assert " meta mark set 0 counter ct mark set " in lines[i + 1]
        # an egress allow goes on to the ingress walk, an ingress allow accepts
        within = next(x for x in reversed(lines[:i]) if x.startswith("chain "))
        verdict = "goto ingress" if within.startswith("chain egress_") else "accept"
        assert f" {verdict} comment " in lines[i + 1], within
        assert lines[i + 2] == "meta mark and 0xff000000 == 0x74000000 meta mark set 0"
    assert script.count("saddr map @m_") == 1  # the map is bound by one rule only


def test_tag_ids_are_marks_in_the_scratch_range_and_stay_stable() -> None:
    compiler = Compiler(config_of(BASE))
    program = compiler.program("h")
    layout = layout_for(program, "tagwall")
    assert all(n & MARK_SCRATCH_MASK == MARK_SCRATCH for n in layout.tag_ids.values())
    assert len(set(layout.tag_ids.values())) == len(layout.tag_ids)
    new = config_of(BASE.replace("deployment: dev", "deployment: test"))
    delta = compiler.update(new)["h"]
    _, after = render_update(program, apply_delta(program, delta), layout, delta)
    assert {k: after.tag_ids[k] for k in layout.tag_ids} == dict(layout.tag_ids)
    assert ("shop", "test") in after.tag_ids


def test_a_tag_change_is_element_commands_only() -> None:
    compiler = Compiler(config_of(BASE))
    program = compiler.program("h")
    delta = compiler.update(config_of(BASE.replace("deployment: dev", "deployment: prod")))["h"]
    script, _ = render_update(program, apply_delta(program, delta), layout_for(program, "t"), delta)
    lines = script.splitlines()
    assert lines
    assert all(line.startswith(("add element inet t ", "delete element inet t ")) for line in lines)
    # the map entry of 10.0.0.2 is replaced: deleted then added, in the same script
    assert any(x.startswith("delete element") and "10.0.0.2" in x for x in lines)
    assert any(x.startswith("add element") and "10.0.0.2 : 0x74" in x for x in lines)


def test_a_prefix_change_of_the_same_length_is_element_commands() -> None:
    compiler = Compiler(config_of(BASE))
    program = compiler.program("h")
    delta = compiler.update(config_of(BASE.replace("198.51.100.0/24", "198.51.101.0/24")))["h"]
    script, _ = render_update(program, apply_delta(program, delta), layout_for(program, "t"), delta)
    lines = script.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("delete element inet t s_") and "{ 198.51.100.0 }" in lines[0]
    assert lines[1].startswith("add element inet t s_") and "{ 198.51.101.0 }" in lines[1]


def test_a_new_prefix_length_rewrites_only_the_chains_that_use_the_set() -> None:
    compiler = Compiler(config_of(BASE))
    program = compiler.program("h")
    delta = compiler.update(config_of(BASE.replace("198.51.100.0/24", "198.51.100.0/25")))["h"]
    script, _ = render_update(program, apply_delta(program, delta), layout_for(program, "t"), delta)
    lines = script.splitlines()
    flushed = sorted(line.split()[-1] for line in lines if line.startswith("flush"))
    # Only ingress names the group: at egress its side is the local one, which matches no
    # workload of h, so the compiler drops the rule there.  With their dispatched chains:
    assert flushed == [f"ingress_application{n}" for n in ("", "_0", "_1")]
    added = [x for x in lines if x.startswith("add set")]
    dropped = [x for x in lines if x.startswith("delete set")]
    assert len(added) == 1 and "_4_25 {" in added[0] and "198.51.100.0" in added[0]
    assert len(dropped) == 1 and dropped[0].endswith("_4_24")
    assert lines.index(added[0]) < lines.index(f"flush chain inet t {flushed[0]}")
    assert lines.index(dropped[0]) == len(lines) - 1


def test_new_address_families_replace_the_table() -> None:
    compiler = Compiler(config_of(BASE))
    program = compiler.program("h")
    delta = compiler.update(config_of(BASE.replace("ips: [10.0.0.1]", "ips: [10.0.0.1, fd00::1]")))
    new = apply_delta(program, delta["h"])
    script, after = render_update(program, new, layout_for(program, "t"), delta["h"])
    assert after.families == {4, 6}
    assert script == render_load(new, after)
    assert "ip6 saddr @local_6 goto egress_eval" in script


def test_long_names_make_short_distinct_comments() -> None:
    long = "x" * 200
    text = BASE.replace("name: web-app", f"name: {long}a").replace(
        "name: hand-over", f"name: {long}b"
    )
    program = Compiler(config_of(text)).program("h")
    script = render_load(program, layout_for(program, "t"))
    comments = [
        line.split('comment "')[1].split('"')[0]
        for line in script.splitlines()
        if "comment" in line
    ]
    assert max(len(c.encode()) for c in comments) <= 128
    index = counter_index(program)
    assert {k.rule for k in index.values()} >= {f"{long}a", f"{long}b"}
    assert len({c for c in comments if c.startswith("apps p x")}) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_delta_only_says_where_to_look(data: st.DataObject) -> None:
    """For any compiler delta, the update rendered from (old, new, delta) is the update
    rendered from (old, new) alone: the delta narrows the work, never the result."""
    docs = data.draw(models())
    compiler = Compiler(build(docs))
    programs = {h: compiler.program(h) for h in compiler.hosts()}
    layouts = {h: layout_for(p, "t") for h, p in programs.items()}
    docs = mutate(data, docs)
    for host, delta in compiler.update(build(docs)).items():
        old = programs.get(host, Program(host))
        layout = layouts.get(host) or layout_for(old, "t")
        new = apply_delta(old, delta)
        with_delta, _ = render_update(old, new, layout, delta)
        without, _ = render_update(old, new, layout)
        assert sorted(with_delta.splitlines()) == sorted(without.splitlines())


# -- service dispatch ------------------------------------------------------------------------

_SERVICE_POOL = [
    CompiledService(Protocol.TCP, (80, 80)),
    CompiledService(Protocol.TCP, (80, 90)),
    CompiledService(Protocol.TCP, (85, 443)),
    CompiledService(Protocol.TCP, (443, 443)),
    CompiledService(Protocol.UDP, (53, 53)),
    CompiledService(Protocol.UDP, (50, 60)),
    CompiledService(Protocol.SCTP, (80, 80)),
    CompiledService(Protocol.TCP),
    CompiledService(Protocol.UDP),
    CompiledService(Protocol.ICMP, icmp_type=8),
    CompiledService(Protocol.ICMP),
    CompiledService(Protocol.ICMPV6, icmp_type=128),
    CompiledService(named="http"),
    CompiledService(),
]
# Packets: a port protocol and a port (ends and insides of the pool's ranges, and outside),
# or an ICMP type.
_PACKETS = [
    *((p, n) for p in (Protocol.TCP, Protocol.UDP, Protocol.SCTP) for n in (0, 53, 60, 79, 80)),
    *((p, n) for p in (Protocol.TCP, Protocol.UDP) for n in (84, 85, 90, 91, 443, 444, 65535)),
    (Protocol.ICMP, 8),
    (Protocol.ICMP, 0),
    (Protocol.ICMPV6, 128),
]


def _may_match(service: CompiledService, protocol: Protocol, port: int) -> bool:
    """Can the service match the packet?  A named port can (its ports are set elements)."""
    if service.named is not None or service.protocol is None:
        return True
    if service.protocol is not protocol:
        return False
    if service.ports is not None:
        return service.ports[0] <= port <= service.ports[1]
    return service.icmp_type is None or service.icmp_type == port


def _met(plan: _Plan, protocol: Protocol, port: int) -> tuple[int, ...]:
    """The rules a packet meets: those of the chain its map key selects, else the tier
    chain's."""
    for keys, held in plan.chains:
        for key in keys:
            name, first, last = _interval(key)
            if name == protocol.value and first <= port <= last:
                return held
    return plan.fallback


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.lists(st.sampled_from(_SERVICE_POOL), max_size=3).map(tuple)),
        max_size=12,
    )
)
@example([(CompiledService(Protocol.TCP, (80, 90)),), (CompiledService(Protocol.TCP, (85, 85)),)])
def test_dispatch_keeps_every_rule_a_packet_can_match_in_order(
    services: list[tuple[CompiledService, ...] | None],
) -> None:
    """For every packet, the rules it meets after the map are in rule order and include
    every rule whose services can match it; the map's keys are disjoint."""
    rules = [
        CompiledRule(Ref("p"), f"r{i}", Action.ALLOW, services=s) for i, s in enumerate(services)
    ]
    plan = _plan(rules)
    for protocol, port in _PACKETS:
        met = _met(plan, protocol, port)
        assert list(met) == sorted(set(met))
        can = [
            i
            for i, r in enumerate(rules)
            if r.services is None or any(_may_match(s, protocol, port) for s in r.services)
        ]
        assert set(can) <= set(met), (protocol, port, plan)
    intervals = sorted(_interval(key) for keys, _ in plan.chains for key in keys)
    for (p1, _, last), (p2, first, _) in itertools.pairwise(intervals):
        assert p1 != p2 or last < first, intervals


def _interval(key: str) -> tuple[str, int, int]:
    """``tcp . 80-90`` → ("tcp", 80, 90)."""
    protocol, _, ports = key.split()
    first, _, last = ports.partition("-")
    return protocol, int(first), int(last or first)


def test_overlapping_ranges_become_disjoint_keys_each_with_the_rules_covering_it() -> None:
    tcp = Protocol.TCP
    rules = [
        CompiledRule(Ref("p"), "a", Action.DENY, services=(CompiledService(tcp, (80, 90)),)),
        CompiledRule(Ref("p"), "b", Action.ALLOW, services=(CompiledService(tcp, (85, 443)),)),
        CompiledRule(Ref("p"), "c", Action.PASS, services=None),
        CompiledRule(Ref("p"), "d", Action.ALLOW, services=(CompiledService(tcp, (85, 85)),)),
        CompiledRule(Ref("p"), "e", Action.ALLOW, services=(CompiledService(Protocol.ICMP),)),
        CompiledRule(Ref("p"), "f", Action.ALLOW, services=(CompiledService(named="http"),)),
    ]
    plan = _plan(rules)
    assert [(keys, held) for keys, held in plan.chains] == [
        (("tcp . 80-84",), (0, 2, 5)),
        (("tcp . 85",), (0, 1, 2, 3, 5)),
        (("tcp . 86-90",), (0, 1, 2, 5)),
        (("tcp . 91-443",), (1, 2, 5)),
    ]
    assert plan.fallback == (2, 4, 5)


def test_a_tier_chain_dispatches_by_service_and_each_chain_ends_with_isolation() -> None:
    program = Compiler(config_of(BASE)).program("h")
    script = render_load(program, layout_for(program, "t"))
    chains = _chains_of(script)
    assert chains["egress_application"][0] == (
        "meta l4proto . th dport vmap { tcp . 80 : goto egress_application_0, "
        "udp . 53 : goto egress_application_1 }"
    )
    for name in ("egress_application", "egress_application_0", "egress_application_1"):
        assert chains[name][-1].endswith(
            f'counter log group 29815 prefix "tw:e:65534" drop comment "{ISOLATED_COMMENT}"'
        )
    # hand-over (udp/53, pass) only where udp/53 goes; partners (any service) everywhere it
    # can match: at ingress (at egress its local side, the group, holds no workload of h)
    assert [x for x in chains["egress_application_1"] if "hand-over" in x]
    assert not [
        x for x in chains["egress_application"] + chains["egress_application_0"] if "hand-over" in x
    ]
    assert all(
        any("partners" in x for x in chains[n])
        for n in ("ingress_application", "ingress_application_0", "ingress_application_1")
    )
    assert not [
        x for n, lines in chains.items() if n.startswith("egress") for x in lines if "partners" in x
    ]
    index = counter_index(program)
    assert index[("egress_application_1", "apps p hand-over")].rule == "hand-over"
    assert index[("egress_application_0", ISOLATED_COMMENT)].action is Action.DENY
    assert chain_names(program)[:4] == [
        "ingress_admin",
        "ingress_application",
        "ingress_application_0",
        "ingress_application_1",
    ]


def _chains_of(script: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in script.splitlines():
        if line.startswith("  chain ") and line.endswith("{"):
            current = out.setdefault(line.split()[1], [])
        elif line == "  }":
            current = None
        elif current is not None:
            current.append(line.strip())
    return out


def test_a_rule_edit_replaces_the_dispatched_chains_and_deletes_those_left_over() -> None:
    """udp/53 goes away: its chain is flushed with the tier chain, before anything refills,
    and deleted after the refill (nothing names it any more)."""
    compiler = Compiler(config_of(BASE))
    program = compiler.program("h")
    delta = compiler.update(config_of(BASE.replace("services: [udp/53]", "services: [tcp/80]")))
    script, _ = render_update(program, apply_delta(program, delta["h"]), layout_for(program, "t"))
    lines = script.splitlines()
    for t in ("inet t egress_application", "inet t ingress_application"):
        assert lines.index(f"flush chain {t}") < lines.index(f"flush chain {t}_0")
        first_refill = next(i for i, x in enumerate(lines) if x.startswith(f"add rule {t}_0 "))
        assert lines.index(f"flush chain {t}_1") < first_refill
    refill = [x for x in lines if x.startswith(f"add rule {t}_0 ")]
    assert any("hand-over" in x for x in refill)
    assert not any(x.startswith(f"add rule {t}_1 ") for x in lines)
    last_rule = max(i for i, x in enumerate(lines) if x.startswith("add rule"))
    deleted = [i for i, x in enumerate(lines) if x.startswith("delete chain")]
    assert sorted(lines[i] for i in deleted) == [
        "delete chain inet t egress_application_1",
        "delete chain inet t ingress_application_1",
    ]
    assert min(deleted) > last_rule


def test_a_named_port_change_is_element_commands_only() -> None:
    """Named-port rules sit in every chain of their tier: their ports are port-set elements,
    and a port change must not rewrite a chain."""
    text = BASE.replace("services: [tcp/80]", "services: [api]").replace(
        "deployment: dev}}", "deployment: dev}, ports: [{name: api, port: 8080, protocol: TCP}]}"
    )
    compiler = Compiler(config_of(text))
    program = compiler.program("h")
    assert program.port_sets
    delta = compiler.update(config_of(text.replace("port: 8080", "port: 9090")))["h"]
    script, _ = render_update(program, apply_delta(program, delta), layout_for(program, "t"), delta)
    lines = script.splitlines()
    assert lines
    assert all(x.startswith(("add element inet t p_", "delete element inet t p_")) for x in lines)


def test_no_dispatch_when_the_chains_would_multiply_the_rules() -> None:
    """300 ports and 300 any-service rules would make 300 chains of 301 rules: the tier chain
    stays one list (each rule still has its cheap compares first)."""
    any_service = [CompiledRule(Ref("p"), f"any{i}", Action.ALLOW) for i in range(300)]
    ports = [
        CompiledRule(
            Ref("p"), f"port{i}", Action.ALLOW, services=(CompiledService(Protocol.TCP, (i, i)),)
        )
        for i in range(1, 301)
    ]
    assert len(_plan(any_service[:2] + ports).chains) == 300  # 902 copies of 302 rules
    plan = _plan(any_service + ports)
    assert plan.chains == ()
    assert plan.fallback == tuple(range(600))
