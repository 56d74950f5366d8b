"""A tiny real network for the nftables data-path tests, and probes that send real packets.

Topology (all namespaces named ``twdp-<pid>-<random>-*``, removed at the end; leftovers of a
killed run are removed by the next one)::

    w1 (10.0.0.1, fd00::1) ──tw-w1─┐
    w2 (10.0.0.2, fd00::2) ──tw-w2─┼── host (forwarding; tagwall's table lives here)
    w3 (10.0.0.3, fd00::3) ──tw-w3─┤
    remote (192.0.2.5, fd00:ff::5) ──up-r─┘   (an address without an agent: another host,
                                              or an external endpoint)

Each workload has its address as a /32 (/128) on ``eth0`` and a default route to the host's
link address 169.254.1.1 (fe80::1), which routes every workload address to its veth, as
Calico does.  Every workload and the remote listen on TCP ``TCP_PORTS``,
echo UDP on ``UDP_PORT``, and answer pings (the kernel).  The host does not rate-limit its
ICMP errors, so every reject is seen.

A probe's outcome is what a client sees: ``allow`` (the answer came back: SYN-ACK, UDP echo,
echo reply), ``reject`` (TCP RST, ICMP unreachable) or ``deny`` (silence until the timeout).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import os
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address

import pytest

from tagwall._checksum import internet_checksum
from tagwall._netns import NETNS_DIR, entered
from tagwall.compiler import Compiler
from tagwall.datapath import SimDatapath, SimNetwork
from tagwall.evaluator import make_flow, trace
from tagwall.model import Action, Config, FlowService, Protocol, parse_flow_service

TCP_PORTS = (80, 85, 443, 5432, 8080, 9050)
UDP_PORT = 53
PROBE_TIMEOUT_S = 0.5  # a denied flow costs this; an allowed one answers in ~1 ms
WORKLOADS = {
    "w1": ("10.0.0.1", "fd00::1"),
    "w2": ("10.0.0.2", "fd00::2"),
    "w3": ("10.0.0.3", "fd00::3"),
}
REMOTE = ("192.0.2.5", "fd00:ff::5")
PREFIX = "twdp-"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables); CI runs as root"
    for tool in ("ip", "nft", "conntrack"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} command (Debian: iproute2, nftables, conntrack)"
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return "needs libnftables.so.1 (Debian: libnftables1)"
    return None


WHY_NOT = _why_not()
privileged = [
    pytest.mark.privileged,
    pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or ""),
]


def sh(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


# -- topology --------------------------------------------------------------------------------


@dataclass
class Topology:
    """Namespace names, addresses and the listeners; ``ns_of`` maps an address to the namespace
    that holds it."""

    host: str
    namespaces: dict[str, str]  # w1, w2, w3, remote → namespace name
    ns_of: dict[str, str]  # address → namespace name
    _stop: threading.Event
    _thread: threading.Thread | None = None

    def all_namespaces(self) -> list[str]:
        return [self.host, *self.namespaces.values()]

    def flush_conntrack(self) -> None:
        """Forget every flow, so that no test sees another's replies as established."""
        sh("ip", "netns", "exec", self.host, "conntrack", "-F")


