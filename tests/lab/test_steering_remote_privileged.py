"""Cross-host steering on real packets (DESIGN §2 "Service chains"; docs/steering.md "ServiceLab
instances"): a redirect rule whose instance runs on another host steers the flow there and
back, through a VXLAN tunnel per instance, in both directions, wherever the destination is.

One lab for the module, three hosts (the lab declares each with its fabric address)::

    host-1: web 10.1.0.11 (tier=web), cache 10.1.0.41 (tier=cache)
    host-2: app 10.1.0.21 (tier=app), fw2 (fw-2: in-network forwarder)
    host-3: db 10.1.0.31 (tier=db),   fw (fw-1: in-network L7 firewall)
    fabric: ext 192.0.2.80 (tier=ext, external: no host, no agent)

From web (host-1, which decides first: its egress), tcp/80 to app (host-2: the destination
on a third host), to db (host-3: the instance's host), to cache (host-1: the source's host)
and to ext (outside the estate) is redirected via [fw-1], at both ends: the destination's
host steers it too, and the instance's host carries it only once (it sends the second
steering straight back); tcp/81 to app via [fw-1, fw-2] (two instances on two other hosts,
in order), at the source's end only; db → app tcp/80 via [fw-1] at both ends (the source on
the instance's host); everything else is allowed.  The servers are threads of this process.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .enforcement_support import running_lab, wait_until, yaml_documents
from .steering_support import BIG, ServiceLab, http_servers
from .support import privileged, tagwall_json, unique_lab

pytestmark = privileged

LAB = """\
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.1.0.11]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: cache}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.1.0.41]}], tags: {tier: cache}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: app}
spec: {host: host-2, interfaces: [{name: eth0, ips: [10.1.0.21]}], tags: {tier: app}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: db}
spec: {host: host-3, interfaces: [{name: eth0, ips: [10.1.0.31]}], tags: {tier: db}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: ext}
spec: {kind: external, interfaces: [{name: eth0, ips: [192.0.2.80]}], tags: {tier: ext}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw}
spec:
  host: host-3
  interfaces:
  - {name: left, ips: [10.9.0.1], role: left}
  - {name: right, ips: [10.9.1.1], role: right}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw2}
spec:
  host: host-2
  interfaces:
  - {name: left, ips: [10.9.0.2], role: left}
  - {name: right, ips: [10.9.1.2], role: right}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: routed-l7}
spec: {mode: in-network, function: l7-firewall}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: routed}
spec: {mode: in-network}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1}
spec: {template: routed-l7, workloads: [fw]}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-2}
spec: {template: routed, workloads: [fw2]}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: chain}
spec:
  rules:
  - {name: web-81, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/81],
     action: redirect, via: [fw-1, fw-2]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: chain}
spec:
  {tier: admin, priority: 1, all: true, directions: [egress],
   policies: [{name: chain, sequence: 1}]}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: steer}
spec:
  rules:
  - {name: web-80, from: {tags: tier=web}, to: {tags: "tier in (app, db, cache, ext)"},
     services: [tcp/80], action: redirect, via: [fw-1]}
  - {name: db-80, from: {tags: tier=db}, to: {tags: tier=app}, services: [tcp/80],
     action: redirect, via: [fw-1]}
  - {name: rest, from: {any: true}, to: {any: true}, action: allow}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: steer}
spec:
  {tier: admin, priority: 2, all: true, directions: [egress, ingress],
   policies: [{name: steer, sequence: 1}]}
