"""``NftDatapath`` on real packets: what a client in one namespace sees (answer, RST/ICMP
unreachable, silence) equals what the simulator and the reference evaluator predict, for
loads, updates, refused updates and the closed state; other tables are never touched.

Privileged: needs root, network namespaces and nftables (support.py builds the topology).
"""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import replace
from ipaddress import ip_address

import pytest

from tagwall.compiler import CompiledService, Compiler, Program
from tagwall.datapath import NftDatapath, nft_cleanup
from tagwall.datapath._nft_render import chain_names
from tagwall.errors import DatapathError
from tagwall.model import Config, Protocol, load, parse_documents, parse_flow_service

from .support import REMOTE, WORKLOADS, Topology, expected, privileged, probe_many, sim_network

pytestmark = privileged

HOST = "h"
V4 = [v4 for v4, _ in WORKLOADS.values()] + [REMOTE[0]]


def config_of(text: str) -> Config:
    return load(parse_documents(text, "test.yaml"))


def workload(name: str, ip: str, tags: str, extra: str = "") -> str:
    return f"""
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: {name}}}
spec:
  host: {HOST}
  interfaces: [{{name: eth0, ips: [{ip}]}}]
  tags: {tags}
  {extra}
---"""


def policy(name: str, tier: str, selector: str, rules: str, mode: str = "enforce") -> str:
    return f"""
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {{name: {name}}}
spec:
  mode: {mode}
  rules:{rules}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {{name: {name}}}
spec:
  tier: {tier}
  {selector}
  directions: [ingress, egress]
  policies: [{{name: {name}}}]
---"""


def check(
    topo: Topology, config: Config, services: list[str], ips: list[str] = V4
) -> dict[tuple[str, str, str], str]:
    """Probe every ordered pair of ``ips`` (same family) with every service of that family;
    each outcome must be the simulator's (and the evaluator's).  Returns the outcomes for
    targeted checks."""
    net = sim_network(Compiler(config))
    flows = [
        (a, b, s)
        for a, b in itertools.permutations(ips, 2)
        if ip_address(a).version == ip_address(b).version
        for s in services
        if _fits(s, ip_address(a).version)
    ]
    seen = probe_many(topo, [(a, b, parse_flow_service(s)) for a, b, s in flows])
    want = [expected(config, net, a, b, s) for a, b, s in flows]
    wrong = [
        f"{a} -> {b} {s}: nft {got}, simulator {w}"
        for (a, b, s), got, w in zip(flows, seen, want, strict=True)
        if got != w
    ]
    assert wrong == []
    return dict(zip(flows, seen, strict=True))


def _fits(service: str, family: int) -> bool:
    protocol = parse_flow_service(service).protocol
    return {Protocol.ICMP: family == 4, Protocol.ICMPV6: family == 6}.get(protocol, True)


SHOP = (
    workload("w1", "10.0.0.1", "{application: shop, tier: web, deployment: prod}")
    + workload(
        "w2",
        "10.0.0.2",
        "{application: shop, tier: app, deployment: prod}",
        "ports: [{name: api, port: 8080, protocol: TCP}]",
    )
    + workload(
        "w3",
        "10.0.0.3",
        "{application: crm, tier: app, deployment: prod}",
        "ports: [{name: api, port: 9050, protocol: TCP}]",
    )
    + """
apiVersion: tagwall/v1
kind: AddressGroup
metadata: {name: partners}
spec: {prefixes: [192.0.2.0/28], labels: [partner]}
---"""
    + policy(
        "guard",
        "admin",
        "all: true",
        """
  - {name: no-partner-85, from: {any: true}, to: {addressGroup: partners}, services: [tcp/85],
     action: reject}
  - {name: no-web-5432, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/5432],
     action: deny}
  - {name: hand-over, from: {any: true}, to: {any: true}, action: pass}""",
    )
    + policy(
        "shop",
        "application",
        "selector: application=shop",
        """
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [api],
     matchTags: [application, deployment], action: allow}
  - {name: ping, from: {any: true}, to: {any: true}, services: [icmp/8], action: allow}
  - {name: to-partners, from: {tags: tier=web}, to: {addressGroup: partners},
     services: [tcp/9000-9100], action: allow}
  - {name: dns, from: {any: true}, to: {any: true}, services: [udp/53], action: allow}""",
    )
    + policy(
        "crm-staged",
        "application",
        "selector: application=crm",
        """
  - {name: deny-all, from: {any: true}, to: {any: true}, action: deny}""",
        mode="audit",
    )
    + policy(
        "base",
        "baseline",
        "all: true",
        """
  - {name: no-dns-to-crm, from: {any: true}, to: {tags: application=crm}, services: [udp/53],
     action: reject}""",
    )
)
SERVICES = ["tcp/80", "tcp/85", "tcp/5432", "tcp/8080", "tcp/9050", "udp/53", "icmp/8"]


