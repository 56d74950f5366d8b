"""The control protocol between real controller processes and agents (simulator data path):
snapshot then deltas, acknowledged revisions in the controller's host view, resume from the
persisted program, failover between two controllers, fail-static when both are gone.

The nftables data path under the same agent is tested with real packets in tests/lab.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli.support import EXAMPLES, REPO, controller_command, free_port, wait_until_serving

from tagwall.agent import Agent, ProgramState
from tagwall.compiler import Program
from tagwall.datapath import SimDatapath

pytestmark = pytest.mark.e2e

THREE_TIER = [EXAMPLES / "three-tier" / f for f in ("apps.yaml", "policy.yaml", "external.yaml")]


class Controllers:
    """Controller processes sharing one data directory (one SQLite store)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def start(self, *files: Path) -> str:
        port = free_port()
        extra = [arg for f in files for arg in ("-f", str(f))]
        process = subprocess.Popen(
            controller_command(port, self.data_dir, *extra),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        self.processes[url] = process
        wait_until_serving(url, process)
        deadline = time.monotonic() + 20
        while files and httpx.get(f"{url}/api/v1/revision").json()["revision"] < 1:
            assert time.monotonic() < deadline, "the manifests were not applied at start"
            time.sleep(0.05)
        return url

    def kill(self, url: str) -> None:
        process = self.processes.pop(url)
        process.kill()
        process.communicate(timeout=10)

    def stop_all(self) -> None:
        for url in list(self.processes):
            self.kill(url)


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Controllers]:
    group = Controllers(tmp_path / "store")
    try:
        yield group
    finally:
        group.stop_all()


def retag(url: str, workload: str, project: str, tier: str) -> int:
    """Change one workload's tier through the API; the new revision."""
    body = httpx.get(f"{url}/api/v1/workloads/{workload}", params={"project": project}).json()
    body["spec"]["tags"]["tier"] = tier
    reply = httpx.post(f"{url}/api/v1/apply", json=[body])
    assert reply.status_code == 200, reply.text
    revision: int = reply.json()["revision"]
    return revision


def compiled(url: str, host: str) -> dict[str, Any]:
    program: dict[str, Any] = httpx.get(f"{url}/api/v1/hosts/{host}/program").json()
    return program


def host_view(url: str, host: str) -> dict[str, Any]:
    view: dict[str, Any] = httpx.get(f"{url}/api/v1/agents/{host}").json()
    return view


async def until(check: Callable[[], bool], timeout_s: float = 10, what: str = "") -> float:
    """Wait until ``check()``; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def program_of(agent: Agent) -> dict[str, Any]:
    program = agent.datapath.program()
    assert isinstance(program, Program)
    return program.as_dict()


def running(agent: Agent, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` while ``agent`` runs, then stop the agent."""

    async def main() -> None:
        task = asyncio.create_task(agent.run())
        try:
            await body()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_snapshot_then_deltas_and_the_host_view(controllers: Controllers, tmp_path: Path) -> None:
    url = controllers.start(*THREE_TIER)
    agent = Agent("host-3", [url], SimDatapath(), ProgramState(tmp_path / "agent"))

    async def body() -> None:
        await until(lambda: agent.revision == 1, what="the first program")
        assert agent.last_applied == "snapshot"
        assert program_of(agent) == compiled(url, "host-3")
        await until(lambda: host_view(url, "host-3")["state"] == "in-sync", what="in-sync")
        view = host_view(url, "host-3")
        assert (view["desiredRevision"], view["realizedRevision"], view["connected"]) == (
            1,
            1,
            True,
        )
        assert host_view(url, "host-1")["state"] == "disconnected"  # no agent there

        revision = await asyncio.to_thread(retag, url, "crm-db-dev", "crm", "app")
        await until(lambda: agent.revision == revision, what="the tag change")
        assert agent.last_applied == "delta"  # a tag change travels as set elements
        assert program_of(agent) == compiled(url, "host-3")

    running(agent, body)