def _remove_stale() -> None:
    """Namespaces of earlier runs whose process is gone."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            if not name.startswith(PREFIX):
                continue
            pid = name[len(PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _sysctl(ns: str, *settings: str) -> None:
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", *settings)


def _link(host: str, ns: str, host_side: str, v4: str, v6: str) -> None:
    sh(
        "ip",
        "-n",
        host,
        "link",
        "add",
        host_side,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns,
    )
    sh("ip", "-n", ns, "addr", "add", f"{v4}/32", "dev", "eth0")
    sh("ip", "-n", ns, "-6", "addr", "add", f"{v6}/128", "dev", "eth0", "nodad")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    sh("ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    sh("ip", "-n", ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    sh("ip", "-n", host, "addr", "add", "169.254.1.1/32", "dev", host_side)
    sh("ip", "-n", host, "-6", "addr", "add", "fe80::1/64", "dev", host_side, "nodad")
    sh("ip", "-n", host, "link", "set", host_side, "up")
    sh("ip", "-n", host, "route", "add", f"{v4}/32", "dev", host_side)
    sh("ip", "-n", host, "-6", "route", "add", f"{v6}/128", "dev", host_side)


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    _remove_stale()
    base = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
    host = f"{base}-h"
    names = {w: f"{base}-{w}" for w in [*WORKLOADS, "remote"]}
    topo = Topology(host, names, {}, threading.Event())
    created: list[str] = []
    try:
        for ns in topo.all_namespaces():
            sh("ip", "netns", "add", ns)
            created.append(ns)
            # No duplicate address detection: addresses are usable at once.
            _sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        _sysctl(
            host,
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            # reject answers with ICMP errors, which the kernel rate-limits per peer (burst
            # of 6): a probe round would see some rejects as silent drops.
            "net.ipv4.icmp_ratemask=0",
            "net.ipv6.icmp.ratemask=",
        )
        sh("ip", "-n", host, "link", "set", "lo", "up")
        # The host's own address: the source of its ICMP errors (reject) to workloads.
        sh("ip", "-n", host, "-6", "addr", "add", "fd00:fe::1/128", "dev", "lo")
        for w, (v4, v6) in WORKLOADS.items():
            _link(host, names[w], f"tw-{w}", v4, v6)
            topo.ns_of.update({v4: names[w], v6: names[w]})
        _link(host, names["remote"], "up-r", *REMOTE)
        topo.ns_of.update({REMOTE[0]: names["remote"], REMOTE[1]: names["remote"]})
        _serve(topo)
        _wait_reachable(topo)
        yield topo
    finally:
        topo._stop.set()
        if topo._thread is not None:
            topo._thread.join(timeout=5)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _serve(topo: Topology) -> None:
    """TCP listeners that accept and close, UDP echo, in every namespace but the host."""
    sel = selectors.DefaultSelector()
    for ns in topo.namespaces.values():
        with entered(ns):
            for port in TCP_PORTS:
                s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::", port))
                s.listen(64)
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, "tcp")
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            u.bind(("::", UDP_PORT))
            u.setblocking(False)
            sel.register(u, selectors.EVENT_READ, "udp")

    def loop() -> None:
        try:
            while not topo._stop.is_set():
                for key, _ in sel.select(timeout=0.1):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]  # registered sockets
                    with contextlib.suppress(OSError):
                        if key.data == "tcp":
                            sock.accept()[0].close()
                        else:
                            data, peer = sock.recvfrom(2048)
                            sock.sendto(data, peer)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]  # sockets
            sel.close()

    topo._thread = threading.Thread(target=loop, name="twdp-listeners", daemon=True)
    topo._thread.start()


def _wait_reachable(topo: Topology) -> None:
    """Routes and neighbours settle in milliseconds; wait until every pair answers."""
    deadline = time.monotonic() + 10
    pairs = [(a, b) for a in topo.ns_of for b in topo.ns_of if topo.ns_of[a] != topo.ns_of[b]]
    pairs = [(a, b) for a, b in pairs if ip_address(a).version == ip_address(b).version]
    while True:
        outcomes = probe_many(topo, [(a, b, FlowService(Protocol.TCP, 80)) for a, b in pairs])
        if all(o == "allow" for o in outcomes):
            return
        if time.monotonic() > deadline:
            bad = [p for p, o in zip(pairs, outcomes, strict=True) if o != "allow"]
            raise RuntimeError(f"test topology not reachable without a table: {bad}")
        time.sleep(0.1)


# -- probes ----------------------------------------------------------------------------------


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ip_address(ip).version == 6 else socket.AF_INET


def probe(topo: Topology, src: str, dst: str, service: FlowService) -> str:
    """Send one real flow from the namespace holding ``src`` to ``dst``: allow | reject | deny."""
    with entered(topo.ns_of[src]):
        if service.protocol is Protocol.TCP:
            sock = socket.socket(_family(dst), socket.SOCK_STREAM)
        elif service.protocol is Protocol.UDP:
            sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
        elif service.protocol is Protocol.ICMP:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        elif service.protocol is Protocol.ICMPV6:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        else:
            raise ValueError(f"cannot probe {service}: no sockets for it here")
    with sock:
        sock.bind((src, 0))
        sock.settimeout(PROBE_TIMEOUT_S)
        try:
            if service.protocol is Protocol.TCP:
                sock.connect((dst, service.port))  # the SYN-ACK is the reply that came back
                return "allow"
            if service.protocol is Protocol.UDP:
                sock.connect((dst, service.port))
                sock.send(b"hello")
                return "allow" if sock.recv(64) == b"hello" else "deny"
            return _ping(sock, dst, service)
        except (ConnectionRefusedError, ConnectionResetError):
            return "reject"
        except TimeoutError:
            return "deny"
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES):
                return "reject"  # ICMP administratively prohibited
            raise


def _ping(sock: socket.socket, dst: str, service: FlowService) -> str:
    v6 = service.protocol is Protocol.ICMPV6
    ident = secrets.randbelow(0xFFFF)
    kind = service.icmp_type if service.icmp_type is not None else (128 if v6 else 8)
    header = struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"tagwall"
    if not v6:  # the kernel computes ICMPv6 checksums itself
        header = header[:2] + struct.pack("!H", internet_checksum(header)) + header[4:]
    sock.sendto(header, (dst, 0))
    reply, unreachable = (129, 1) if v6 else (0, 3)
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        packet, _ = sock.recvfrom(2048)
        icmp = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
        if icmp[0] == reply and struct.unpack("!H", icmp[4:6])[0] == ident:
            return "allow"
        if icmp[0] == unreachable and ident.to_bytes(2, "big") in icmp[8:]:
            return "reject"
    return "deny"


def probe_many(topo: Topology, flows: Iterable[tuple[str, str, FlowService]]) -> list[str]:
    """Probes run concurrently (one thread each), so a batch costs about one timeout."""
    flows = list(flows)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(flows))) as pool:
        return list(pool.map(lambda flow: probe(topo, *flow), flows))


# -- what the model says ---------------------------------------------------------------------


def sim_network(compiler: Compiler) -> SimNetwork:
    net = SimNetwork()
    for host in compiler.hosts():
        net.hosts[host] = dp = SimDatapath()
        dp.load(compiler.program(host))
    return net


def _outcome(actions: Iterable[Action]) -> str:
    """The packet meets the source's egress first, then the destination's ingress."""
    for action in actions:
        if action is Action.DENY:
            return "deny"
        if action is Action.REJECT:
            return "reject"
    return "allow"


def expected(config: Config, net: SimNetwork, src: str, dst: str, service: str) -> str:
    """The outcome the simulator predicts; asserts that the reference evaluator agrees."""
    flow_service = parse_flow_service(service)
    egress, ingress = net.verdict(ip_address(src), ip_address(dst), flow_service)
    sim = _outcome([egress.action, ingress.action])
    verdict = trace(config, make_flow(config, src, dst, service))
    ref = _outcome([verdict.egress.decision.action, verdict.ingress.decision.action])
    assert sim == ref, f"simulator {sim} != evaluator {ref} for {src} -> {dst} {service}"
    return sim
