"""What the steering lab tests share: a running lab with HTTP servers in some workloads,
the L7 firewalls' verdict logs and the service workloads' packet counters, and a GET from a
workload's namespace."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tagwall._netns import entered
from tagwall.lab import read_state
from tagwall.lab._services import verdict_log

from .enforcement_support import RunningLab
from .support import rx_packets

BIG = 300_000  # bytes of /big: hundreds of full-sized segments


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = b"x" * BIG if self.path.startswith("/big") else f"served {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # ``seen`` is the log
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A firewall that refuses a request resets the server's side of it: expected, so
        not printed (anything else is)."""
        if not isinstance(sys.exc_info()[1], ConnectionResetError):
            super().handle_error(request, client_address)


@dataclass
class ServiceLab:
    lab: RunningLab
    address: Mapping[str, str]  # workload → the address its server listens on
    seen: dict[str, list[str]] = field(default_factory=dict)  # server → paths it read

    def namespace(self, workload: str) -> str:
        return f"{self.lab.name}-w-{workload}"

    def verdicts(self, workload: str) -> list[dict[str, object]]:
        """The verdict log of the L7 firewall in ``workload``."""
        state = read_state(self.lab.state_dir)
        assert state is not None
        (w,) = [w for w in state.workloads if w.name == workload]
        path = verdict_log(self.lab.state_dir, w)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def received(self, workload: str, interface: str) -> int:
        """Packets the service workload has received on ``interface`` so far."""
        return rx_packets(self.namespace(workload), interface)

    def get(
        self, to: str, target: str, port: int = 80, source: str = "web"
    ) -> tuple[int, str, bytes]:
        """GET ``target`` from ``source``; (status, X-Tagwall-Rule header, body)."""
        conn = http.client.HTTPConnection(self.address[to], port, timeout=10)
        with entered(self.namespace(source)):
            conn.connect()  # the socket keeps the source's namespace
        try:
            conn.request("GET", target, headers={"Host": "shop"})
            response = conn.getresponse()
            return response.status, response.getheader("X-Tagwall-Rule") or "", response.read()
        finally:
            conn.close()


@contextlib.contextmanager
def http_servers(lab: ServiceLab, names: Iterable[str], ports: Iterable[int]) -> Iterator[None]:
    """An HTTP server on each of ``ports`` in each workload of ``names``, recording the paths
    it reads in ``lab.seen``."""
    servers: list[_Server] = []
    try:
        for name in names:
            seen: list[str] = []
            lab.seen[name] = seen
            handler = type(f"Handler_{name}", (_Handler,), {"seen": seen})
            for port in ports:
                with entered(lab.namespace(name)):
                    server = _Server((lab.address[name], port), handler)
                servers.append(server)
                threading.Thread(target=server.serve_forever, daemon=True).start()
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
