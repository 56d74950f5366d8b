"""Scale-out, health checks and fail-open / fail-closed on real packets (DESIGN §2 "Service
chains"; docs/steering.md): the nftables agent spreads the flows of a redirect rule over the
healthy workloads of an instance, checks them, moves flows off a workload that fails, and
bypasses or drops when none is left, as the template says.

Each test runs in two labs (``PLACEMENTS``): ``local``, everything on host-1; ``remote``
(docs/steering.md "Remote instances"), web on host-1, the instances on host-2 and app and db
on host-3, so host-1 sends each flow through a tunnel to host-2, which does all of the above
where the members are::

    web 10.1.0.11 ─┐            ┌─ fw-a, fw-b, fw-c  (pool-1: in-network forwarders, fail-open,
    app 10.1.0.21 ─┼── host ────┤                     ICMP check every 0.5 s, 2 failures)
    db  10.1.0.31 ─┘            └─ ids               (ids-1: transparent bridge, fail-closed)

web → app udp/7 is redirected via [pool-1]; web → db udp/7 via [pool-1, ids-1] (a chain of
two); everything else is allowed.  app and db echo UDP on port 7 from threads of this
process.  Each service namespace gets a small nft table of its own: it turns conntrack on
there (so each workload's ``conntrack -L`` lists the flows that crossed it, with packets
both ways) and counts the chain's packets by TTL (each routing hop lowers it; a bridge
does not), which tells the order the instances were crossed in.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tagwall._netns import entered
from tagwall.model import Document

from .enforcement_support import RunningLab, running_lab, wait_until, yaml_documents
from .support import privileged, tagwall_json, unique_lab

pytestmark = privileged

POOL = ("fw-a", "fw-b", "fw-c")
INTERVAL_S, FAILURES = 0.5, 2
BOUND_S = INTERVAL_S * FAILURES + INTERVAL_S  # the bound: failures, plus one interval


@dataclass(frozen=True)
class Placement:
    """Where a lab puts its workloads, and the TTLs its probes count (``member_table``,
    ``ids_table``)."""

    name: str
    web: str  # host of web
    services: str  # host of the pool's members and ids
    ends: str  # host of app and db
    ttl: dict[str, int]  # probe comment → TTL a packet has at that hook


# TTL 64; every forwarding namespace lowers it by one before its forward hook, the ids bridge
# and the tunnels do not.  Local: through [pool-1, ids-1] in order, a request meets the
# member's hook at 62 and ids' at 61; an answer from db meets ids' hook at 63 and the
# member's at 61 (in the other order they would read 61, 63, 61 and 62).  Remote: a request
# crosses host-1 (63), host-2 (62) and meets the member's hook at 61, then host-2 (60), host-1
# (59), host-2 and ids' hook at 58; an answer from db crosses host-3 (63), host-1 (62), host-2
# and ids' hook at 61, then host-2 (60), host-1 (59), host-2 (58) and the member's hook at 57.
PLACEMENTS = [
    Placement(
        "local",
        "host-1",
        "host-1",
        "host-1",
        {"request-first": 62, "answer-second": 61, "request-second": 61, "answer-first": 63},
    ),
    Placement(
        "remote",
        "host-1",
        "host-2",
        "host-3",
        {"request-first": 61, "answer-second": 57, "request-second": 58, "answer-first": 61},
    ),
]


def _member(name: str, n: int, host: str) -> str:
    return f"""\
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: {name}}}
spec:
  host: {host}
  interfaces:
  - {{name: left, ips: [10.9.0.{n}], role: left}}
  - {{name: right, ips: [10.9.1.{n}], role: right}}