def test_every_pair_and_service_gets_the_simulators_verdict(
    topo: Topology, datapath: NftDatapath
) -> None:
    """Admin pass/deny/reject, application rules with matchTags, a named port, a port range
    and an address group, implicit isolation, an audit-only set (enforces nothing), a baseline
    reject, both ends on one host."""
    config = config_of(SHOP)
    datapath.load(Compiler(config).program(HOST))
    seen = check(topo, config, SERVICES)
    w1, w2, w3, remote = V4
    assert seen[(w1, w2, "tcp/8080")] == "allow"  # named port, same application
    assert seen[(w1, w3, "tcp/9050")] == "deny"  # named port, other application: isolated
    assert seen[(w1, remote, "tcp/85")] == "reject"  # admin reject at egress: RST
    assert seen[(w1, remote, "tcp/9050")] == "allow"  # port range to a prefix
    assert seen[(w1, w2, "tcp/5432")] == "deny"  # admin deny
    assert seen[(w1, w3, "udp/53")] == "reject"  # baseline reject at ingress: ICMP
    assert seen[(w3, remote, "tcp/80")] == "allow"  # the audit policy denies nothing
    assert seen[(remote, w1, "tcp/80")] == "deny"  # isolated at ingress


def test_default_posture_deny_and_baseline(topo: Topology, datapath: NftDatapath) -> None:
    config = config_of(
        workload("w1", "10.0.0.1", "{tier: web}")
        + workload("w2", "10.0.0.2", "{tier: app}")
        + policy(
            "base",
            "baseline",
            "all: true",
            """
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80],
     action: allow}""",
        )
        + """
apiVersion: tagwall/v1
kind: Settings
metadata: {name: default}
spec: {defaultPosture: deny}"""
    )
    datapath.load(Compiler(config).program(HOST))
    seen = check(topo, config, ["tcp/80", "icmp/8"])
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/80")] == "allow"
    assert seen[("10.0.0.2", "10.0.0.1", "tcp/80")] == "deny"


def test_replies_of_an_allowed_flow_pass_while_the_reverse_is_denied(
    topo: Topology, datapath: NftDatapath
) -> None:
    """A probe is "allow" only when the answer (SYN-ACK, UDP echo, echo reply) came back."""
    config = config_of(
        workload("w1", "10.0.0.1", "{tier: web}")
        + workload("w2", "10.0.0.2", "{tier: app}")
        + policy(
            "one-way",
            "application",
            "all: true",
            """
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, direction: ">",
     action: allow}""",
        )
    )
    datapath.load(Compiler(config).program(HOST))
    seen = check(topo, config, ["tcp/80", "udp/53", "icmp/8"], ["10.0.0.1", "10.0.0.2"])
    for service in ("tcp/80", "udp/53", "icmp/8"):
        assert seen[("10.0.0.1", "10.0.0.2", service)] == "allow"
        assert seen[("10.0.0.2", "10.0.0.1", service)] == "deny"


