"""Data path cost: what tagwall's nftables program costs real packets, against no policy and
against the same rules as a linear iptables chain (the legacy way), in one run (needs root).

Two workloads of a lab (``tagwall.lab.up``, no agents, one controller): ``bench-client`` on
host ``bench-a`` and ``bench-server`` on host ``bench-b``.  Every packet between them crosses
the forward hook of host a, the fabric bridge and the forward hook of host b.  Measured:

* **TCP throughput** — iperf3, one stream client → server for ``--seconds``, Gbit/s received;
* **new-connection rate** — TCP connections per second that ``--conn-clients`` Python
  processes in the client's namespace open (a complete handshake) and close abortively
  (``SO_LINGER`` 0: an RST, so no TIME_WAIT and no port exhaustion limits the loop), against
  an accept-and-close listener in the server's namespace.  A connect counts when it completes
  within ``--seconds``.  It measures the whole machine's connection capacity with both cores
  busy (Python loops, kernel TCP, two forwarding hops, the firewall), so a firewall's cost
  shows as its share of that work.  With tagwall the SYN is the one packet of a connection
  that walks the rules (the rest are established); with the legacy chain every packet does;
* **64-byte UDP packets per second** received (iperf3 ``-u -l 64 -b 0``): per-packet cost.

Every variant is also checked to drop client → server on a port no rule allows (a listener
there answers when nothing enforces: ``blocked_other_port``), and the packets counted by the
allowing rule are read back (``allow_rule_packets``: tagwall counts one SYN per connection).

Variants of the two host namespaces' forward path, measured in the same lab, interleaved round
by round (``--repeats`` rounds, the order rotated each round; medians reported):

* ``none``: no rules (and so no conntrack: nothing in the namespaces asks for it);
* ``tagwall``: each host's ``Program`` (``Compiler(config).program(host)``) loaded by
  ``NftDatapath(netns=<host namespace>).load`` — the baseline chains' ``ct state
  established,related accept`` first, sets and maps for the members;
* ``tagwall-flows``: the same programs plus, per host, the flow recorder an agent runs by
  default (``tagwall.agent.recorder.FlowRecorder``: conntrack accounting, timestamps and events
  on, every NEW and DESTROY event read and assembled, reports spooled to a temporary
  directory; the controller URL answers nothing, so nothing is shipped).  Its connection rate
  is measured after ``STEADY_S`` of connections, so that the recorder handles as many
  DESTROY events as connections are made while it is measured.  Its statistics (reports,
  kernel events lost to a full receive buffer) are in ``flow_recorder``;
* ``iptables``: the legacy baseline — per host, the FORWARD chain holds one iptables rule per
  compiled rule of the same program, in evaluation order, with addresses written out (see
  ``iptables_lines``), no set lookups and no conntrack, so every packet walks the chain, the
  allowing rule last; then the stateless rules for the replies and a final DROP.
  ``--iptables nft`` (default: what ``iptables`` is on Debian 12) or ``legacy`` (x_tables).

Intent (fixed seed): the two lab workloads plus ``--members`` other workloads on 500 other
hosts (compiled, never built), tags as in bench/nft_program.py; ``--rules`` compiled rules in
50 policy sets.  Half the sets are egress sets that pick site ``ams`` (the client's), half are
ingress sets that pick site ``fra`` (the server's); the first of each direction is in the
admin tier, the rest in the application tier.  So host a's program holds ``rules/2`` egress
rules and host b's ``rules/2`` ingress rules, and a packet of the test flow meets all of them on
its way.  Rules go from a tier to a tier and deployment (half with ``matchTags: [application,
deployment]``; some from an address group with prefixes, some to a ``site,label`` selector),
with services that never include the test port, and allow / deny / reject.  The test flow
(client → server, tcp/5201 and udp/5201) is allowed only by the last rule of the last
application set of each direction: a new connection's SYN walks every rule at both hosts.

``--diagnose`` adds the variant ``ct-only`` (tagwall's base chain with nothing after the
conntrack shortcut): the floor of any stateful data path, which the new-connection rate
of tagwall's program is best read against; see "diagnosis" below.

The machine is shared and noisy: each figure is the median of the rounds, and the per-round
ratios (``…_rounds``, variants of one round run back to back) show the spread.

Usage: python bench/datapath.py [--json] [--seconds S] [--repeats N] [--members N]
       [--rules N] [--conn-clients N] [--iptables nft|legacy] [--no-udp] [--diagnose]
       [--lab NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _estate import (
    address,
    doc,
    report,
    say,
    tier_rule,
    workload_tags,
)

from tagwall._netns import entered
from tagwall.agent.recorder import FlowRecorder
from tagwall.compiler import AddressSet, CompiledRule, Compiler, Program
from tagwall.datapath import NftDatapath, nft_cleanup
from tagwall.lab import LabState, check_lab_name, down, up
from tagwall.model import (
    Action,
    Document,
    IPAddress,
    Protocol,
    Tier,
    TrafficDirection,
    parse_documents,
)
from tagwall.model import load as load_config

# Never the test port, never "any": no rule but the last may match the test flow.
SERVICES = ["tcp/443", "tcp/8080", "tcp/5432", "udp/53", "tcp/9000-9100", "icmp/8"]
N_SETS = 50
N_OTHER_HOSTS = 500
PORT = 5201  # iperf3's port; the connection-rate listener uses it too (never at the same time)
BLOCKED_PORT = 5202  # no rule allows it: an enforced variant must drop it
CLIENT, SERVER = "bench-client", "bench-server"
CLIENT_HOST, SERVER_HOST = "bench-a", "bench-b"
CLIENT_IP, SERVER_IP = "10.99.0.1", "10.99.0.2"
ALLOW_RULE = "iperf"
VARIANTS = ("none", "tagwall", "tagwall-flows", "iptables")
TARGET_RATIO_VS_NONE = 0.95
_NOWHERE = "192.0.2.1"  # TEST-NET-1: stands for an empty set in the legacy chain


# -- intent -----------------------------------------------------------------------------------


def _ip(i: int) -> str:
    """Other workloads' addresses: 10.0.1.0 upwards (10,000 members end at 10.0.40.15)."""
    return address(i + 256)