"""


def manifests(p: Placement) -> str:
    return (
        f"""\
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: web}}
spec: {{host: {p.web}, interfaces: [{{name: eth0, ips: [10.1.0.11]}}], tags: {{tier: web}}}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: app}}
spec: {{host: {p.ends}, interfaces: [{{name: eth0, ips: [10.1.0.21]}}], tags: {{tier: app}}}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: db}}
spec: {{host: {p.ends}, interfaces: [{{name: eth0, ips: [10.1.0.31]}}], tags: {{tier: db}}}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {{name: ids}}
spec:
  host: {p.services}
  interfaces: [{{name: left, role: left}}, {{name: right, role: right}}]
---
"""
        + "---\n".join(_member(name, n, p.services) for n, name in enumerate(POOL, 1))
        + _POLICY
    )


_POLICY = f"""\
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {{name: pool}}
spec:
  mode: in-network
  healthCheck: {{type: icmp, intervalS: {INTERVAL_S}, timeoutS: 0.25, failures: {FAILURES}}}
  whenAllDown: fail-open
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {{name: bump}}
spec:
  mode: transparent
  healthCheck: {{type: icmp, intervalS: {INTERVAL_S}, timeoutS: 0.25, failures: {FAILURES}}}
  whenAllDown: fail-closed
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {{name: pool-1}}
spec: {{template: pool, workloads: [{", ".join(POOL)}]}}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {{name: ids-1}}
spec: {{template: bump, workloads: [ids]}}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {{name: steer}}
spec:
  rules:
  - {{name: web-to-app, from: {{tags: tier=web}}, to: {{tags: tier=app}}, services: [udp/7],
     action: redirect, via: [pool-1]}}
  - {{name: web-to-db, from: {{tags: tier=web}}, to: {{tags: tier=db}}, services: [udp/7],
     action: redirect, via: [pool-1, ids-1]}}
  - {{name: rest, from: {{any: true}}, to: {{any: true}}, action: allow}}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {{name: steer}}
spec: {{tier: admin, all: true, directions: [egress], policies: [{{name: steer, sequence: 1}}]}}
"""
ADDRESS = {"web": "10.1.0.11", "app": "10.1.0.21", "db": "10.1.0.31"}


# Counted in the service namespaces: udp/7 requests and answers by TTL (``Placement``).
def member_table(p: Placement) -> str:
    return f"""\
table inet probe {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ct state new counter comment "conntrack on"
    ip daddr 10.1.0.31 udp dport 7 ip ttl {p.ttl["request-first"]} counter comment "request-first"
    ip saddr 10.1.0.31 udp sport 7 ip ttl {p.ttl["answer-second"]} counter comment "answer-second"
  }}
}}
"""


def ids_table(p: Placement) -> str:
    ttl = p.ttl
    return f"""\
table bridge probe {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "left" ip daddr 10.1.0.31 udp dport 7 ip ttl {ttl["request-second"]} counter \
comment "request-second"
    iifname "right" ip saddr 10.1.0.31 udp sport 7 ip ttl {ttl["answer-first"]} counter \
comment "answer-first"
  }}
}}
"""


def _run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@dataclass
class Lab:
    lab: RunningLab
    docs: list[Document]
    placement: Placement

    def namespace(self, workload: str) -> str:
        return f"{self.lab.name}-w-{workload}"

    def flows(self, member: str) -> dict[int, tuple[int, int]]:
        """web's udp/7 flows that crossed ``member``: source port → (packets out, back)."""
        text = _run("ip", "netns", "exec", self.namespace(member), "conntrack", "-L", "-p", "udp")
        out = {}
        for line in text.splitlines():
            m = re.search(
                r"src=10\.1\.0\.11 dst=\S+ sport=(\d+) dport=7 packets=(\d+) .*?"
                r"sport=7 dport=\d+ packets=(\d+)",
                line,
            )
            if m:
                out[int(m[1])] = (int(m[2]), int(m[3]))
        return out

    def counted(self, member: str, family: str, comment: str) -> int:
        text = _run(
            "ip", "netns", "exec", self.namespace(member), "nft", "list", "table", family, "probe"
        )
        m = re.search(rf"counter packets (\d+) bytes \d+ comment \"{comment}\"", text)
        assert m, text
        return int(m[1])

    def set_dead(self, member: str, dead: bool) -> None:
        """Make ``member`` drop everything that reaches it (a hung workload: neither its
        health check nor steered packets get through), or undo that."""
        family = "bridge" if member == "ids" else "inet"
        hook = "forward" if member == "ids" else "prerouting"
        script = f"table {family} dead {{}}\ndelete table {family} dead\n"
        if dead:
            script += (
                f"table {family} dead {{ chain hung {{ type filter hook {hook} priority -300; "
                "policy drop; }; }\n"
            )
        ns = self.namespace(member)
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True
        )

    def instance_chain(self, index: int) -> str:
        """The host's chain of instance ``index`` entered by its left (``_steering``: ids-1
        is 0, pool-1 is 1), as nft lists it: how a test waits for health to be applied."""
        host = self.lab.host_namespace(self.placement.services)
        chain = f"svc_i{index}_l"
        return _run("ip", "netns", "exec", host, "nft", "list", "chain", "inet", "tagwall", chain)

    def pool_chain(self) -> str:
        return self.instance_chain(1)

    def ids_chain(self) -> str:
        return self.instance_chain(0)


