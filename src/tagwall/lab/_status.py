"""``status``: a lab as it is now, compared with what its state file says ``up`` made.

Reads only (the state file, /run/netns, /proc, and the controllers' ``GET /api/v1/agents``):
needs no root when the state directory is readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _control
from ._names import DEFAULT_LAB
from ._netlink import lab_namespaces
from ._processes import belongs_to, is_running, lab_pids, start_time
from ._state import LabState, Phase, ProcessRecord, read_state, resolve_state_dir

__all__ = ["LabStatus", "status", "up_running"]


def up_running(state: LabState) -> bool:
    """Is the ``up`` that wrote ``state`` still running (its pid, not a reused one)?"""
    return is_running(state.up_pid) and start_time(state.up_pid) == state.up_started


@dataclass(frozen=True, slots=True)
class LabStatus:
    """The lab as it is now, compared with its state file.

    ``phase``: ``absent`` (nothing there) · ``leftovers`` (namespaces or processes but no state
    file) · ``building`` (``up`` at work) · ``crashed`` (``up`` died while building) · ``up``.
    ``problems`` lists what differs from the state file: missing namespaces, stopped
    processes, agents not in sync.
    """

    lab: str
    state_dir: str
    phase: str
    state: LabState | None = None
    running: dict[int, bool] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # host → controller's view
    problems: tuple[str, ...] = ()
    leftover_namespaces: tuple[str, ...] = ()
    leftover_pids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"lab": self.lab, "stateDir": self.state_dir, "phase": self.phase}
        state = self.state
        if state is not None:
            controllers = [p for p in state.processes if p.role == "controller"]
            agents = {p.name: p for p in state.processes if p.role == "agent"}
            out.update(
                created=state.created,
                datapath=state.datapath,
                agents=state.agents,
                server=state.server,
                manifests=list(state.manifests),
                controllers=[
                    {**p.as_dict(), "running": self.running.get(p.pid, False)} for p in controllers
                ],
                hosts=[
                    {**h.as_dict(), "agent": self._agent(agents.get(h.name), h.name)}
                    for h in state.hosts
                ],
                workloads=[w.as_dict() for w in state.workloads],
            )
        out["problems"] = list(self.problems)
        out["leftovers"] = {
            "namespaces": list(self.leftover_namespaces),
            "pids": list(self.leftover_pids),
        }
        return out

    def _agent(self, process: ProcessRecord | None, host: str) -> dict[str, object] | None:
        if process is None:
            return None
        view = self.agents.get(host, {})
        return {
            "pid": process.pid,
            "running": self.running.get(process.pid, False),
            "log": process.log,
            **{
                key: view.get(key)
                for key in ("state", "desiredRevision", "realizedRevision", "error")
            },
        }


def status(*, lab: str = DEFAULT_LAB, state_dir: str | Path | None = None) -> LabStatus:
    """What is there now.  Reads only: needs no root when the state directory is readable."""
    directory = resolve_state_dir(lab, state_dir)
    state = read_state(directory)
    namespaces = lab_namespaces(lab)
    pids = lab_pids(directory)
    if state is None:
        phase = "leftovers" if namespaces or pids else "absent"
        return LabStatus(
            lab, str(directory), phase, None, {}, {}, (), tuple(namespaces), tuple(pids)
        )
    if state.phase is Phase.BUILDING:
        phase = "building" if up_running(state) else "crashed"
    else:
        phase = "up"
    running = {p.pid: belongs_to(p.pid, directory) for p in state.processes}
    problems = [f"namespace {n} is missing" for n in state.namespaces if n not in namespaces]
    problems += [
        f"{p.role} {p.name} (pid {p.pid}) is not running; its log: {p.log}"
        for p in state.processes
        if not running[p.pid]
    ]
    agents: dict[str, dict[str, Any]] = {}
    if state.agents and phase == "up":
        agents = _control.agent_states(state.controller_urls)
        if not agents:
            problems.append("no controller answers")
        else:
            problems += [
                f"agent {host.name}: {agents.get(host.name, {}).get('state', 'unknown')}"
                for host in state.hosts
                if agents.get(host.name, {}).get("state") != _control.IN_SYNC
            ]
    recorded = {p.pid for p in state.processes} | {state.up_pid}
    return LabStatus(
        lab,
        str(directory),
        phase,
        state,
        running,
        agents,
        tuple(problems),
        tuple(n for n in namespaces if n not in state.namespaces),
        tuple(pid for pid in pids if pid not in recorded),
    )
