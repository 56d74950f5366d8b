"""What the lab asks its controllers (docs/api-contract.md), over httpx: health, apply, agents.

Every wait also watches the processes it waits for, so a controller or agent that dies fails
the wait at once, with the end of its log, instead of at the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx

from ..errors import Problem
from ..model import Document
from ._errors import LabError
from ._processes import is_running, log_tail
from ._state import ProcessRecord

__all__ = [
    "IN_SYNC",
    "agent_states",
    "check_reachable",
    "register",
    "wait_healthy",
    "wait_in_sync",
]

IN_SYNC = "in-sync"
_POLL_S = 0.1


def _died(process: ProcessRecord) -> LabError:
    return LabError(
        f"the {process.role} {process.name} (pid {process.pid}) exited; the end of its log "
        f"{process.log}:",
        log_tail(process.log),
    )


def wait_healthy(controllers: Sequence[ProcessRecord], timeout_s: float) -> None:
    """Until every controller answers ``GET /healthz`` with 200."""
    waiting = list(controllers)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as http:
        while waiting:
            for process in list(waiting):
                if not is_running(process.pid):
                    raise _died(process)
                try:
                    if http.get(f"{process.url}/healthz").status_code == 200:
                        waiting.remove(process)
                except httpx.TransportError:
                    pass
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{p.name} ({p.url}, log {p.log})" for p in waiting)
                raise LabError(f"no answer within {timeout_s:g} s from {names}")
            if waiting:
                time.sleep(_POLL_S)


def register(url: str, documents: Sequence[Document], *, dry_run: bool = False) -> int:
    """Apply the lab's manifests (``POST /api/v1/apply``, one atomic commit); the revision.
    ``dry_run``: only ask whether the controller would accept them (``?dryRun=true``)."""
    try:
        response = httpx.post(
            f"{url}/api/v1/apply",
            params={"dryRun": "true"} if dry_run else None,
            json=[dict(d.body) for d in documents],
            timeout=30.0,
        )
    except httpx.TransportError as exc:
        raise LabError(f"cannot reach the controller at {url}: {exc}") from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return int(body.get("revision") or 0)
    problems = body.get("problems") if isinstance(body, dict) else None
    lines = [str(_problem(p, documents)) for p in problems or [] if isinstance(p, Mapping)] or [
        str(body.get("detail") if isinstance(body, dict) else response.text)[:500]
    ]
    would = " would refuse" if dry_run else " refused"
    raise LabError(
        f"the controller at {url}{would} the lab's manifests (HTTP {response.status_code})",
        lines,
    )


def _problem(raw: Mapping[str, Any], documents: Sequence[Document]) -> Problem:
    """A problem of the API, its ``<api>#N`` source mapped back to the file and document."""
    problem = Problem.from_dict(raw)
    source = problem.source
    if source.startswith("<api>#") and source[6:].isdigit() and int(source[6:]) < len(documents):
        return replace(problem, source=documents[int(source[6:])].where)
    return problem


def agent_states(urls: Sequence[str], timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """``GET /api/v1/agents`` from the first controller that answers: host → its item.
    Empty when none answers."""
    for url in urls:
        try:
            response = httpx.get(f"{url}/api/v1/agents", timeout=timeout_s)
            body = response.json() if response.is_success else None
        except (httpx.TransportError, ValueError):
            continue
        items = body.get("items") if isinstance(body, dict) else None
        if isinstance(items, list):
            return {
                str(item["host"]): item
                for item in items
                if isinstance(item, dict) and "host" in item
            }
    return {}


def wait_in_sync(
    urls: Sequence[str],
    agents: Sequence[ProcessRecord],
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Until every agent's host is ``in-sync`` at a controller; ``LabError`` naming the hosts
    that are not (with their state and error) at the timeout, or at once if an agent dies."""
    deadline = time.monotonic() + timeout_s
    reported = -1
    while True:
        for process in agents:
            if not is_running(process.pid):
                raise _died(process)
        states = agent_states(urls)
        behind = [p.name for p in agents if states.get(p.name, {}).get("state") != IN_SYNC]
        if not behind:
            return
        if len(behind) != reported:
            progress(f"waiting for {len(behind)} of {len(agents)} agents to be in sync")
            reported = len(behind)
        if time.monotonic() > deadline:
            raise LabError(
                f"{len(behind)} agent(s) not in sync after {timeout_s:g} s",
                [_describe(host, states.get(host)) for host in behind],
            )
        time.sleep(_POLL_S)


def _describe(host: str, item: Mapping[str, Any] | None) -> str:
    if item is None:
        return f"{host}: no controller answered about it"
    error = f", error: {item['error']}" if item.get("error") else ""
    return (
        f"{host}: {item.get('state')} (desired revision {item.get('desiredRevision')}, "
        f"realized {item.get('realizedRevision')}{error})"
    )


def check_reachable(url: str) -> None:
    """A controller given with ``--server`` answers ``GET /healthz``, or ``LabError``."""
    try:
        response = httpx.get(f"{url}/healthz", timeout=5.0)
    except httpx.TransportError as exc:
        raise LabError(f"cannot reach the controller at {url}: {exc}") from exc
    if response.status_code != 200:
        raise LabError(f"the controller at {url} is not healthy: HTTP {response.status_code}")