"""

ADDRESS = {
    "web": "10.1.0.11",
    "app": "10.1.0.21",
    "db": "10.1.0.31",
    "cache": "10.1.0.41",
    "ext": "192.0.2.80",
}
SERVERS = ("app", "db", "cache", "ext")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceLab]:
    directory = tmp_path_factory.mktemp("remote")
    docs = yaml_documents(directory, "lab.yaml", LAB)
    with running_lab(docs, unique_lab(), directory / "state", controllers=1) as running:
        result = ServiceLab(running, ADDRESS)
        with http_servers(result, SERVERS, (80, 81, 8080)):
            yield result


WHERE = {
    "app": "a third host",
    "db": "the instance's host",
    "cache": "the source's host",
    "ext": "outside the estate, on the fabric",
}


@pytest.mark.parametrize("to", SERVERS)
def test_a_flow_redirected_to_another_hosts_instance_passes_it_both_ways(
    remote: ServiceLab, to: str
) -> None:
    """web → ``to`` tcp/80, the destination on a third host, the instance's, the source's or
    none (an external workload: no agent): the answer comes back, the firewall logged the
    request (it came in on its left) and received the answer on its right (replies take the
    same instance)."""
    target = f"/remote/{to}?id=7"
    left, right = remote.received("fw", "left"), remote.received("fw", "right")
    assert remote.get(to, target) == (200, "", f"served {target}\n".encode()), WHERE[to]
    assert target in remote.seen[to]
    lines = [v for v in remote.verdicts("fw") if v["path"] == f"/remote/{to}"]
    assert [(v["verdict"], v["server"]) for v in lines] == [("allow", f"{ADDRESS[to]}:80")]
    assert str(lines[0]["client"]).startswith(ADDRESS["web"] + ":")
    assert remote.received("fw", "left") - left >= 3
    assert remote.received("fw", "right") - right >= 3


def test_a_flow_from_the_instances_host_crosses_it_once(remote: ServiceLab) -> None:
    """db (host-3, where fw runs) → app (host-2) tcp/80: host-3 steers it through fw
    locally, host-2's ingress redirects it via fw-1 too and sends it to host-3, which sends
    it straight back: served, and logged once."""
    target = "/from-db?id=1"
    assert remote.get("app", target, source="db") == (200, "", f"served {target}\n".encode())
    lines = [v for v in remote.verdicts("fw") if v["path"] == "/from-db"]
    assert [(v["verdict"], str(v["client"]).split(":")[0]) for v in lines] == [
        ("allow", ADDRESS["db"])
    ]


def test_a_transfer_larger_than_the_tunnel_mtu_arrives_whole(remote: ServiceLab) -> None:
    """300 kB from app through the firewall on another host: full-sized segments cross two
    tunnels each way (the handshake's MSS is clamped to the tunnel's MTU)."""
    status, _, body = remote.get("app", "/big/one")
    assert (status, len(body)) == (200, BIG)


def test_the_remote_firewall_blocks_a_bad_request(remote: ServiceLab) -> None:
    """A request the firewall's rules deny gets its 403 and never reaches the server."""
    status, rule, _ = remote.get("app", "/admin/remote")
    assert (status, rule) == (403, "no-admin")
    assert "/admin/remote" not in remote.seen["app"]
    lines = [v for v in remote.verdicts("fw") if v["path"] == "/admin/remote"]
    assert [(v["verdict"], v["rule"]) for v in lines] == [("deny", "no-admin")]


def test_a_flow_no_redirect_rule_matches_does_not_cross_the_remote_firewall(
    remote: ServiceLab,
) -> None:
    """web → app tcp/8080 is allowed, not redirected: served directly, never in fw."""
    before = remote.received("fw", "left") + remote.received("fw", "right")
    assert remote.get("app", "/direct/8080", port=8080)[0] == 200
    assert "/direct/8080" in remote.seen["app"]
    assert [v for v in remote.verdicts("fw") if v["path"] == "/direct/8080"] == []
    assert remote.received("fw", "left") + remote.received("fw", "right") - before < 3


# Counted in fw and fw2: tcp/81 requests and answers by TTL.  web and app send with TTL 64;
# every forwarding namespace lowers it by one before its forward hook, a tunnel does not.
# Request: host-1 63, host-3 62, fw 61 (its hook), host-3 60, host-1 59, host-2 58, fw2 57.
# Answer: host-2 63, host-1 62, host-2 61, fw2 60, host-2 59, host-1 58, host-3 57, fw 56.
# In the other order fw2 would count the request at 61 and fw the answer at 60.
ORDER_TABLE = """\
table ip order {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip daddr 10.1.0.21 tcp dport 81 ip ttl {request} counter comment "request"
    ip saddr 10.1.0.21 tcp sport 81 ip ttl {answer} counter comment "answer"
  }}
}}
"""


