"""Where a lab keeps its state (``resolve_state_dir``: ``/run/tagwall-lab/<lab>`` unless given)
and its state file ``<state dir>/lab.json``: what ``up`` made, for ``status``, ``probe`` and
``down``.

``up`` writes it before making anything and again after every step (to a temporary file,
then renamed over the old one), so after a crash it lists what was made so far.  ``down`` does
not depend on it: it finds namespaces by the lab's prefix and processes by their state
directory; the file adds the record (phase, pids, controller URLs, logs, the inventory the
probe needs).

Schema (``version`` 1), JSON with camelCase keys::

    {"version": 1, "lab": "twlab", "stateDir": "/run/tagwall-lab/twlab", "phase": "up",
     "created": "2025-01-31T12:00:00+00:00", "upPid": 4242, "upStarted": 123456,
     "datapath": "nftables", "agents": true, "server": null, "manifests": ["apps.yaml"],
     "processes": [{"role": "controller", "name": "controller-1", "pid": 4250,
                    "log": ".../logs/controller-1.log", "url": "http://127.0.0.1:41234"}],
     "namespaces": ["twlab-fabric", ...], "hosts": [LabHost.as_dict()],
     "workloads": [LabWorkload.as_dict()]}
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import LabError
from ._names import check_lab_name, default_state_dir
from ._topology import LabHost, LabWorkload

__all__ = [
    "STATE_FILE",
    "LabState",
    "Phase",
    "ProcessRecord",
    "read_state",
    "resolve_state_dir",
    "write_state",
]

STATE_FILE = "lab.json"
_VERSION = 1


class Phase(enum.Enum):
    BUILDING = "building"  # ``up`` is at work; if its process is gone, it crashed: ``down``
    UP = "up"  # every step of ``up`` ran (agents may still be out of sync: see status)


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process the lab started; it runs in its own session and outlives ``up``."""

    role: str  # "controller", "agent" or "service" (an L7 firewall, ``_services``)
    name: str  # "controller-<n>", or the agent's host
    pid: int
    log: str
    url: str | None = None  # a controller's API URL

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "role": self.role,
            "name": self.name,
            "pid": self.pid,
            "log": self.log,
        }
        if self.url is not None:
            out["url"] = self.url
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProcessRecord:
        url = raw.get("url")
        return cls(
            str(raw["role"]),
            str(raw["name"]),
            int(raw["pid"]),
            str(raw["log"]),
            None if url is None else str(url),
        )


@dataclass(frozen=True, slots=True)
class LabState:
    lab: str
    state_dir: str  # absolute
    phase: Phase
    created: str  # ISO 8601, UTC
    up_pid: int
    up_started: int  # start time of ``up`` (/proc/<pid>/stat field 22): tells a reused pid
    datapath: str
    agents: bool  # were agents asked for (``--no-agents`` makes a lab without enforcement)
    server: str | None  # a controller given with ``--server``: not the lab's, never stopped
    manifests: tuple[str, ...]
    namespaces: tuple[str, ...]
    hosts: tuple[LabHost, ...]
    workloads: tuple[LabWorkload, ...]
    processes: tuple[ProcessRecord, ...] = ()

    @property
    def controller_urls(self) -> list[str]:
        """Where agents and ``status`` find the control plane, in order of preference."""
        if self.server is not None:
            return [self.server]
        return [p.url for p in self.processes if p.role == "controller" and p.url is not None]

    def as_dict(self) -> dict[str, object]:
        return {
            "version": _VERSION,
            "lab": self.lab,
            "stateDir": self.state_dir,
            "phase": self.phase.value,
            "created": self.created,
            "upPid": self.up_pid,
            "upStarted": self.up_started,
            "datapath": self.datapath,
            "agents": self.agents,
            "server": self.server,
            "manifests": list(self.manifests),
            "processes": [p.as_dict() for p in self.processes],
            "namespaces": list(self.namespaces),
            "hosts": [h.as_dict() for h in self.hosts],
            "workloads": [w.as_dict() for w in self.workloads],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LabState:
        if raw.get("version") != _VERSION:
            raise ValueError(f"unknown state file version {raw.get('version')!r}")
        server = raw.get("server")
        return cls(
            lab=str(raw["lab"]),
            state_dir=str(raw["stateDir"]),
            phase=Phase(raw["phase"]),
            created=str(raw["created"]),
            up_pid=int(raw["upPid"]),
            up_started=int(raw["upStarted"]),
            datapath=str(raw["datapath"]),
            agents=bool(raw["agents"]),
            server=None if server is None else str(server),
            manifests=tuple(str(m) for m in raw["manifests"]),
            namespaces=tuple(str(n) for n in raw["namespaces"]),
            hosts=tuple(LabHost.from_dict(h) for h in raw["hosts"]),
            workloads=tuple(LabWorkload.from_dict(w) for w in raw["workloads"]),
            processes=tuple(ProcessRecord.from_dict(p) for p in raw["processes"]),
        )


def resolve_state_dir(lab: str, state_dir: str | Path | None) -> Path:
    """The lab's state directory, absolute (process ownership compares paths); ``LabError``
    for an invalid lab name."""
    try:
        check_lab_name(lab)
    except ValueError as exc:
        raise LabError(str(exc)) from None
    return Path(state_dir or default_state_dir(lab)).resolve()


def read_state(state_dir: Path) -> LabState | None:
    """The state in ``state_dir``, or None when there is no state file."""
    path = state_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabError(f"cannot read the lab state {path}: {exc.strerror or exc}") from exc
    try:
        return LabState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(
            f"the lab state {path} is damaged ({exc}); `tagwall lab down` still removes the lab"
        ) from exc


def write_state(state: LabState) -> None:
    """Replace the state file atomically: a reader sees the old or the new file, never half."""
    directory = Path(state.state_dir)
    temporary = directory / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state.as_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, directory / STATE_FILE)
