"""Steering: a TCP flow through a pass-through service instance steered by tagwall, against
the same path set up by hand with static routes, in one run; and failover (needs root).

The lab (``tagwall.lab.up``, no agents, one controller) is bench/datapath.py's two workloads
plus one service workload::

    bench-client 10.99.0.1 ── bench-a ══ fabric ══ bench-b ── bench-server 10.99.0.2
                                │   ▲
                          left  ▼   │ right
                      bench-fwd: 10.98.0.1 | 10.98.1.1  (in-network, function: forwarder —
                                   kernel forwarding, no inspection)

Both variants send client → server through bench-fwd and back: in by its left, out by its
right, through the fabric to bench-b; the replies come back from bench-b, in by its right,
out by its left, to the client.  Only bench-a, the client's host, steers.

* ``tagwall``: each host's ``Program`` (``Compiler(config).program(host)``) loaded by
  ``NftDatapath(netns=<host namespace>).load``.  The policy: one admin rule redirects
  client → server tcp/5201 ``via: [fwd-1]``, another allows the rest.  So bench-a's table
  classifies the flow's first packet, pins it in a ``ct label`` and marks every packet for
  policy routing into the instance (docs/steering.md); both hosts also run their firewall
  (conntrack, the established shortcut) as they would in production.
* ``static``, the baseline: no nftables at all; on bench-a two policy-routing rules and
  tables written by hand with ``ip``: what enters from the client's port for the server goes
  ``via`` the forwarder's left, what enters from the fabric for the client goes ``via`` its
  right (packets coming back out of the forwarder take the main table).  This is the least a
  hand-made path needs: a plain route to the server via the forwarder would also catch the
  packets the forwarder sends back, and loop.
* ``static-firewall``, to tell steering from filtering: the hand-made path plus each host's
  tagwall program with the redirect rule turned into ``allow`` (conntrack and the policy
  walk, no steering).  tagwall / static-firewall is then the cost of steering alone,
  static-firewall / static the cost of the firewall itself (bench/datapath.py measures it
  without a service in the path).

Measured per variant, in ``--repeats`` rounds (the order rotated each round), medians
reported: TCP throughput, iperf3, one stream client → server for ``--seconds``, Gbit/s
received.  Each run also reads the packets the forwarder received on each side
(``instance_rx_packets``): a variant whose flow did not cross the instance both ways fails
the benchmark rather than report a figure for a different path.

``steering_throughput_ratio`` = median(tagwall) / median(static); the target (DESIGN §6) is
≥ 0.9.  ``steering_only_ratio`` = median(tagwall) / median(static-firewall) and
``firewall_ratio`` = median(static-firewall) / median(static).  The per-round ratios
(``…_rounds``, variants of one round back to back) show the machine's noise.
``cpu_s_per_gb_<variant>``: the CPU time the whole machine spent (``/proc/stat``: user,
system, interrupts) per GB delivered, median; ``cpu_per_byte_ratio`` = tagwall's / static's.
Less noisy than throughput when the two cores are not both saturated, and it shows a cost
that throughput hides when a core has time to spare.

**Across hosts** (``--no-remote`` skips it), in a lab of its own built afterwards: the same
client and server, the forwarder on a third host, ``bench-c``; the policy of the
``tagwall`` variant, each host declared with its fabric address (``Host.address``), so
bench-a steers the flow to bench-c through the instance's VXLAN tunnel and back
(docs/steering.md "Remote instances"): client → bench-a ═ bench-c → forwarder → bench-c ═
bench-a → bench-b → server, the replies the reverse.  ``throughput_tagwall_remote_gbps``
(median of ``--repeats`` runs, each checked to cross the forwarder both ways) and
``remote_over_local_ratio`` = it / ``throughput_tagwall_gbps``: what a remote instance costs
against a local one (three more fabric crossings each way, two of them encapsulated, on one
machine's CPU).

**Failover**, in a second lab built afterwards with the nftables agents running (their
health checks decide): the same client, server and hosts; the instance ``pool-1`` has two
forwarder workloads on bench-a, ``fwd-a`` and ``fwd-b``, with an ICMP health check every
``--interval-s`` (timeout half of it, ``--failures`` failed probes → down) and
``whenAllDown: fail-closed`` (so no bypass can pass for a failover).  One admin rule
redirects client → server udp/7 via ``[pool-1]``.  A trial: a UDP flow (one socket, one
5-tuple) from the client to an echo server in the server's namespace is answered; the member
carrying it (by its packet counters) fails: a table in its namespace drops every packet, as
a hung service would (a link set down would also take its routes with it); the client then
sends one datagram every 10 ms until one is answered again, through the other member (checked
by its counters).  ``failover_s`` is the median time from the failure to that answer; the
table goes and the next trial waits until new flows cross that member again (the agent has
seen it healthy and put it back in the hash).  The bound the health checks allow is
``(failures + 1) * interval``: target ≤ 3 s with a 1 s interval, which needs ``--failures``
≤ 2 (the default; with 3 the bound is 4 s).

iperf3's client runs on CPU 0 and its server on CPU 1 (``-A 0,1``; ``--pin``), the same in
every variant.  Left to the scheduler, the two ends and the forwarding they trigger trade
places on this 2-core machine mid-run, and tagwall's extra work per packet then costs more
throughput (docs/benchmarks.md, "Steering": runs H to L).

Usage: python bench/steering.py [--json] [--seconds S] [--repeats N] [--interval-s S]
       [--failures N] [--failover-trials N] [--lab NAME] [--no-remote] [--pin C,S|none]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _estate import doc, report, say
from datapath import (
    CLIENT,
    CLIENT_HOST,
    CLIENT_IP,
    PORT,
    SERVER,
    SERVER_IP,
    built_lab,
    iperf3,
    lab_documents,
    read_manifests,
    signals_held,
    tcp_gbps,
)

from tagwall._netns import entered
from tagwall.compiler import Compiler
from tagwall.datapath import NftDatapath, nft_cleanup
from tagwall.lab import LabState, check_lab_name
from tagwall.model import load as load_config

FORWARDER, INSTANCE = "bench-fwd", "fwd-1"
POOL, POOL_INSTANCE = ("fwd-a", "fwd-b"), "pool-1"
VARIANTS = ("tagwall", "static", "static-firewall")
STATIC_TABLES = {"out": 200, "back": 201}  # bench-a's hand-made tables (and rule priorities)
FABRIC = "fabric"  # a lab host's leg into the fabric (docs/lab.md)
MIN_INSTANCE_PACKETS = 100  # per side and run: far fewer means the flow went around it
TARGET_RATIO = 0.9
TARGET_FAILOVER_S = 3.0
RATIOS = {  # name → (variant, over variant)
    "steering_throughput_ratio": ("tagwall", "static"),
    "steering_only_ratio": ("tagwall", "static-firewall"),
    "firewall_ratio": ("static-firewall", "static"),
}
ECHO_PORT = 7
RESEND_S = 0.01  # failover: one datagram per 10 ms, so the figure's resolution
WAIT_HEALTHY_S = 30.0
FAIL_TABLE = "inet benchfail"
FAIL = (  # before conntrack and routing, every packet, health probes included
    f"table {FAIL_TABLE} {{ chain c {{ type filter hook prerouting priority -400; "
    "policy drop; }; }"
)


# -- intent -----------------------------------------------------------------------------------


def _forwarder_ips(n: int) -> tuple[str, str]:
    """The left and right addresses of the ``n``-th forwarder."""
    return f"10.98.0.{n}", f"10.98.1.{n}"


def _forwarder(name: str, n: int, host: str = CLIENT_HOST) -> dict[str, Any]:
    """A service workload, on the client's host unless ``host`` says otherwise."""
    left, right = _forwarder_ips(n)
    spec = {
        "host": host,
        "interfaces": [
            {"name": "left", "ips": [left], "role": "left"},
            {"name": "right", "ips": [right], "role": "right"},
        ],
    }
    return doc("Workload", name, spec)