def lab_documents() -> list[dict[str, Any]]:
    """The two workloads the lab builds.  Their tags put them in the rules' sets: tiers and
    deployments like everyone's, the site each direction's sets pick, and a label that only
    the allowing rule names."""
    tags = {"application": "app0", "deployment": "prod"}
    return [
        doc(
            "Workload",
            name,
            {
                "host": host,
                "interfaces": [{"name": "eth0", "ips": [ip]}],
                "tags": {**tags, "tier": tier, "site": site, "label": [f"iperf-{role}"]},
            },
        )
        for name, host, ip, tier, site, role in (
            (CLIENT, CLIENT_HOST, CLIENT_IP, "web", "ams", "client"),
            (SERVER, SERVER_HOST, SERVER_IP, "app", "fra", "server"),
        )
    ]


def _random_rule(rng: random.Random, index: int, direction: str) -> dict[str, Any]:
    """A random tier rule whose local side is the lab workload of ``direction``'s host (the
    client's tier at egress, the server's at ingress): the compiler keeps only rules whose
    local side matches a workload of the host, and every rule must be on the SYN's way."""
    # No pass: a flat chain (the legacy baseline) has no tiers to pass to.
    actions = ["allow"] * 7 + ["deny", "reject"]
    rule = tier_rule(rng, index, services=SERVICES, actions=actions, p_group=0.2, p_label=0.3)
    if direction == "egress":
        rule["from"] = {"tags": "tier=web"}
    else:
        rule["to"] = {"tags": "tier=app"}
    return rule