def test_restart_resumes_from_the_persisted_program(
    controllers: Controllers, tmp_path: Path
) -> None:
    url = controllers.start(*THREE_TIER)
    state = tmp_path / "agent"
    first = Agent("host-3", [url], SimDatapath(), ProgramState(state))

    async def connected() -> None:
        await until(lambda: first.revision == 1, what="the first program")

    running(first, connected)
    revision = retag(url, "crm-db-dev", "crm", "app")  # while the agent is down

    second = Agent("host-3", [url], SimDatapath(), ProgramState(state))
    assert second.restore()  # enforced before any controller is asked
    assert second.revision == 1 and program_of(second) == program_of(first)

    async def resumed() -> None:
        await until(lambda: second.revision == revision, what="the missed change")
        assert second.last_applied == "delta"  # not a full resend
        assert program_of(second) == compiled(url, "host-3")

    running(second, resumed)


def test_a_program_the_controller_does_not_know_is_replaced_by_a_snapshot(
    controllers: Controllers, tmp_path: Path
) -> None:
    url = controllers.start(*THREE_TIER)
    state = ProgramState(tmp_path / "agent")
    state.save(1, Program("host-3"))  # revision 1, but not this store's program
    agent = Agent("host-3", [url], SimDatapath(), state)
    assert agent.restore()

    async def body() -> None:
        await until(lambda: agent.last_applied is not None, what="a first message")
        assert agent.last_applied == "snapshot"
        assert program_of(agent) == compiled(url, "host-3")

    running(agent, body)


def test_failover_to_the_second_controller_and_fail_static(
    controllers: Controllers, tmp_path: Path
) -> None:
    first = controllers.start(*THREE_TIER)
    second = controllers.start()  # same store
    agent = Agent(
        "host-2", [first, second], SimDatapath(), ProgramState(tmp_path / "agent"), ping_s=0.5
    )

    async def body() -> None:
        await until(lambda: agent.revision == 1, what="the first program")
        assert agent.connected_to is not None and first.split("//")[1] in agent.connected_to
        before = program_of(agent)

        controllers.kill(first)
        took = await until(
            lambda: agent.connected_to is not None and second.split("//")[1] in agent.connected_to,
            what="failover to the second controller",
        )
        assert took < 5
        assert program_of(agent) == before  # nothing changed by the failover itself
        revision = await asyncio.to_thread(retag, second, "shop-web-prod", "shop", "app")
        await until(lambda: agent.revision == revision, what="a change through the second")
        await until(lambda: host_view(second, "host-2")["state"] == "in-sync", what="in-sync")
        assert host_view(second, "host-2")["controller"] == second
        enforced = program_of(agent)

        controllers.kill(second)  # every controller gone: enforcement stays as it was
        await until(lambda: agent.connected_to is None, what="the agent notices")
        await asyncio.sleep(1.5)
        assert program_of(agent) == enforced and agent.revision == revision

    running(agent, body)


def test_bad_messages_are_refused_and_the_last_good_program_stays(
    controllers: Controllers, tmp_path: Path
) -> None:
    url = controllers.start(*THREE_TIER)
    agent = Agent("host-3", [url], SimDatapath(), ProgramState(tmp_path / "agent"))
    message = (
        '{"type": "delta", "base": 41, "revision": 42, "delta": {"version": 1, "host": "host-3"}}'
    )

    async def body() -> None:
        await until(lambda: agent.revision == 1, what="the first program")
        before = program_of(agent)
        reply = await agent.handle(message)
        assert reply["type"] == "nack" and "delta from revision 41" in reply["reason"]
        assert agent.revision == 1 and program_of(agent) == before
        reply = await agent.handle('{"type": "snapshot", "revision": 43, "program": {}}')
        assert reply["type"] == "nack" and "version" in reply["reason"]
        assert agent.revision == 1 and program_of(agent) == before

    running(agent, body)