def test_pass_in_the_application_tier_skips_isolation(
    topo: Topology, datapath: NftDatapath
) -> None:
    """``pass`` hands the flow to the baseline tier; only a flow that matched no application
    rule is isolated.  (Found by test_nft_differential: isolation was checked after a pass.)"""
    config = config_of(
        workload("w1", "10.0.0.1", "{tier: web}")
        + workload("w2", "10.0.0.2", "{tier: app}")
        + policy(
            "hand-over",
            "application",
            "all: true",
            """
  - {name: web-80, from: {tags: tier=web}, to: {any: true}, services: [tcp/80], action: pass}""",
        )
    )
    datapath.load(Compiler(config).program(HOST))
    seen = check(topo, config, ["tcp/80", "tcp/443"], ["10.0.0.1", "10.0.0.2"])
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/80")] == "allow"  # passed at both ends
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/443")] == "deny"  # no rule: isolated
    assert seen[("10.0.0.2", "10.0.0.1", "tcp/80")] == "deny"


DEPLOY = (
    workload("w1", "10.0.0.1", "{application: shop, tier: web, deployment: prod}")
    + workload("w2", "10.0.0.2", "{application: shop, tier: app, deployment: prod}")
    + workload("w3", "10.0.0.3", "{application: shop, tier: app, deployment: dev}")
    + workload("w4", "10.0.0.4", "{application: shop, tier: app, deployment: dev}")
    + policy(
        "shop",
        "application",
        "selector: application=shop",
        """
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80],
     matchTags: [application, deployment], action: allow}""",
    )
)


def retagged(text: str, name: str, old: str, new: str) -> str:
    marker = f"metadata: {{name: {name}}}"
    head, tail = text.split(marker)
    return head + marker + tail.replace(old, new, 1)


def test_a_tag_change_is_applied_as_element_updates(topo: Topology, datapath: NftDatapath) -> None:
    compiler = Compiler(config_of(DEPLOY))
    datapath.load(compiler.program(HOST))
    assert check(topo, compiler.config, ["tcp/80"])[("10.0.0.1", "10.0.0.3", "tcp/80")] == "deny"

    new = config_of(retagged(DEPLOY, "w3", "deployment: dev", "deployment: prod"))
    datapath.update(compiler.update(new)[HOST])

    script = datapath.last_script
    assert script.strip()
    assert all(" element inet tagwall " in line for line in script.splitlines()), script
    assert datapath.program() == compiler.program(HOST)
    assert check(topo, new, ["tcp/80"])[("10.0.0.1", "10.0.0.3", "tcp/80")] == "allow"


def test_a_rule_edit_rewrites_the_chain_and_changes_verdicts(
    topo: Topology, datapath: NftDatapath
) -> None:
    compiler = Compiler(config_of(DEPLOY))
    datapath.load(compiler.program(HOST))
    new = config_of(DEPLOY.replace("services: [tcp/80]", "services: [tcp/443]"))
    datapath.update(compiler.update(new)[HOST])
    assert "flush chain inet tagwall egress_application" in datapath.last_script
    seen = check(topo, new, ["tcp/80", "tcp/443"])
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/80")] == "deny"
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/443")] == "allow"