def intent_documents(members: int, rules: int) -> list[dict[str, Any]]:
    """Everything the compiler sees: the lab's two workloads, ``members`` others, and policy
    sets holding ``rules`` compiled rules in all (module docstring)."""
    rng = random.Random(7)
    docs = lab_documents()
    for i in range(members):
        spec = {
            "host": f"host{i % N_OTHER_HOSTS}",
            "interfaces": [{"name": "eth0", "ips": [_ip(i)]}],
            "tags": workload_tags(rng),
        }
        docs.append(doc("Workload", f"w{i}", spec))
    docs.append(
        doc(
            "AddressGroup",
            "partners",
            {"prefixes": ["203.0.113.0/24", "198.51.100.0/24"], "except": ["203.0.113.7/32"]},
        )
    )
    allow = {
        "name": ALLOW_RULE,
        "sequence": 10,
        "from": {"tags": "label=iperf-client"},
        "to": {"tags": "label=iperf-server"},
        "services": [f"tcp/{PORT}", f"udp/{PORT}"],
        "action": "allow",
    }
    docs.append(doc("FirewallPolicy", "bench-allow", {"rules": [allow]}))
    per_direction = rules // 2
    sets = min(N_SETS // 2, per_direction)
    for direction, site in (("egress", "ams"), ("ingress", "fra")):
        for s in range(sets):
            # Spread per_direction rules over the sets; the last set ends with the allow rule.
            count = per_direction // sets + (1 if s < per_direction % sets else 0)
            last = s == sets - 1
            body = [_random_rule(rng, r, direction) for r in range(count - 1 if last else count)]
            name = f"{direction}{s}"
            policies: list[dict[str, Any]] = [{"name": name, "sequence": 10}]
            if last:
                policies.append({"name": "bench-allow", "sequence": 20})
            docs.append(doc("FirewallPolicy", name, {"rules": body}))
            aps: dict[str, Any] = {
                "tier": "admin" if s == 0 else "application",
                "priority": s,
                "selector": f"site={site}",
                "directions": [direction],
                "policies": policies,
            }
            docs.append(doc("ApplicationPolicySet", name, aps))
    return docs


def read_manifests(path: Path) -> list[Document]:
    return parse_documents(path.read_text(), str(path))


def compiled_rules(program: Program) -> int:
    return sum(len(b.rules) for blocks in program.chains.values() for b in blocks)


def members(program: Program) -> int:
    """Set elements, port-set elements and map entries: ``entries()`` without the rules."""
    return program.entries() - compiled_rules(program)


# -- the legacy chain ------------------------------------------------------------------------

_IPTABLES_TARGET = {
    Action.ALLOW: "ACCEPT",
    Action.REDIRECT: "ACCEPT",
    Action.DENY: "DROP",
    Action.REJECT: "REJECT",
    Action.PASS: "RETURN",  # not generated (see _random_rule); kept total
}


def _representative(s: AddressSet, prefer: Sequence[IPAddress]) -> str:
    """One address (or prefix) standing for a whole set, so that the chain keeps one rule per
    compiled rule.  A lab workload's own address when the set holds it: a per-address legacy
    chain would hold that very rule, and the test flow's packets then do the same matching in
    it (source, destination, protocol, port) as in the full expansion.  Otherwise the lowest
    member, then the first prefix; an empty set matches nothing (TEST-NET-1)."""
    for ip in prefer:
        if ip in s.addresses:
            return str(ip)
    v4 = sorted(a for a in s.addresses if a.version == 4)
    if v4:
        return str(v4[0])
    prefixes = [p for p in s.prefixes if p.version == 4]
    return str(prefixes[0]) if prefixes else _NOWHERE


def _services(rule: CompiledRule) -> list[str]:
    if rule.services is None:
        return [""]
    out = []
    for s in rule.services:
        if s.named is not None:
            raise ValueError(f"rule {rule.rule!r}: named ports have no legacy form here")
        if s.protocol is None:
            return [""]
        if s.protocol is Protocol.ICMP:
            icmp_type = "" if s.icmp_type is None else f" --icmp-type {s.icmp_type}"
            out.append(f"-p icmp{icmp_type}")
        elif s.protocol in (Protocol.TCP, Protocol.UDP):
            ports = ""
            if s.ports is not None:
                first, last = s.ports
                ports = f" --dport {first}" + (f":{last}" if last != first else "")
            out.append(f"-p {s.protocol.value}{ports}")
        # ICMPv6 and others cannot occur in an IPv4 chain
    return out


def iptables_lines(program: Program) -> list[str]:
    """The FORWARD chain of ``program``'s host as ``iptables-restore`` input (table filter).

    One ``-A FORWARD`` line per compiled rule and service, in the order nftables evaluates
    them (egress chain, hook priority 0, before ingress, priority 10; tiers in order), sets
    written as one representative each (``_representative``), ``matchTags`` dropped (a flat
    chain cannot compare tags; the services keep such rules off the test flow anyway).  Then
    the replies of the test flow (stateless: no conntrack, so replies need rules, and walk
    the chain like every packet) and DROP for what no rule allows (the isolated workloads'
    default, as in the program).  No comments: a comment match is one more call per rule.
    """
    client, server = ipaddress.ip_address(CLIENT_IP), ipaddress.ip_address(SERVER_IP)
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for d in (TrafficDirection.EGRESS, TrafficDirection.INGRESS):
        for tier in Tier:
            for block in program.chains.get((d, tier), ()):
                for rule in block.rules:
                    if rule.audit:
                        continue
                    ends = []
                    if rule.src is not None:
                        ends.append(
                            f"-s {_representative(program.sets[rule.src], [client, server])}"
                        )
                    if rule.dst is not None:
                        ends.append(
                            f"-d {_representative(program.sets[rule.dst], [server, client])}"
                        )
                    for service in _services(rule):
                        match = " ".join([*ends, service]).strip()
                        lines.append(f"-A FORWARD {match} -j {_IPTABLES_TARGET[rule.action]}")
    for proto in ("tcp", "udp"):
        lines.append(
            f"-A FORWARD -s {SERVER_IP} -d {CLIENT_IP} -p {proto} --sport {PORT} -j ACCEPT"
        )
    lines += ["-A FORWARD -j DROP", "COMMIT", ""]
    return lines


def _in_ns(ns: str, *argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns}: {result.stderr.strip()}")
    return result.stdout


def load_iptables(ns: str, tool: str, lines: list[str]) -> None:
    _in_ns(ns, f"iptables-{tool}-restore", stdin="\n".join(lines))


def clear_iptables(ns: str, tool: str) -> None:
    """Empty table filter; with iptables-nft remove it altogether, hooks and all.  (x_tables
    keeps an instantiated table hooked until the namespace goes: with ``legacy`` the other
    variants then pass one empty chain, a few ns per packet.)"""
    empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    _in_ns(ns, f"iptables-{tool}-restore", stdin=empty)
    if tool == "nft":
        drop_nft_table(ns, "ip filter")


def drop_nft_table(ns: str, table: str) -> None:
    """Delete nft table ``table`` (e.g. ``"ip filter"``) in ``ns``, present or not."""
    # nft 1.0.6 has no "destroy": declaring the table first makes the delete always valid.
    _in_ns(ns, "nft", "-f", "-", stdin=f"table {table}\ndelete table {table}\n")


def iptables_allow_packets(ns: str, tool: str) -> int:
    """Packets counted by the test flow's forward allow rule (tcp), from ``-save -c``."""
    out = _in_ns(ns, f"iptables-{tool}-save", "-c", "-t", "filter")
    for line in out.splitlines():
        if f"-d {SERVER_IP}/32 -p tcp -m tcp --dport {PORT} -j ACCEPT" in line:
            return int(line[1 : line.index(":")])
    return -1


# -- measurements ----------------------------------------------------------------------------


def _child_signals() -> None:
    """A forked worker dies of SIGINT/SIGTERM quietly; the parent cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _listener(ns: str, ip: str, port: int, ready: Connection) -> None:
    _child_signals()
    with entered(ns):
        server = socket.create_server((ip, port), backlog=4096)
    ready.send(True)
    while True:
        conn, _ = server.accept()
        conn.close()


def _connector(
    ns: str, ip: str, port: int, start_at: float, seconds: float, out: Connection
) -> None:
    _child_signals()
    linger = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT, ports reusable at once
    done = failed = 0
    deadline = start_at + seconds
    while time.monotonic() < start_at:  # CLOCK_MONOTONIC is system-wide: a shared start
        time.sleep(0.001)
    with entered(ns):  # each socket is made inside: it stays in the client's namespace
        while time.monotonic() < deadline:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.settimeout(1.0)
            try:
                s.connect((ip, port))
                if time.monotonic() <= deadline:
                    done += 1
            except OSError:
                failed += 1
            finally:
                s.close()
    out.send((done, failed))


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside: a second Ctrl-C must not cut a cleanup short."""
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _processes() -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Forked workers, killed by pid when the block ends however it ends."""
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        yield procs
    finally:
        with signals_held():
            for p in procs:
                if p.is_alive():
                    p.kill()
            for p in procs:
                p.join(5)


def conn_rate(client_ns: str, server_ns: str, seconds: float, clients: int) -> tuple[float, int]:
    """Connections per second (all clients together) and the number of failed connects."""
    ctx = multiprocessing.get_context("fork")
    with _processes() as procs:
        ready_r, ready_w = ctx.Pipe(duplex=False)
        procs.append(ctx.Process(target=_listener, args=(server_ns, SERVER_IP, PORT, ready_w)))
        procs[0].start()
        if not ready_r.poll(10):
            raise RuntimeError("the connection-rate listener did not start")
        start_at = time.monotonic() + 0.2
        pipes = []
        for _ in range(clients):
            r, w = ctx.Pipe(duplex=False)
            pipes.append(r)
            args = (client_ns, SERVER_IP, PORT, start_at, seconds, w)
            procs.append(ctx.Process(target=_connector, args=args))
            procs[-1].start()
        results = [r.recv() if r.poll(seconds + 15) else (0, 0) for r in pipes]
    done = sum(n for n, _ in results)
    return done / seconds, sum(f for _, f in results)


def _listening(pid: int, port: int) -> bool:
    """Does the namespace of process ``pid`` have a TCP listener on ``port``?  (Read from
    ``/proc/<pid>/net``: a test connection would use up iperf3 ``-1``'s one client.)"""
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{name}") as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def iperf3(
    client_ns: str, server_ns: str, seconds: float, udp: bool, cpus: tuple[int, int] | None = None
) -> dict[str, Any]:
    """One iperf3 run, client → server; its JSON ``end`` object.  ``cpus``: pin the client
    and the server to these CPUs (iperf3 ``-A``)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", SERVER_IP, "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(server.pid, PORT):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.02)
        argv = ["iperf3", "-c", SERVER_IP, "-p", str(PORT), "-t", str(seconds), "-J"]
        if udp:
            argv += ["-u", "-l", "64", "-b", "0"]
        if cpus is not None:
            argv += ["-A", f"{cpus[0]},{cpus[1]}"]
        result = subprocess.run(
            ["ip", "netns", "exec", client_ns, *argv],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        report = json.loads(result.stdout)
        if "error" in report:
            raise RuntimeError(f"iperf3: {report['error']}")
        end: dict[str, Any] = report["end"]
        return end
    finally:
        with signals_held():
            # iperf3 -1 ends after its one test; only a failed run leaves it waiting.
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(5)
            if server.poll() is None:
                server.kill()
                server.wait()


def tcp_gbps(end: dict[str, Any]) -> float:
    return float(end["sum_received"]["bits_per_second"]) / 1e9


def udp_pps(end: dict[str, Any]) -> float:
    """Datagrams the server received per second (sent minus lost, as the server counted)."""
    s = end["sum"]
    return (int(s["packets"]) - int(s["lost_packets"])) / float(s["seconds"])


def blocked(client_ns: str, server_ns: str) -> bool:
    """Is client → server on ``BLOCKED_PORT`` (no rule allows it) dropped?  A listener there
    answers when nothing enforces; a refused or reset connect counts as not blocked."""
    with entered(server_ns):
        listener = socket.create_server((SERVER_IP, BLOCKED_PORT))
    try:
        with entered(client_ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect((SERVER_IP, BLOCKED_PORT))
            return False
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            s.close()
    finally:
        listener.close()


# -- diagnosis (--diagnose) -------------------------------------------------------------------
#
# Where the new-connection cost of tagwall's program goes.  ``ct-only`` is conntrack alone, the
# floor of any stateful data path.  (Two prototype renderings measured here earlier, service
# compares first and dispatch by service, are now what the renderer does.)

CT_ONLY_TABLE = "twbenchct"
_CT_FIRST = "policy accept; ct state established,related accept;"
CT_ONLY = (  # tagwall's base chain with nothing after ct
    f"table inet {CT_ONLY_TABLE} {{\n"
    f"  chain forward {{ type filter hook forward priority 0; {_CT_FIRST} }}\n"
    "}\n"
)
DIAGNOSTIC_VARIANTS = ("ct-only",)
# -- the run ---------------------------------------------------------------------------------


@dataclass
class Lab:
    client_ns: str
    server_ns: str
    hosts: dict[str, str]  # host name → its namespace


def _clear(lab: Lab, tool: str) -> None:
    """No rules, no table, no conntrack entries in the host namespaces."""
    for ns in lab.hosts.values():
        nft_cleanup(ns)
        drop_nft_table(ns, f"inet {CT_ONLY_TABLE}")
        clear_iptables(ns, tool)
        # Each variant starts without entries left by the last (conntrack -F fails when the
        # namespace tracks nothing: that is fine).
        subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-F"], capture_output=True)


# An aborted connection's entry lives nf_conntrack_tcp_timeout_close (10 s) after its RST:
# only after that long does a flow recorder see each new connection's DESTROY while it runs.
STEADY_S = 11


def _measure(lab: Lab, args: argparse.Namespace, warm_up_s: float = 0) -> dict[str, float]:
    """The figures of the variant in force; ``warm_up_s`` of connections first, not counted
    (a flow recorder's steady state: the DESTROY of every connection it measures)."""
    out: dict[str, float] = {}
    out["throughput_gbps"] = tcp_gbps(iperf3(lab.client_ns, lab.server_ns, args.seconds, False))
    if warm_up_s:
        conn_rate(lab.client_ns, lab.server_ns, warm_up_s, args.conn_clients)
    rate, failed = conn_rate(lab.client_ns, lab.server_ns, args.seconds, args.conn_clients)
    out["conn_rate_per_s"], out["conn_failures"] = rate, failed
    if args.udp:
        out["udp_pps"] = udp_pps(iperf3(lab.client_ns, lab.server_ns, args.seconds, True))
    return out


@dataclass
class Rulesets:
    """What each variant puts in force, per host."""

    programs: dict[str, Program]
    iptables: dict[str, list[str]]  # iptables-restore input


def rulesets(programs: dict[str, Program]) -> Rulesets:
    return Rulesets(programs, {h: iptables_lines(p) for h, p in programs.items()})


def _enforce(
    variant: str, lab: Lab, sets: Rulesets, tool: str, recorded: list[dict[str, Any]]
) -> Callable[[], int]:
    """Put ``variant`` in force on both hosts; returns how to read the packets counted by the
    test flow's allowing rule on the client's host (-1: not read), which also ends the variant
    (flow recorders stopped, their statistics appended to ``recorded``)."""
    if variant in ("tagwall", "tagwall-flows"):
        datapaths, recorders, spools = {}, [], tempfile.TemporaryDirectory(prefix="tw-flows-")
        for host, program in sets.programs.items():
            datapaths[host] = NftDatapath(netns=lab.hosts[host])
            datapaths[host].load(program)
            if variant == "tagwall-flows":
                recorder = FlowRecorder(
                    host,
                    ["http://127.0.0.1:9"],  # discard: nothing answers, reports stay spooled
                    datapaths[host],
                    Path(spools.name) / host,
                    netns=lab.hosts[host],
                )
                recorder.start()
                recorders.append(recorder)

        def allowed() -> int:
            counted = datapaths[CLIENT_HOST].counters()
            for recorder in recorders:
                recorder.stop()
                stats = recorder.statistics()
                recorded.append(
                    {
                        "host": recorder.host,
                        "reports": stats.reports,
                        "lost_overruns": stats.lost_overruns,
                        "ends_lost": stats.ends_lost,
                        "spool_dropped": stats.spool.dropped,
                    }
                )
            spools.cleanup()
            for dp in datapaths.values():
                dp.close()
            return sum(int(str(c["packets"])) for c in counted if c["rule"] == ALLOW_RULE)

        return allowed
    if variant == "iptables":
        for host, lines in sets.iptables.items():
            load_iptables(lab.hosts[host], tool, lines)
        return lambda: iptables_allow_packets(lab.hosts[CLIENT_HOST], tool)
    if variant == "ct-only":
        for ns in lab.hosts.values():
            _in_ns(ns, "nft", "-f", "-", stdin=CT_ONLY)
    return lambda: -1


def run_variants(
    lab: Lab, programs: dict[str, Program], variants: tuple[str, ...], args: argparse.Namespace
) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any]]:
    """``args.repeats`` rounds; in each, every variant in force alone (after ``_clear``), then
    measured."""
    sets = rulesets(programs)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    load_s: list[float] = []
    blocked_runs: dict[str, list[bool]] = {v: [] for v in variants}
    allow_packets: dict[str, list[int]] = {}
    recorded: list[dict[str, Any]] = []
    for r in range(args.repeats):
        k = r % len(variants)
        for variant in variants[k:] + variants[:k]:  # rotated: no variant always first
            _clear(lab, args.iptables)
            start = time.perf_counter()
            allowed = _enforce(variant, lab, sets, args.iptables, recorded)
            if variant == "tagwall":
                load_s.append(round(time.perf_counter() - start, 3))
            blocked_runs[variant].append(blocked(lab.client_ns, lab.server_ns))
            result = _measure(lab, args, STEADY_S if variant == "tagwall-flows" else 0)
            runs[variant].append(result)
            packets = allowed()
            if packets >= 0:
                allow_packets.setdefault(variant, []).append(packets)
            udp = f", {result['udp_pps'] / 1e3:.0f} kpps" if "udp_pps" in result else ""
            failed = f" ({result['conn_failures']:.0f} failed)" if result["conn_failures"] else ""
            say(
                f"round {r + 1}/{args.repeats} {variant:11} "
                f"{result['throughput_gbps']:.2f} Gbit/s, "
                f"{result['conn_rate_per_s']:.0f} conn/s{failed}{udp}"
            )
    extra: dict[str, Any] = {
        "iptables_rules": {h: sum(x.startswith("-A") for x in c) for h, c in sets.iptables.items()},
        # Does each variant drop client → server on a port no rule allows (every round)?
        "blocked_other_port": {v: all(b) for v, b in blocked_runs.items()},
        # Packets the test flow's allowing rule counted on the client's host, per round: the
        # connections' SYNs (tagwall: later packets take the established shortcut) or every
        # packet of the flow (iptables).  Proof that new connections walked down to it.
        "allow_rule_packets": allow_packets,
        "tagwall_load_s": load_s,
        # Per host and round of ``tagwall-flows``: reports assembled, kernel events lost.
        "flow_recorder": recorded,
    }
    return runs, extra