def _policy(service: str, action: dict[str, Any]) -> list[dict[str, Any]]:
    """Client → server on ``service`` decided by ``action``; everything else allowed."""
    rule = {
        "name": "steer",
        "from": {"tags": "label=iperf-client"},
        "to": {"tags": "label=iperf-server"},
        "services": [service],
        **action,
    }
    rest = {"name": "rest", "from": {"any": True}, "to": {"any": True}, "action": "allow"}
    aps = {"tier": "admin", "all": True, "directions": ["egress", "ingress"]}
    return [
        doc("FirewallPolicy", "steer", {"rules": [rule, rest]}),
        doc("ApplicationPolicySet", "steer", {**aps, "policies": [{"name": "steer"}]}),
    ]


def throughput_documents(steered: bool = True, host: str = CLIENT_HOST) -> list[dict[str, Any]]:
    """The throughput lab, and the policy of the ``tagwall`` variant (``steered``) or of
    ``static-firewall`` (the same with ``allow`` for ``redirect``); the forwarder on
    ``host``."""
    action = {"action": "redirect", "via": [INSTANCE]} if steered else {"action": "allow"}
    template = {"mode": "in-network", "function": "forwarder"}
    return [
        *lab_documents(),
        _forwarder(FORWARDER, 1, host),
        doc("ServiceTemplate", "pass-through", template),
        doc("ServiceInstance", INSTANCE, {"template": "pass-through", "workloads": [FORWARDER]}),
        *_policy(f"tcp/{PORT}", action),
    ]


