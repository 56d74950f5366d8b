"""``python -m tagwall.l7fw`` as a real process between a real client and a real HTTP server,
in both service modes (DESIGN §2 "Service chains"); needs root.

Topologies (every name starts with ``twl7``; namespaces ``twl7-<pid>-{c,f,s}``)::

    in-network:   client 10.81.1.2/24 ── left 10.81.1.1 [fw routes] right 10.81.2.1
                                                                    ── server 10.81.2.2/24
    transparent:  client 10.82.0.2/24 ── left [fw bridge twl7-br] right ── server 10.82.0.3/24
                                              (no addresses on the firewall)

The server namespace runs ``http.server`` (port 80, recording every request it reads) and a
TCP echo (port 9000) in threads; the client speaks real HTTP.  Everything is removed in a
finalizer, also when a test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tagwall._netns import entered

WHY_NOT = (
    "needs root (network namespaces, nftables, NFQUEUE); CI runs as root"
    if os.geteuid() != 0
    else None
    if shutil.which("ip") and shutil.which("nft")
    else "needs the 'ip' and 'nft' commands (Debian: iproute2, nftables)"
)
pytestmark = [pytest.mark.privileged, pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]

LEFT, RIGHT = "twl7-left", "twl7-right"
ECHO_PORT = 9000
READY_TIMEOUT_S = 15.0


def sh(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Lab:
    mode: str
    client: str  # namespace names
    firewall: str
    server: str
    client_ip: str
    server_ip: str
    log: Path
    seen_paths: list[str] = field(default_factory=list)  # what the server read, in order
    server_errors: list[str] = field(default_factory=list)  # exceptions of its connections


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = f"hello from the server: {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet; ``seen`` is the log
        pass


class _Server(http.server.ThreadingHTTPServer):
    errors: list[str]

    def handle_error(self, request: object, client_address: object) -> None:
        self.errors.append(repr(sys.exc_info()[1]))


def _serve_echo(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(1024))


def _links(lab: Lab, client_cidr: str, server_cidr: str) -> None:
    for ns, peer, cidr in ((lab.client, LEFT, client_cidr), (lab.server, RIGHT, server_cidr)):
        inner = "twl7-c0" if ns == lab.client else "twl7-s0"
        sh(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            inner,
            "type",
            "veth",
            "peer",
            peer,
            "netns",
            lab.firewall,
        )
        sh("ip", "-n", ns, "addr", "add", cidr, "dev", inner)
        sh("ip", "-n", ns, "link", "set", inner, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


@contextlib.contextmanager
def _lab(mode: str, tmp: Path) -> Iterator[Lab]:
    base = f"twl7-{os.getpid()}"
    names = [f"{base}-c", f"{base}-f", f"{base}-s"]
    routed = mode == "in-network"
    net = ("10.81.1.2", "10.81.2.2") if routed else ("10.82.0.2", "10.82.0.3")
    lab = Lab(mode, names[0], names[1], names[2], net[0], net[1], tmp / f"verdicts-{mode}.jsonl")
    process: subprocess.Popen[bytes] | None = None
    servers: list[_Server] = []
    try:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # a killed run's
            sh("ip", "netns", "add", ns)
        if routed:
            _links(lab, "10.81.1.2/24", "10.81.2.2/24")
            sh("ip", "-n", lab.firewall, "addr", "add", "10.81.1.1/24", "dev", LEFT)
            sh("ip", "-n", lab.firewall, "addr", "add", "10.81.2.1/24", "dev", RIGHT)
            sh("ip", "-n", lab.client, "route", "add", "default", "via", "10.81.1.1")
            sh("ip", "-n", lab.server, "route", "add", "default", "via", "10.81.2.1")
        else:
            _links(lab, "10.82.0.2/24", "10.82.0.3/24")
        with entered(lab.server):
            _Handler.seen = lab.seen_paths
            server = _Server((lab.server_ip, 80), _Handler)
            server.errors = lab.server_errors
            echo = socket.create_server((lab.server_ip, ECHO_PORT))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Thread(target=_serve_echo, args=(echo,), daemon=True).start()
        stderr = tmp / f"firewall-{mode}.err"
        command = [sys.executable, "-m", "tagwall.l7fw", "--mode", mode, "--left", LEFT]
        command += ["--right", RIGHT, "--log", str(lab.log), "--bridge", "twl7-br"]
        with open(stderr, "wb") as err:
            process = subprocess.Popen(["ip", "netns", "exec", lab.firewall, *command], stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"ready" not in stderr.read_bytes():
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "firewall not ready: " + stderr.read_text()
            time.sleep(0.05)
        yield lab
        process.terminate()
        assert process.wait(timeout=10) == 0, stderr.read_text()
        tables = subprocess.run(
            ["ip", "netns", "exec", lab.firewall, "nft", "list", "tables"],
            capture_output=True,
            text=True,
        ).stdout
        assert "tagwall_l7fw" not in tables, "the table outlived the firewall"
        echo.close()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        for server in servers:
            server.shutdown()
            server.server_close()
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module", params=["in-network", "transparent"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with _lab(request.param, tmp_path_factory.mktemp("l7fw")) as built:
        yield built


def _get(lab: Lab, target: str) -> tuple[int, dict[str, str], bytes]:
    with entered(lab.client):
        conn = http.client.HTTPConnection(lab.server_ip, 80, timeout=5)
        try:
            conn.request("GET", target, headers={"Host": "shop"})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


def _wait_until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _ping(lab: Lab) -> bool:
    """Whether an ICMP echo request from the client gets its reply (no ping binary needed)."""
    ident, payload = os.getpid() & 0xFFFF, b"twl7ping"  # an even length: 16-bit words
    total = sum(struct.unpack("!8H", struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    request = struct.pack("!BBHHH", 8, 0, checksum, ident, 1) + payload
    with entered(lab.client):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        sock.settimeout(2)
        sock.sendto(request, (lab.server_ip, 0))
        with contextlib.suppress(TimeoutError):
            while True:
                reply, (source, _) = sock.recvfrom(1024)
                icmp = reply[(reply[0] & 0x0F) * 4 :]
                if source == lab.server_ip and icmp[0] == 0 and icmp[4:6] == request[4:6]:
                    return True
    return False


def _verdicts(lab: Lab) -> list[dict[str, object]]:
    return [json.loads(line) for line in lab.log.read_text().splitlines()]


def test_an_allowed_get_returns_the_servers_answer(lab: Lab) -> None:
    """A good GET reaches the server unchanged and its 200 body comes back; one allow line."""
    status, _, body = _get(lab, "/shop/items?id=42")
    assert (status, body) == (200, b"hello from the server: /shop/items?id=42\n")
    assert "/shop/items?id=42" in lab.seen_paths
    (line,) = [v for v in _verdicts(lab) if v["path"] == "/shop/items"]
    assert line["verdict"] == "allow" and line["rule"] is None
    assert line["method"] == "GET" and line["host"] == "shop" and line["query"] == "id=42"
    assert str(line["client"]).startswith(lab.client_ip + ":")
    assert line["server"] == f"{lab.server_ip}:80"


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("/admin/x", "no-admin"),
        ("/shop/../%61dmin/users", "no-admin"),
        ("/search?q=x%27%20OR%201=1", "sqli"),
        ("/search?q=1+UNION+SELECT+password+FROM+users", "sqli"),
        ("/search?q=a;--", "sqli"),
    ],
)
def test_a_denied_request_is_refused_and_never_reaches_the_server(
    lab: Lab, target: str, rule: str
) -> None:
    """The client reads a 403 naming the rule, the server never reads the request (its side of
    the connection is reset), and the verdict log has one deny line for it with that rule."""
    resets = len(lab.server_errors)
    status, headers, _ = _get(lab, target)
    assert status == 403 and headers["X-Tagwall-Rule"] == rule
    assert target not in lab.seen_paths
    path, _, query = target.partition("?")
    lines = [v for v in _verdicts(lab) if (v["path"], v["query"]) == (path, query)]
    assert [(line["verdict"], line["rule"]) for line in lines] == [("deny", rule)]
    _wait_until(lambda: len(lab.server_errors) > resets)
    assert "ConnectionResetError" in lab.server_errors[-1]


def test_the_server_connection_is_usable_after_a_refusal(lab: Lab) -> None:
    """A refusal ends only its own connection: the next one is served."""
    assert _get(lab, "/admin")[0] == 403
    assert _get(lab, "/after-refusal")[0] == 200


def test_non_http_tcp_and_icmp_pass(lab: Lab) -> None:
    """Another TCP port is not inspected and echoes; ping gets its reply; no log line."""
    before = len(_verdicts(lab))
    with entered(lab.client), socket.create_connection((lab.server_ip, ECHO_PORT), 5) as sock:
        sock.sendall(b"\x00\x01not http\r\n")
        assert sock.recv(1024) == b"\x00\x01not http\r\n"
    assert _ping(lab), "no ICMP echo reply"
    assert len(_verdicts(lab)) == before


def test_non_http_bytes_on_the_http_port_pass(lab: Lab) -> None:
    """A connection to port 80 whose first bytes are not HTTP is passed, unlogged."""
    before = len(_verdicts(lab))
    with entered(lab.client), socket.create_connection((lab.server_ip, 80), 5) as sock:
        sock.sendall(b"\x16\x03\x01 binary, not a request line\r\n\r\n")
        answer = sock.makefile("rb").read()  # http.server itself reads it, answers 400, closes
    assert b"400" in answer
    assert len(_verdicts(lab)) == before


def test_a_head_spanning_segments_is_held_then_decided(lab: Lab) -> None:
    """A head sent in two writes (with TCP_NODELAY so they are two segments) is decided once
    complete: allowed heads pass whole, denied ones never reach the server."""
    for path, expected in (("/split-ok", b"200"), ("/admin/split", b"403")):
        with entered(lab.client), socket.create_connection((lab.server_ip, 80), 5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(f"GET {path[:4]}".encode())
            time.sleep(0.05)
            sock.sendall(f"{path[4:]} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
            assert sock.recv(1024).split(b" ")[1] == expected
    assert "/split-ok" in lab.seen_paths and "/admin/split" not in lab.seen_paths