class Flow:
    """One UDP flow from web: a socket with a fixed 5-tuple."""

    def __init__(self, lab: Lab, to: str) -> None:
        with entered(lab.namespace("web")):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDRESS["web"], 0))
        self.sock.connect((ADDRESS[to], 7))
        self.port: int = self.sock.getsockname()[1]

    def echo(self, timeout_s: float = 1.0) -> bool:
        """Send one datagram; True when its echo came back within ``timeout_s``."""
        payload = f"{time.monotonic()}".encode()
        self.sock.settimeout(timeout_s)
        self.sock.send(payload)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.sock.recv(256) == payload:
                    return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def _echo_servers(lab: Lab) -> Iterator[None]:
    socks: list[socket.socket] = []
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(256)
            except TimeoutError:
                continue
            sock.sendto(data, peer)

    threads = []
    for name in ("app", "db"):
        with entered(lab.namespace(name)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ADDRESS[name], 7))
        socks.append(sock)
        threads.append(threading.Thread(target=serve, args=(sock,), daemon=True))
        threads[-1].start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
        for sock in socks:
            sock.close()


@pytest.fixture(scope="module", params=PLACEMENTS, ids=lambda p: p.name)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    placement: Placement = request.param
    directory = tmp_path_factory.mktemp(f"scaleout-{placement.name}")
    docs = yaml_documents(directory, "lab.yaml", manifests(placement))
    with running_lab(docs, unique_lab(), directory / "state", controllers=1) as running:
        result = Lab(running, docs, placement)
        for member in POOL:
            ns = result.namespace(member)
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input=member_table(placement),
                text=True,
                check=True,
            )
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
        subprocess.run(
            ["ip", "netns", "exec", result.namespace("ids"), "nft", "-f", "-"],
            input=ids_table(placement),
            text=True,
            check=True,
        )
        with _echo_servers(result):
            yield result


def _healthy_again(lab: Lab) -> None:
    """Every pool member up and back in the hash (after a test took some down)."""
    for member in POOL:
        lab.set_dead(member, False)
    lab.set_dead("ids", False)
    wait_until(lambda: "symhash mod 3" in lab.pool_chain(), 10, "all of pool-1 healthy")
    wait_until(lambda: "symhash mod 1" in lab.ids_chain(), 10, "ids-1 healthy")


Where = dict[str, dict[int, tuple[int, int]]]  # member → ``Lab.flows``


def _where(lab: Lab) -> Where:
    return {member: lab.flows(member) for member in POOL}


def _crossed(lab: Lab, flows: list[Flow], before: Where) -> dict[int, dict[str, tuple[int, int]]]:
    """For each flow's port, the members it crossed since ``before``, with the packets it
    added there (out, back).  A port's mere presence in a member's conntrack says nothing:
    a closed flow of an earlier test leaves its entry behind for 30 s or more; the kernel may
    hand its port to a new socket.  An entry that expired and came back counts from zero."""
    now = _where(lab)
    crossed: dict[int, dict[str, tuple[int, int]]] = {}
    for f in flows:
        crossed[f.port] = {}
        for member in POOL:
            counts, old = now[member].get(f.port), before[member].get(f.port, (0, 0))
            if counts is None or counts == old:
                continue
            grown = (counts[0] - old[0], counts[1] - old[1])
            crossed[f.port][member] = grown if min(grown) >= 0 else counts
    return crossed