def nft(topo: Topology, *args: str, script: str | None = None) -> str:
    """The nft command line in the host namespace: how an operator (or another program)
    would touch the ruleset."""
    return subprocess.run(
        ["ip", "netns", "exec", topo.host, "nft", *args],
        input=script,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_refused_update_leaves_the_old_program_in_force(
    topo: Topology, datapath: NftDatapath
) -> None:
    """The delta retags w3 (would allow w1 → w3) and w4; someone removed w4's entry from the
    tag map behind tagwall's back, so nft refuses the element delete and with it the whole
    transaction."""
    compiler = Compiler(config_of(DEPLOY))
    old = compiler.program(HOST)
    datapath.load(old)
    tag_map = next(
        line.split()[1]
        for line in datapath.read_ruleset_text().splitlines()
        if line.strip().startswith("map m_")
    )
    nft(topo, "delete", "element", "inet", "tagwall", tag_map, "{ 10.0.0.4 }")

    text = retagged(DEPLOY, "w3", "deployment: dev", "deployment: prod")
    new = config_of(retagged(text, "w4", "deployment: dev", "deployment: prod"))
    with pytest.raises(DatapathError, match="No such file or directory"):
        datapath.update(compiler.update(new)[HOST])

    assert datapath.program() is old
    seen = check(topo, config_of(DEPLOY), ["tcp/80"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    assert seen[("10.0.0.1", "10.0.0.3", "tcp/80")] == "deny"
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/80")] == "allow"


def test_a_refused_load_leaves_the_old_program_in_force(
    topo: Topology, datapath: NftDatapath
) -> None:
    """An ICMP type of 300 fits the Program type but not nft: the load fails as a whole."""
    config = config_of(DEPLOY)
    good = Compiler(config).program(HOST)
    datapath.load(good)
    blocks = good.chains[next(iter(good.chains))]
    rule = replace(blocks[0].rules[0], services=(CompiledService(Protocol.ICMP, icmp_type=300),))
    bad_blocks = (replace(blocks[0], rules=(rule,)),)
    bad = replace(good, chains={k: bad_blocks for k in good.chains})
    with pytest.raises(
        DatapathError, match=r"refused the program of host 'h': Error: Value 300 exceeds"
    ):
        datapath.load(bad)
    assert datapath.program() is good
    assert (
        check(topo, config, ["tcp/80"], ["10.0.0.1", "10.0.0.2"])[
            ("10.0.0.1", "10.0.0.2", "tcp/80")
        ]
        == "allow"
    )


def test_other_tables_are_untouched_and_cleanup_removes_only_tagwall(
    topo: Topology, datapath: NftDatapath
) -> None:
    nft(
        topo,
        "-f",
        "-",
        script="table inet other {\n set keep { type ipv4_addr; elements = { 10.9.9.9 } }\n"
        " chain c { type filter hook forward priority 50; policy accept;"
        " ip saddr @keep counter accept; }\n}\n",
    )
    try:
        before = nft(topo, "list", "table", "inet", "other")
        compiler = Compiler(config_of(DEPLOY))
        datapath.load(compiler.program(HOST))
        new = config_of(retagged(DEPLOY, "w3", "deployment: dev", "deployment: prod"))
        datapath.update(compiler.update(new)[HOST])
        datapath.counters()
        assert nft(topo, "list", "table", "inet", "other") == before
        nft_cleanup(topo.host)
        nft_cleanup(topo.host)  # absent: no error
        assert nft(topo, "list", "table", "inet", "other") == before
        tables = json.loads(nft(topo, "-j", "list", "tables"))["nftables"]
        assert [t["table"]["name"] for t in tables if "table" in t] == ["other"]
    finally:
        nft(topo, "delete", "table", "inet", "other")


def test_closed_until_the_first_program(topo: Topology, datapath: NftDatapath) -> None:
    datapath.load_closed("tw-*")
    assert datapath.program() is None
    everything = ["tcp/80", "udp/53", "icmp/8"]
    flows = [
        (a, b, parse_flow_service(s)) for a, b in itertools.permutations(V4, 2) for s in everything
    ]
    assert set(probe_many(topo, flows)) == {"deny"}

    config = config_of(DEPLOY)
    datapath.load(Compiler(config).program(HOST))
    assert check(topo, config, ["tcp/80"])[("10.0.0.1", "10.0.0.2", "tcp/80")] == "allow"


def test_counters_count_the_deciding_rule(topo: Topology, datapath: NftDatapath) -> None:
    config = config_of(SHOP)
    datapath.load(Compiler(config).program(HOST))
    flows = [("10.0.0.1", "10.0.0.2", "tcp/8080"), ("10.0.0.1", "10.0.0.3", "tcp/9050")]
    seen = probe_many(topo, [(a, b, parse_flow_service(s)) for a, b, s in flows])
    assert seen == ["allow", "deny"]
    rows = {(r["direction"], r["tier"], r["policy"], r["rule"]): r for r in datapath.counters()}
    # Only the first packet of a flow is evaluated: the rest are established.
    assert rows[("egress", "application", "shop", "web-to-app")]["packets"] == 1
    assert rows[("ingress", "application", "shop", "web-to-app")]["packets"] == 1
    assert rows[("egress", "admin", "guard", "hand-over")]["action"] == "pass"
    assert rows[("egress", "admin", "guard", "hand-over")]["packets"] == 2
    isolated = rows[("egress", "application", None, "application-default-deny")]
    assert isolated["packets"] >= 1 and isolated["action"] == "deny"
    assert rows[("ingress", None, None, "default-posture")]["packets"] == 0


DUAL = (
    workload("w1", "10.0.0.1", "{tier: web}")
    + workload("w2", "10.0.0.2", "{tier: app}")
    + policy(
        "apps",
        "application",
        "all: true",
        """
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80, icmpv6],
     action: allow}
  - {name: no-ula, from: {any: true}, to: {cidr: "fd00::/64"}, services: [tcp/443],
     action: reject}""",
    )
)


def test_ipv6_and_a_change_of_address_families(topo: Topology, datapath: NftDatapath) -> None:
    """The first program has IPv4 only; giving the workloads IPv6 addresses changes the
    families, which replaces the table in the same single transaction."""
    compiler = Compiler(config_of(DUAL))
    datapath.load(compiler.program(HOST))
    assert "ip6 " not in datapath.last_script
    dual = config_of(
        DUAL.replace("ips: [10.0.0.1]", "ips: [10.0.0.1, fd00::1]").replace(
            "ips: [10.0.0.2]", "ips: [10.0.0.2, fd00::2]"
        )
    )
    datapath.update(compiler.update(dual)[HOST])
    assert datapath.last_script.startswith("table inet tagwall {}\ndelete table inet tagwall\n")
    seen = check(
        topo,
        dual,
        ["tcp/80", "tcp/443", "icmpv6", "icmp/8"],
        ["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2", REMOTE[1]],
    )
    assert seen[("fd00::1", "fd00::2", "tcp/80")] == "allow"
    assert seen[("fd00::1", "fd00::2", "icmpv6")] == "allow"
    assert seen[("fd00::2", "fd00::1", "tcp/80")] == "deny"
    assert seen[("fd00::1", "fd00::2", "tcp/443")] == "reject"


def test_the_scratch_mark_never_leaves_tagwalls_chains(
    topo: Topology, datapath: NftDatapath
) -> None:
    """w1 → w3 fails the matchTags rule after its lookup wrote the mark, then a later rule
    accepts it: a chain hooked after tagwall's must see no mark in the scratch range."""
    config = config_of(
        DEPLOY.replace(
            "action: allow}",
            "action: allow}\n  - {name: any-80, from: {any: true}, to: {any: true},"
            " services: [tcp/80], action: allow}",
        )
    )
    nft(
        topo,
        "-f",
        "-",
        script="table inet watch {\n chain c { type filter hook forward priority 100;"
        " meta mark and 0xff000000 == 0x74000000 counter; counter; }\n}\n",
    )
    try:
        datapath.load(Compiler(config).program(HOST))
        assert check(topo, config, ["tcp/80"])[("10.0.0.1", "10.0.0.3", "tcp/80")] == "allow"
        rules = [
            item["rule"]
            for item in json.loads(nft(topo, "-j", "list", "chain", "inet", "watch", "c"))[
                "nftables"
            ]
            if "rule" in item
        ]
        scratch, total = (
            next(e["counter"]["packets"] for e in r["expr"] if "counter" in e) for r in rules
        )
        assert total > 0
        assert scratch == 0
    finally:
        nft(topo, "delete", "table", "inet", "watch")


DISPATCH = (
    workload("w1", "10.0.0.1", "{tier: web}")
    + workload("w2", "10.0.0.2", "{tier: app}", "ports: [{name: api, port: 8080, protocol: TCP}]")
    + workload("w3", "10.0.0.3", "{tier: app}", "ports: [{name: api, port: 9050, protocol: TCP}]")
    + policy(
        "guard",
        "admin",
        "all: true",
        """
  - {name: g1, from: {tags: tier=web}, to: {any: true}, services: [tcp/9000-9100], action: deny}
  - {name: g2, from: {any: true}, to: {any: true}, services: [tcp/85-443], action: pass}""",
    )
    + policy(
        "apps",
        "application",
        "all: true",
        """
  - {name: a1, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80-85],
     action: reject}
  - {name: a2, from: {any: true}, to: {any: true}, services: [tcp/85-5432], action: allow}
  - {name: a3, from: {tags: tier=web}, to: {tags: tier=app}, services: [api], action: allow}
  - {name: a4, from: {any: true}, to: {any: true}, services: [udp], action: pass}
  - {name: a5, from: {tags: tier=app}, to: {any: true}, services: [icmp/8], action: deny}
  - {name: a6, from: {tags: tier=web}, to: {any: true}, services: [tcp/80], action: allow}
  - {name: a7, from: {any: true}, to: {any: true}, services: [icmp], action: allow}""",
    )
    + policy(
        "base",
        "baseline",
        "all: true",
        """
  - {name: b1, from: {any: true}, to: {tags: tier=app}, services: [udp/53], action: reject}""",
    )
)
ALL_SERVICES = ["tcp/80", "tcp/85", "tcp/443", "tcp/5432", "tcp/8080", "tcp/9050", "udp/53"]


def kernel_chains(topo: Topology) -> set[str]:
    listing = json.loads(nft(topo, "-j", "list", "chains", "inet"))["nftables"]
    return {c["chain"]["name"] for c in listing if "chain" in c}


def test_service_dispatch_keeps_first_match_pass_and_isolation(
    topo: Topology, datapath: NftDatapath
) -> None:
    """Each tier chain goes by protocol and port to chains of the rules that can match:
    port ranges overlapping across rules (first match wins on the overlap), a named port,
    a whole protocol with a ``pass`` in the dispatched chain (it leaves the tier: no
    isolation, the baseline decides), ICMP rules between port rules, and isolation both
    after a dispatched chain and after the tier chain's own rules."""
    config = config_of(DISPATCH)
    datapath.load(Compiler(config).program(HOST))
    assert "vmap" in datapath.last_script
    seen = check(topo, config, [*ALL_SERVICES, "icmp/8"])
    w1, w2, w3, remote = V4
    assert seen[(w1, w2, "tcp/80")] == "reject"  # a1 before a6
    assert seen[(w1, w2, "tcp/85")] == "reject"  # admin pass, then a1 before a2 on the overlap
    assert seen[(w1, w2, "tcp/443")] == "allow"  # a2
    assert seen[(w1, remote, "tcp/80")] == "allow"  # a6 after rules that do not match
    assert seen[(w1, w2, "tcp/8080")] == "allow"  # a3, the named port
    assert seen[(w1, w3, "tcp/9050")] == "deny"  # g1 in the admin tier
    assert seen[(w2, w3, "tcp/9050")] == "deny"  # isolated after the tier chain's rules
    assert seen[(w2, w1, "tcp/80")] == "deny"  # isolated after the tcp/80 chain
    assert seen[(w1, w2, "udp/53")] == "reject"  # a4 passes, the baseline rejects
    assert seen[(w2, w1, "udp/53")] == "allow"  # a4 passes at both ends: not isolated
    assert seen[(w2, w1, "icmp/8")] == "deny"  # a5
    assert seen[(w1, w2, "icmp/8")] == "allow"  # a7
    assert kernel_chains(topo) >= set(chain_names(datapath.program() or Program(HOST)))


def test_rule_edits_add_and_remove_dispatched_chains(topo: Topology, datapath: NftDatapath) -> None:
    """Updates rewrite a tier chain with its dispatched chains: chains appear and go, none
    is left behind, verdicts follow."""
    compiler = Compiler(config_of(DISPATCH))
    datapath.load(compiler.program(HOST))
    before = kernel_chains(topo)
    fewer = DISPATCH.replace("services: [tcp/80-85]", "services: [tcp/5432]").replace(
        "services: [udp]", "services: [tcp/80]"
    )
    more = DISPATCH.replace("services: [tcp/85-5432]", "services: [tcp/85, tcp/443, udp/53]")
    for text in (fewer, more, DISPATCH):
        config = config_of(text)
        datapath.update(compiler.update(config)[HOST])
        program = datapath.program()
        assert program == compiler.program(HOST)
        fixed = {c for c in before if not c.split("_")[-1].isdigit()}
        assert kernel_chains(topo) == fixed | set(chain_names(program))
        check(topo, config, [*ALL_SERVICES, "icmp/8"])
    assert kernel_chains(topo) == before