def failover_documents(interval_s: float, failures: int) -> list[dict[str, Any]]:
    """The failover lab: two forwarders in one instance, health-checked (module docstring)."""
    check = {"type": "icmp", "intervalS": interval_s, "timeoutS": interval_s / 2}
    template = {
        "mode": "in-network",
        "function": "forwarder",
        "healthCheck": {**check, "failures": failures},
        "whenAllDown": "fail-closed",
    }
    return [
        *lab_documents(),
        *(_forwarder(name, n) for n, name in enumerate(POOL, 1)),
        doc("ServiceTemplate", "pool", template),
        doc("ServiceInstance", POOL_INSTANCE, {"template": "pool", "workloads": list(POOL)}),
        *_policy(f"udp/{ECHO_PORT}", {"action": "redirect", "via": [POOL_INSTANCE]}),
    ]


# -- the labs ---------------------------------------------------------------------------------


def _ip(ns: str, *argv: str, check: bool = True) -> str:
    done = subprocess.run(["ip", "-n", ns, *argv], check=check, capture_output=True, text=True)
    return done.stdout


def rx_packets(ns: str, interface: str) -> int:
    """Packets ``interface`` of namespace ``ns`` has received so far."""
    listing = _ip(ns, "-s", "-j", "link", "show", "dev", interface)
    return int(json.loads(listing)[0]["stats64"]["rx"]["packets"])


def _workloads(state: LabState) -> dict[str, Any]:
    return {w.name: w for w in state.workloads}


# -- throughput -------------------------------------------------------------------------------


@dataclass
class Lab:
    client_ns: str
    server_ns: str
    forwarder_ns: str
    hosts: dict[str, str]  # host name → its namespace
    client_port: str  # on bench-a: the host side of the client's eth0
    left_port: str  # on bench-a: the host sides of the forwarder's left and right
    right_port: str

    @classmethod
    def of(cls, state: LabState) -> Lab:
        workloads = _workloads(state)
        ports = {i.name: i.peer for i in workloads[FORWARDER].interfaces}
        return cls(
            client_ns=workloads[CLIENT].namespace,
            server_ns=workloads[SERVER].namespace,
            forwarder_ns=workloads[FORWARDER].namespace,
            hosts={h.name: h.namespace for h in state.hosts},
            client_port=workloads[CLIENT].interfaces[0].peer,
            left_port=ports["left"],
            right_port=ports["right"],
        )


def static_path(lab: Lab) -> None:
    """The hand-made path on bench-a (module docstring)."""
    ns = lab.hosts[CLIENT_HOST]
    left, right = _forwarder_ips(1)
    legs = (
        ("out", lab.client_port, SERVER_IP, left, lab.left_port),
        ("back", FABRIC, CLIENT_IP, right, lab.right_port),
    )
    for leg, iif, destination, gateway, device in legs:
        table = str(STATIC_TABLES[leg])
        _ip(ns, "route", "add", "default", "via", gateway, "dev", device, "onlink", "table", table)
        _ip(ns, "rule", "add", "priority", table, "iif", iif, "to", destination, "lookup", table)


def clear(lab: Lab) -> None:
    """Neither variant in force, and no conntrack entries left by the last one."""
    for ns in lab.hosts.values():
        nft_cleanup(ns)  # tagwall's table and its policy routing
        # conntrack -F fails when the namespace tracks nothing: that is fine.
        subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-F"], capture_output=True)
    for table in STATIC_TABLES.values():
        _ip(lab.hosts[CLIENT_HOST], "rule", "del", "priority", str(table), check=False)
        _ip(lab.hosts[CLIENT_HOST], "route", "flush", "table", str(table), check=False)