def test_flows_spread_over_all_three_both_directions_on_one(lab: Lab) -> None:
    """30 flows web → app: every one is answered, crossed exactly one member, both ways,
    and each member carried some."""
    flows = [Flow(lab, "app") for _ in range(30)]
    try:
        before = _where(lab)
        assert all(f.echo() for f in flows)
        crossed = _crossed(lab, flows, before)
        for port, carried in crossed.items():
            assert len(carried) == 1, (port, carried)
            ((_, (out, back)),) = carried.items()
            assert out >= 1 and back >= 1
        assert {m for carried in crossed.values() for m in carried} == set(POOL), crossed
    finally:
        for f in flows:
            f.close()


def test_get_serviceinstances_shows_each_member_with_its_steered_flows(lab: Lab) -> None:
    """The agent reports its service workloads to the controller: ``tagwall get
    serviceinstances`` shows pool-1 up, each member healthy, and the flows and packets
    steered into each, as the members' own conntrack saw them."""
    before = _settled(lab)["pool-1"]
    flows = [Flow(lab, "app") for _ in range(9)]
    try:
        where = _where(lab)
        assert all(f.echo() for f in flows)
        crossed = _crossed(lab, flows, where)
        carried = {m: sum(m in members for members in crossed.values()) for m in POOL}
    finally:
        for f in flows:
            f.close()

    def steered(item: dict[str, Any]) -> dict[str, int]:
        return {w["workload"]: w["flows"] or 0 for w in item["workloads"]}

    wait_until(
        lambda: sum(steered(_status(lab)["pool-1"]).values()) >= sum(steered(before).values()) + 9,
        15,
        "the agent's report of 9 more flows",
    )
    pool = _status(lab)["pool-1"]
    assert (pool["mode"], pool["whenAllDown"], pool["health"]) == ("in-network", "fail-open", "up")
    assert all(w["healthy"] and w["host"] == lab.placement.services for w in pool["workloads"])
    more = {m: n - steered(before).get(m, 0) for m, n in steered(pool).items()}
    assert more == carried
    assert all(w["packets"] > 0 for w in pool["workloads"] if carried[w["workload"]])


def test_flow_records_name_what_carried_each_flow(lab: Lab) -> None:
    """The agent's flow reports say what carried a flow (its ``ct label`` read back).  Local:
    for each of 6 flows web → app, the one member whose conntrack saw it.  Remote: the
    instance and the host that served it (which member is that host's choice: ``get
    serviceinstances`` counts it there).  A flow through the chain names both, in order."""
    started_ms = int(time.time() * 1000)
    flows = [Flow(lab, "app") for _ in range(6)]
    chained = Flow(lab, "db")
    try:
        before = _where(lab)
        assert all(f.echo() for f in flows) and chained.echo()
        carried = {port: ",".join(m) for port, m in _crossed(lab, flows, before).items()}
    finally:
        for f in [*flows, chained]:
            f.close()

    def reported() -> dict[int, str | None]:
        items = httpx.get(
            f"{lab.lab.urls[0]}/api/v1/flows",
            params={"workload": "web", "port": 7, "limit": 1000},
            timeout=5,
        ).json()["items"]
        # Earlier tests' flows may have had these ports; a flow seen in this test may also
        # have started before it, when its socket got a port whose conntrack entry was live.
        return {f["src"]["port"]: f["via"] for f in items if f["end_ms"] >= started_ms}

    # UDP flows are reported once idle for a snapshot interval (10 s).
    wait_until(lambda: set(carried) | {chained.port} <= set(reported()), 60, "6 + 1 reports")
    seen = reported()
    if lab.placement.name == "remote":
        assert {seen[port] for port in carried} == {"pool-1@host-2"}
        assert seen[chained.port] == "pool-1@host-2,ids-1@host-2"
        return
    assert {port: seen[port] for port in carried} == {
        port: f"pool-1/{member}" for port, member in carried.items()
    }
    first, second = seen[chained.port].split(",")  # type: ignore[union-attr]
    assert first.startswith("pool-1/") and second == "ids-1/ids"


def _status(lab: Lab) -> dict[str, dict[str, Any]]:
    """``tagwall get serviceinstances -o json``, by instance name."""
    body = tagwall_json("get", "serviceinstances", "--server", lab.lab.urls[0])
    return {item["name"]: item for item in body["items"]}


