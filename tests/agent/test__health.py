"""``agent._health``: which service workloads are checked, when a workload goes down and up,
what reaches the data path, and the TCP and HTTP probes against real servers.  The ICMP and
through-the-bump probes, and the whole loop in a real agent, are
tests/lab/test_steering_scaleout_privileged.py."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tagwall.agent._health import HealthMonitor, PortLike, Target, Tracker, targets
from tagwall.compiler import LocalInterface, LocalService, Program
from tagwall.errors import DatapathError
from tagwall.model import HealthCheck, HealthCheckType, Ref, ServiceTemplateMode


def _service(workload: str, check: HealthCheck | None, instance: str = "fw-1") -> LocalService:
    return LocalService(
        Ref(instance),
        ServiceTemplateMode.IN_NETWORK,
        workload,
        LocalInterface(workload, "left", (ipaddress.ip_address("127.0.0.1"),)),
        LocalInterface(workload, "right", (ipaddress.ip_address("127.0.0.2"),)),
        check,
    )


FAST = HealthCheck(HealthCheckType.TCP, interval_s=0.01, timeout_s=0.5, failures=2)


def test_two_failures_make_down_one_success_up() -> None:
    tracker = Tracker(failures=2)
    transcript = [tracker.observe(ok) for ok in (False, True, False, False, False, True)]
    assert transcript == [False, False, False, True, False, True]
    assert tracker.healthy


def test_targets_are_the_workloads_with_a_check_once_each() -> None:
    program = Program(
        "h1",
        services=(
            _service("a", FAST),
            _service("b", None),
            _service("a", FAST, instance="fw-2"),
        ),
    )
    assert list(targets(program)) == ["a"]
    assert targets(program)["a"].instance == "fw-1"
    assert targets(None) == {}


@dataclass
class FakeDatapath:
    program_: Program | None
    refuse: bool = False
    calls: list[frozenset[str]] = field(default_factory=list)

    def program(self) -> Program | None:
        return self.program_

    def set_service_health(self, down: Collection[str]) -> None:
        if self.refuse:
            raise DatapathError("refused")
        self.calls.append(frozenset(down))

    def service_ports(self) -> Mapping[tuple[str, str], PortLike]:
        return {}


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():  # type: ignore[operator]  # a callable, kept loose for lambdas
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout_s)


def test_the_monitor_sets_the_down_set_on_changes_only() -> None:
    """a fails from its third probe on: down after two failures, pushed once; when it
    answers again it is pushed up; b, always fine, is never down."""
    answers = {"a": [True, True] + [False] * 4 + [True] * 100, "b": [True] * 1000}

    async def probe(target: Target) -> None:
        if not answers[target.workload].pop(0):
            raise OSError("refused")

    program = Program("h1", services=(_service("a", FAST), _service("b", FAST)))
    dp = FakeDatapath(program)

    async def main() -> None:
        monitor = HealthMonitor(dp, probe=probe)
        task = asyncio.create_task(monitor.run())
        await _until(lambda: frozenset() in dp.calls[1:])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert dp.calls == [frozenset(), frozenset({"a"}), frozenset()]


def test_a_refused_push_is_retried_and_a_gone_workload_forgotten() -> None:
    async def probe(target: Target) -> None:
        raise TimeoutError

    dp = FakeDatapath(Program("h1", services=(_service("a", FAST),)), refuse=True)

    async def main() -> None:
        monitor = HealthMonitor(dp, probe=probe)
        task = asyncio.create_task(monitor.run())
        await _until(lambda: monitor.down() == {"a"})
        dp.refuse = False
        await _until(lambda: dp.calls == [frozenset({"a"})])
        dp.program_ = replace(dp.program_ or Program("h1"), services=())
        await _until(lambda: dp.calls[-1] == frozenset())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("kind", "path", "ok"),
    [
        (HealthCheckType.TCP, "/", True),
        (HealthCheckType.HTTP, "/healthz", True),
        (HealthCheckType.HTTP, "/broken", False),
    ],
)
def test_tcp_and_http_probes_against_a_real_server(
    server: int, kind: HealthCheckType, path: str, ok: bool
) -> None:
    """TCP: the connect is enough; HTTP: a status below 400 is needed."""
    check = HealthCheck(kind, path=path, port=server, interval_s=1, timeout_s=1, failures=1)
    target = targets(Program("h1", services=(_service("a", check),)))["a"]
    monitor = HealthMonitor(FakeDatapath(None))

    async def once() -> bool:
        try:
            await monitor._probe(target)
        except (OSError, ValueError):
            return False
        return True

    assert asyncio.run(once()) is ok


def test_a_closed_port_fails_the_tcp_probe(server: int) -> None:
    check = HealthCheck(HealthCheckType.TCP, port=1, interval_s=1, timeout_s=1, failures=1)
    target = targets(Program("h1", services=(_service("a", check),)))["a"]
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(HealthMonitor(FakeDatapath(None))._probe(target))