def enforce(variant: str, lab: Lab, compilers: dict[str, Compiler]) -> None:
    if variant in compilers:
        for host, ns in lab.hosts.items():
            datapath = NftDatapath(netns=ns)
            datapath.load(compilers[variant].program(host))
            datapath.close()  # the table and routes stay in the kernel
    if variant.startswith("static"):
        static_path(lab)


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent not idle (user, system, interrupts) so far."""
    with open("/proc/stat") as f:
        ticks = [int(n) for n in f.readline().split()[1:]]
    # user, nice, system, irq, softirq (not idle, iowait, or steal: the hypervisor's)
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return busy / os.sysconf("SC_CLK_TCK")


def run_rounds(
    lab: Lab, compilers: dict[str, Compiler], args: argparse.Namespace
) -> dict[str, Any]:
    gbps: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}  # CPU seconds per GB delivered
    crossed: dict[str, list[dict[str, int]]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        k = r % len(VARIANTS)
        for variant in VARIANTS[k:] + VARIANTS[:k]:  # rotated: no variant always first
            clear(lab)
            enforce(variant, lab, compilers)
            before = {side: rx_packets(lab.forwarder_ns, side) for side in ("left", "right")}
            started = busy_cpu_s()
            end = iperf3(lab.client_ns, lab.server_ns, args.seconds, False, args.cpus)
            cpu[variant].append((busy_cpu_s() - started) / (end["sum_received"]["bytes"] / 1e9))
            packets = {side: rx_packets(lab.forwarder_ns, side) - n for side, n in before.items()}
            gbps[variant].append(tcp_gbps(end))
            crossed[variant].append(packets)
            if min(packets.values()) < MIN_INSTANCE_PACKETS:
                raise RuntimeError(
                    f"{variant}: the flow did not cross {FORWARDER} both ways "
                    f"(received {packets}): its figure would be for another path"
                )
            say(f"round {r + 1}/{args.repeats} {variant:15} {gbps[variant][-1]:.2f} Gbit/s")
    medians = {v: statistics.median(g) for v, g in gbps.items()}
    out: dict[str, Any] = {}
    for v in VARIANTS:
        name = f"throughput_{v.replace('-', '_')}_gbps"
        out[name] = round(medians[v], 3)
        out[f"{name}_runs"] = [round(g, 3) for g in gbps[v]]
    for v in VARIANTS:
        name = f"cpu_s_per_gb_{v.replace('-', '_')}"
        out[name] = round(statistics.median(cpu[v]), 4)
        out[f"{name}_runs"] = [round(c, 4) for c in cpu[v]]
    cpu_medians = {v: statistics.median(c) for v, c in cpu.items()}
    out["cpu_per_byte_ratio"] = round(cpu_medians["tagwall"] / cpu_medians["static"], 3)
    for ratio, (a, b) in RATIOS.items():
        out[ratio] = round(medians[a] / medians[b], 3)
        out[f"{ratio}_rounds"] = [round(x / y, 3) for x, y in zip(gbps[a], gbps[b], strict=True)]
    out["instance_rx_packets"] = crossed
    return out


def measure_throughput(args: argparse.Namespace, here: Path) -> dict[str, Any]:
    (here / "lab.json").write_text(json.dumps(throughput_documents()))
    (here / "allow.json").write_text(json.dumps(throughput_documents(steered=False)))
    docs = read_manifests(here / "lab.json")
    compilers = {
        "tagwall": Compiler(load_config(docs)),
        "static-firewall": Compiler(load_config(read_manifests(here / "allow.json"))),
    }
    with built_lab(docs, args.lab, here / "state", agents=False) as state:
        lab = Lab.of(state)
        try:
            return run_rounds(lab, compilers, args)
        finally:
            with signals_held():
                clear(lab)


# -- across hosts -----------------------------------------------------------------------------

REMOTE_HOST = "bench-c"


def measure_remote(args: argparse.Namespace, here: Path, local_gbps: float) -> dict[str, Any]:
    """The forwarder on a third host (module docstring)."""
    (here / "remote.json").write_text(json.dumps(throughput_documents(host=REMOTE_HOST)))
    docs = read_manifests(here / "remote.json")
    with built_lab(docs, args.lab, here / "remote-state", agents=False) as state:
        hosts = [doc("Host", h.name, {"address": str(h.fabric_ipv4)}) for h in state.hosts]
        (here / "hosts.json").write_text(json.dumps(hosts))
        compiler = Compiler(load_config([*docs, *read_manifests(here / "hosts.json")]))
        workloads = _workloads(state)
        namespaces = {h.name: h.namespace for h in state.hosts}
        forwarder_ns = workloads[FORWARDER].namespace
        runs: list[float] = []
        try:
            for r in range(args.repeats):
                for ns in namespaces.values():
                    nft_cleanup(ns)
                    subprocess.run(
                        ["ip", "netns", "exec", ns, "conntrack", "-F"], capture_output=True
                    )
                for host, ns in namespaces.items():
                    datapath = NftDatapath(netns=ns)
                    datapath.load(compiler.program(host))
                    datapath.close()
                before = {side: rx_packets(forwarder_ns, side) for side in ("left", "right")}
                client, server = workloads[CLIENT].namespace, workloads[SERVER].namespace
                end = iperf3(client, server, args.seconds, False, args.cpus)
                packets = {side: rx_packets(forwarder_ns, side) - n for side, n in before.items()}
                if min(packets.values()) < MIN_INSTANCE_PACKETS:
                    raise RuntimeError(
                        f"tagwall-remote: the flow did not cross {FORWARDER} both ways "
                        f"(received {packets}): its figure would be for another path"
                    )
                runs.append(tcp_gbps(end))
                say(f"round {r + 1}/{args.repeats} tagwall-remote   {runs[-1]:.2f} Gbit/s")
        finally:
            with signals_held():
                for ns in namespaces.values():
                    nft_cleanup(ns)
    median = statistics.median(runs)
    return {
        "throughput_tagwall_remote_gbps": round(median, 3),
        "throughput_tagwall_remote_gbps_runs": [round(g, 3) for g in runs],
        "remote_over_local_ratio": round(median / local_gbps, 3),
    }


# -- failover ---------------------------------------------------------------------------------


@contextlib.contextmanager
def echo_server(ns: str) -> Iterator[None]:
    """UDP echo on the server's address, ``ECHO_PORT``, from a thread of this process."""
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SERVER_IP, ECHO_PORT))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(256)
            except TimeoutError:
                continue
            sock.sendto(data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sock.close()


class Flow:
    """One UDP flow client → server: a connected socket, so one 5-tuple for its life."""

    def __init__(self, client_ns: str) -> None:
        with entered(client_ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((CLIENT_IP, 0))
        self.sock.connect((SERVER_IP, ECHO_PORT))
        self.sent = 0

    def echo(self, timeout_s: float) -> bool:
        """One datagram; True when its own echo comes back within ``timeout_s`` (late echoes
        of earlier datagrams are skipped)."""
        self.sent += 1
        payload = str(self.sent).encode()
        deadline = time.monotonic() + timeout_s
        self.sock.send(payload)
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if self.sock.recv(64) == payload:
                    return True
            except (TimeoutError, ConnectionRefusedError):
                return False
        return False

    def close(self) -> None:
        self.sock.close()


ECHOES = 5  # datagrams by which a flow's member is found (health probes add 1-2 per member)


def carrier(flow: Flow, members: dict[str, str]) -> str:
    """The one member whose left received the flow's next ``ECHOES`` datagrams, all answered."""
    before = {m: rx_packets(ns, "left") for m, ns in members.items()}
    if not all(flow.echo(1.0) for _ in range(ECHOES)):
        raise RuntimeError("the steered flow is not answered")
    found = [m for m, ns in members.items() if rx_packets(ns, "left") - before[m] >= ECHOES]
    if len(found) != 1:
        raise RuntimeError(f"the flow should cross one member, crossed {found}")
    return found[0]


def wait_in_hash(client_ns: str, members: dict[str, str], member: str) -> None:
    """Until new flows are steered through ``member`` again: fresh flows (new source ports,
    so new hashes) until one crosses it.  Real packets, so it holds whatever the agent
    reports."""
    deadline = time.monotonic() + WAIT_HEALTHY_S
    while time.monotonic() < deadline:
        flow = Flow(client_ns)
        try:
            if carrier(flow, members) == member:
                return
        except RuntimeError:
            pass  # not answered: the agent is still installing the path
        finally:
            flow.close()
        time.sleep(0.1)
    raise RuntimeError(f"no new flow crossed {member} within {WAIT_HEALTHY_S:g} s")


def fail(ns: str, failed: bool) -> None:
    """Make the service workload in ``ns`` drop every packet (``failed``), or pass again."""
    script = FAIL if failed else f"delete table {FAIL_TABLE}"
    argv = ["ip", "netns", "exec", ns, "nft", "-f", "-"]
    subprocess.run(argv, input=script, text=True, check=True, capture_output=True)


def failover_trial(client_ns: str, members: dict[str, str]) -> tuple[float, str, str]:
    """(seconds from the failure to the next answer, the failed member, the one now carrying
    the flow).  The failed member still drops everything when it returns."""
    flow = Flow(client_ns)
    try:
        failed = carrier(flow, members)
        fail(members[failed], True)
        failed_at = time.monotonic()
        while not flow.echo(RESEND_S):
            if time.monotonic() - failed_at > WAIT_HEALTHY_S:
                raise RuntimeError(f"the flow was not answered again after {failed} failed")
        moved_s = time.monotonic() - failed_at
        return moved_s, failed, carrier(flow, members)
    finally:
        flow.close()


def measure_failover(args: argparse.Namespace, here: Path) -> dict[str, Any]:
    (here / "failover.json").write_text(
        json.dumps(failover_documents(args.interval_s, args.failures))
    )
    docs = read_manifests(here / "failover.json")
    with built_lab(docs, args.lab, here / "failover-state", agents=True) as state:
        workloads = _workloads(state)
        members = {m: workloads[m].namespace for m in POOL}
        client_ns = workloads[CLIENT].namespace
        runs: list[float] = []
        with echo_server(workloads[SERVER].namespace):
            for member in POOL:
                wait_in_hash(client_ns, members, member)
            for t in range(args.failover_trials):
                moved_s, failed, now = failover_trial(client_ns, members)
                runs.append(moved_s)
                say(f"failover {t + 1}/{args.failover_trials}: {failed} → {now} in {moved_s:.2f} s")
                fail(members[failed], False)
                wait_in_hash(client_ns, members, failed)
    return {
        "failover_s": round(statistics.median(runs), 3),
        "failover_s_runs": [round(r, 3) for r in runs],
        "failover_max_s": round(max(runs), 3),
        "failover_health_check": {
            "type": "icmp",
            "intervalS": args.interval_s,
            "timeoutS": args.interval_s / 2,
            "failures": args.failures,
        },
        "failover_bound_s": (args.failures + 1) * args.interval_s,
        "target_failover_s": TARGET_FAILOVER_S,
    }


def _cpus(text: str) -> tuple[int, int]:
    client, server = (int(n) for n in text.split(","))
    if min(client, server) < 0:
        raise ValueError(text)
    return client, server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--seconds", type=int, default=5, help="per iperf3 run (default 5)")
    ap.add_argument("--repeats", type=int, default=6, help="rounds of the variants (default 6)")
    ap.add_argument("--interval-s", type=float, default=1.0, help="health check interval")
    ap.add_argument("--failures", type=int, default=2, help="failed checks before down")
    ap.add_argument("--failover-trials", type=int, default=5, help="default 5")
    ap.add_argument("--lab", default="twlabsteer", help="lab name (twlab + ≤ 8 [a-z0-9])")
    ap.add_argument("--no-remote", action="store_true", help="skip the forwarder on another host")
    ap.add_argument(
        "--pin",
        default="0,1" if (os.cpu_count() or 1) > 1 else "none",
        help="CLIENT,SERVER: the CPUs of iperf3's two ends (default 0,1), or none",
    )
    args = ap.parse_args(argv)
    try:
        args.cpus = None if args.pin == "none" else _cpus(args.pin)
    except ValueError:
        ap.error(f"--pin {args.pin!r}: two CPU numbers, CLIENT,SERVER (e.g. 0,1), or none")
    if os.geteuid() != 0:
        say("needs root: it builds labs of network namespaces and programs their routes")
        return 2
    if min(args.repeats, args.seconds, args.failures, args.failover_trials) < 1:
        ap.error("--repeats, --seconds, --failures and --failover-trials are ≥ 1")
    if args.interval_s <= 0:
        ap.error("--interval-s > 0")
    check_lab_name(args.lab)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="tagwall-bench-") as tmp:
            throughput = measure_throughput(args, Path(tmp))
            local = throughput["throughput_tagwall_gbps"]
            remote = {} if args.no_remote else measure_remote(args, Path(tmp), local)
            failover = measure_failover(args, Path(tmp))
    except KeyboardInterrupt:
        say("interrupted: the labs and their routes are removed")
        return 130
    result: dict[str, Any] = {
        "lab": args.lab,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "pin": args.pin,
        **throughput,
        "target_ratio": TARGET_RATIO,
        **remote,
        **failover,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