def _settled(lab: Lab) -> dict[str, dict[str, Any]]:
    """The status once it no longer changes between two reports (2 s apart): earlier tests'
    flows are all in it."""
    counts = lambda s: [(w["workload"], w["flows"]) for w in s["pool-1"]["workloads"]]  # noqa: E731
    last = _status(lab)
    while True:
        time.sleep(2.5)
        now = _status(lab)
        if counts(now) == counts(last) and all(f is not None for _, f in counts(now)):
            return now
        last = now


def test_a_chain_of_two_is_crossed_in_order_both_ways(lab: Lab) -> None:
    """web → db crosses a pool-1 member, then ids; the answer crosses ids, then the same
    member (the TTL counters of the module docstring)."""
    before = {m: lab.counted(m, "inet", "request-first") for m in POOL}
    answers = {m: lab.counted(m, "inet", "answer-second") for m in POOL}
    ids = (
        lab.counted("ids", "bridge", "request-second"),
        lab.counted("ids", "bridge", "answer-first"),
    )
    flow = Flow(lab, "db")
    try:
        assert flow.echo()
    finally:
        flow.close()
    requests = {m: lab.counted(m, "inet", "request-first") - before[m] for m in POOL}
    (member,) = [m for m, n in requests.items() if n]
    assert requests[member] == 1
    assert lab.counted(member, "inet", "answer-second") - answers[member] == 1
    assert lab.counted("ids", "bridge", "request-second") - ids[0] == 1
    assert lab.counted("ids", "bridge", "answer-first") - ids[1] == 1


def test_a_failed_member_loses_new_and_existing_flows_within_the_bound(lab: Lab) -> None:
    """The member of a running flow hangs: the flow is answered again, through another
    member, within interval x failures + one interval; new flows are all answered, none
    through it; when it is back, the moved flow stays where it went."""
    flows = [Flow(lab, "app") for _ in range(12)]
    try:
        before = _where(lab)
        assert all(f.echo() for f in flows)
        flow = flows[0]
        (dead,) = _crossed(lab, [flow], before)[flow.port]
        moving = _where(lab)
        lab.set_dead(dead, True)
        failed_at = time.monotonic()
        while not flow.echo(timeout_s=0.05):
            assert time.monotonic() - failed_at < 10, "the flow never came back"
        moved_s = time.monotonic() - failed_at
        print(f"failover: {moved_s:.2f} s (bound {BOUND_S:g} s)")
        assert moved_s <= BOUND_S
        (now,) = [m for m, (_, back) in _crossed(lab, [flow], moving)[flow.port].items() if back]
        assert now != dead
        fresh = [Flow(lab, "app") for _ in range(12)]
        try:
            before = _where(lab)
            assert all(f.echo() for f in fresh)
            crossed = _crossed(lab, fresh, before)
            assert all(len(members) == 1 and dead not in members for members in crossed.values())
            assert lab.flows(dead) == before[dead]
        finally:
            for f in fresh:
                f.close()
        _healthy_again(lab)
        out, back = lab.flows(now)[flow.port]
        assert flow.echo()
        assert lab.flows(now)[flow.port] == (out + 1, back + 1)  # stayed on ``now``
    finally:
        for f in flows:
            f.close()
        _healthy_again(lab)


def test_all_members_down_fail_open_bypasses_fail_closed_drops(lab: Lab) -> None:
    """pool-1 all down (fail-open): web → app is answered directly, no member sees it; the
    chain web → db still crosses ids.  ids down too (fail-closed): web → db is dropped while
    web → app still passes."""
    try:
        for member in POOL:
            lab.set_dead(member, True)
        wait_until(lambda: "symhash" not in lab.pool_chain(), 10, "pool-1 all down")
        flow = Flow(lab, "app")
        chained = Flow(lab, "db")
        bridged = lab.counted("ids", "bridge", "answer-first")
        try:
            assert flow.echo()
            assert all(flow.port not in lab.flows(m) for m in POOL)
            assert chained.echo()
            assert lab.counted("ids", "bridge", "answer-first") == bridged + 1
            lab.set_dead("ids", True)
            wait_until(lambda: "drop" in lab.ids_chain(), 10, "ids-1 down")
            assert not chained.echo()
            assert flow.echo()
        finally:
            flow.close()
            chained.close()
    finally:
        _healthy_again(lab)