def _counted(remote: ServiceLab, workload: str, comment: str) -> int:
    text = subprocess.run(
        ["ip", "netns", "exec", remote.namespace(workload), "nft", "list", "table", "ip", "order"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(rf"counter packets (\d+) bytes \d+ comment \"{comment}\"", text)
    assert m, text
    return int(m[1])


def test_a_chain_of_two_instances_on_two_other_hosts_is_crossed_in_order(
    remote: ServiceLab,
) -> None:
    """web → app tcp/81 via [fw-1 (host-3), fw-2 (host-2)]: the request crosses fw, then
    fw2; the answer fw2, then fw (the TTL counters above)."""
    for workload, ttls in (
        ("fw", {"request": 61, "answer": 56}),
        ("fw2", {"request": 57, "answer": 60}),
    ):
        subprocess.run(
            ["ip", "netns", "exec", remote.namespace(workload), "nft", "-f", "-"],
            input=ORDER_TABLE.format(**ttls),
            text=True,
            check=True,
        )
    assert remote.get("app", "/chain", port=81)[0] == 200
    assert "/chain" in remote.seen["app"]
    for workload in ("fw", "fw2"):
        assert _counted(remote, workload, "request") >= 2, workload  # SYN, request, ACKs
        assert _counted(remote, workload, "answer") >= 2, workload


def test_serviceinstances_and_flow_records_name_the_remote_instance(remote: ServiceLab) -> None:
    """``tagwall get serviceinstances`` shows fw-1 on host-3 with the flows steered into it
    there; the source's flow record names the instance and its host."""
    assert remote.get("app", "/record")[0] == 200

    def fw1() -> dict[str, Any]:
        body = tagwall_json("get", "serviceinstances", "--server", remote.lab.urls[0])
        (item,) = [i for i in body["items"] if i["name"] == "fw-1"]
        return dict(item)

    wait_until(lambda: (fw1()["workloads"][0]["flows"] or 0) > 0, 15, "fw-1's flows reported")
    (member,) = fw1()["workloads"]
    assert (member["workload"], member["host"], member["healthy"]) == ("fw", "host-3", True)

    def vias() -> set[str | None]:
        items = httpx.get(
            f"{remote.lab.urls[0]}/api/v1/flows",
            params={"workload": "web", "port": 80, "limit": 1000},
            timeout=5,
        ).json()["items"]
        return {f["via"] for f in items if ADDRESS["app"] in json.dumps(f["dst"])}

    wait_until(lambda: "fw-1@host-3" in vias(), 60, "a flow record naming fw-1@host-3")


def test_tunnels_are_the_agents_and_go_with_the_lab(remote: ServiceLab) -> None:
    """The hosts that steer or carry transit have one VXLAN device per instance, named alike
    on every host (the lab's exit check makes sure they go with it)."""
    devices = {}
    for host in ("host-1", "host-2", "host-3"):
        text = subprocess.run(
            ["ip", "-n", remote.lab.host_namespace(host), "-o", "link", "show", "type", "vxlan"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        devices[host] = set(re.findall(r"\d+: (twv[0-9a-f]{6})", text))
    assert len(devices["host-1"]) == 2  # fw-1 and fw-2, both remote
    assert len(devices["host-2"]) == 2  # fw-1 remote (its ingress steers), fw-2 transit
    assert len(devices["host-3"]) == 1  # fw-1 transit
    assert devices["host-2"] == devices["host-1"] and devices["host-3"] < devices["host-1"]


ALLOW_ALL = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: steer}
spec:
  rules: [{name: rest, from: {any: true}, to: {any: true}, action: allow}]
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: steer}
spec: {tier: admin, all: true, directions: [egress], policies: [{name: steer, sequence: 1}]}
"""


def test_without_redirect_rules_the_tunnels_and_routes_are_gone(remote: ServiceLab) -> None:
    """Replacing the redirect rules by allow: every agent removes its tunnels and policy
    routing, and web → app is served directly (fw logs nothing more).  Runs last: it changes
    the module's lab."""
    lab = remote.lab
    kept = [d for d in lab.objects if d.kind not in ("FirewallPolicy", "ApplicationPolicySet")]
    lab.set_objects([*kept, *yaml_documents(lab.state_dir, "allow.yaml", ALLOW_ALL)])

    def leftovers() -> dict[str, str]:
        out = {}
        for host in ("host-1", "host-2", "host-3"):
            ns = lab.host_namespace(host)
            links = subprocess.run(
                ["ip", "-n", ns, "-o", "link", "show", "type", "vxlan"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rules = subprocess.run(
                ["ip", "-n", ns, "rule"], capture_output=True, text=True, check=True
            ).stdout
            if links or "fwmark" in rules:
                out[host] = links + rules
        return out

    wait_until(lambda: not leftovers(), 15, "the tunnels and steering rules to go")
    before = len(remote.verdicts("fw"))
    assert remote.get("app", "/after")[0] == 200
    assert remote.get("app", "/admin/after")[0] == 200  # no firewall to refuse it
    assert len(remote.verdicts("fw")) == before