@contextlib.contextmanager
def built_lab(
    docs: list[Document], name: str, state_dir: Path, *, agents: bool = False
) -> Iterator[LabState]:
    """The lab (one controller; agents only with ``agents``), removed however the block
    ends (also on Ctrl-C or SIGTERM)."""

    def interrupted(signum: int, _: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        state = up(docs, lab=name, state_dir=state_dir, controllers=1, agents=agents, progress=say)
        try:
            yield state
        finally:
            with signals_held():
                say(f"removing lab {name} …")
                down(lab=name, state_dir=state_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)


FIGURES = (  # (JSON prefix, key in a run, unit suffix, decimals)
    ("throughput", "throughput_gbps", "_gbps", 3),
    ("conn_rate", "conn_rate_per_s", "_per_s", 0),
    ("udp_pps", "udp_pps", "", 0),
)


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per figure and variant (``<figure>_<variant><unit>``, with every run in
    ``…_runs``); the ratios of the medians, tagwall to none and to iptables (and the other
    variants to none)."""
    out: dict[str, Any] = {}
    for figure, key, unit, digits in FIGURES:
        if any(key not in r for rs in runs.values() for r in rs):
            continue
        medians = {v: statistics.median(r[key] for r in rs) for v, rs in runs.items()}
        for v, rs in runs.items():
            name = f"{figure}_{v.replace('-', '_')}{unit}"
            out[name] = round(medians[v], digits)
            out[f"{name}_runs"] = [round(r[key], digits) for r in rs]
        out[f"{figure}_ratio_vs_none"] = round(medians["tagwall"] / medians["none"], 3)
        out[f"{figure}_ratio_vs_iptables"] = round(medians["tagwall"] / medians["iptables"], 3)
        # The same ratios round by round (variants of a round run back to back): their spread
        # is the noise of the machine.
        for base in ("none", "iptables"):
            pairs = zip(runs["tagwall"], runs[base], strict=True)
            out[f"{figure}_ratio_vs_{base}_rounds"] = [round(t[key] / b[key], 3) for t, b in pairs]
        for v in runs:
            if v not in ("none", "tagwall"):
                ratio = medians[v] / medians["none"]
                out[f"{figure}_{v.replace('-', '_')}_ratio_vs_none"] = round(ratio, 3)
    for v, rs in runs.items():
        out[f"conn_failures_{v.replace('-', '_')}"] = int(sum(r["conn_failures"] for r in rs))
    return out


Sizes = dict[str, dict[str, int]]
Runs = dict[str, list[dict[str, float]]]


def _run(args: argparse.Namespace, variants: tuple[str, ...]) -> tuple[Runs, dict[str, Any], Sizes]:
    """Generate and compile the intent, build the lab, measure every variant, remove it all."""
    with tempfile.TemporaryDirectory(prefix="tagwall-bench-") as tmp:
        here = Path(tmp)
        (here / "lab.json").write_text(json.dumps(lab_documents()))
        (here / "intent.json").write_text(json.dumps(intent_documents(args.members, args.rules)))
        say(f"compiling {args.members} workloads and {args.rules} rules …")
        compiler = Compiler(load_config(read_manifests(here / "intent.json")))
        programs = {h: compiler.program(h) for h in (CLIENT_HOST, SERVER_HOST)}
        sizes = {
            h: {"entries": p.entries(), "members": members(p), "rules": compiled_rules(p)}
            for h, p in programs.items()
        }
        for h, size in sizes.items():
            entries, n, rules = size["entries"], size["members"], size["rules"]
            say(f"host {h}: {entries} entries ({n} members, {rules} rules)")
        with built_lab(read_manifests(here / "lab.json"), args.lab, here / "state") as state:
            lab = Lab(
                client_ns=next(w.namespace for w in state.workloads if w.name == CLIENT),
                server_ns=next(w.namespace for w in state.workloads if w.name == SERVER),
                hosts={h.name: h.namespace for h in state.hosts},
            )
            try:
                runs, extra = run_variants(lab, programs, variants, args)
            finally:
                with signals_held():
                    _clear(lab, args.iptables)
    return runs, extra, sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--seconds", type=int, default=3, help="per measurement (default 3)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds of all variants (default 5)")
    ap.add_argument("--members", type=int, default=10_000, help="other workloads in the intent")
    ap.add_argument("--rules", type=int, default=1_000, help="compiled rules, both hosts")
    ap.add_argument("--conn-clients", type=int, default=2, help="connecting processes")
    ap.add_argument("--iptables", choices=["nft", "legacy"], default="nft")
    ap.add_argument("--no-udp", dest="udp", action="store_false", help="skip 64-byte UDP")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help=f"add variants {', '.join(DIAGNOSTIC_VARIANTS)} (see '-- diagnosis')",
    )
    ap.add_argument("--lab", default="twlabbench", help="lab name (twlab + ≤ 8 [a-z0-9])")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        say("needs root: it builds a lab of network namespaces and programs their firewalls")
        return 2
    if args.rules < 4 or args.repeats < 1 or args.seconds < 1 or not 0 < args.members <= 10**6:
        ap.error("--rules ≥ 4, --repeats ≥ 1, --seconds ≥ 1, 0 < --members ≤ 1,000,000")
    check_lab_name(args.lab)
    variants = VARIANTS + (DIAGNOSTIC_VARIANTS if args.diagnose else ())

    try:
        runs, extra, sizes = _run(args, variants)
    except KeyboardInterrupt:
        say("interrupted: the lab and its rules are removed")
        return 130
    result: dict[str, Any] = {
        "lab": args.lab,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "intent_members": args.members,
        "intent_rules": args.rules,
        "programs": sizes,
        "program_members_total": sum(s["members"] for s in sizes.values()),
        "program_rules_total": sum(s["rules"] for s in sizes.values()),
        "iptables": f"iptables-{args.iptables}",
        "conn_clients": args.conn_clients,
        **summarize(runs),
        **extra,
        "target_ratio_vs_none": TARGET_RATIO_VS_NONE,
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
