"""The functions of a lab's service workloads (DESIGN §2 "Service chains"; docs/lab.md).

``forwarder``: nothing to start — the plan made the namespace forward (in-network: IPv4
forwarding and a route out of the other side) or bridge (transparent: ``br-svc``).
``l7-firewall``: tagwall's reference firewall, ``python -m tagwall.l7fw``, started in the
service namespace between its left and right interfaces (transparent: on the plan's bridge,
which it keeps), with its verdict log at ``logs/l7fw-<namespace>.jsonl`` — an argument inside
the state directory, so ``down`` finds and stops it like the controllers and agents.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ._errors import LabError
from ._processes import is_running, log_tail, spawn
from ._state import LabState, ProcessRecord, write_state
from ._topology import LabWorkload, Topology

__all__ = ["L7_FIREWALL", "READY_LINE", "start_services", "verdict_log"]

L7_FIREWALL = "l7-firewall"
READY_LINE = "tagwall-l7fw: ready"  # what the firewall writes to stderr once it serves
_POLL_S = 0.05


def verdict_log(state_dir: str | Path, workload: LabWorkload) -> Path:
    """Where the L7 firewall of ``workload`` logs its verdicts (JSON lines)."""
    return Path(state_dir) / "logs" / f"l7fw-{workload.namespace}.jsonl"


def start_services(
    state: LabState, topology: Topology, timeout_s: float, progress: Callable[[str], None]
) -> LabState:
    """Start the L7 firewall of every service workload whose function it is, and wait until
    each says it is ready (``timeout_s``); a firewall that exits fails at once with its log."""
    firewalls = [
        (w, w.service)
        for w in topology.workloads
        if w.service is not None and w.service.function == L7_FIREWALL
    ]
    if not firewalls:
        return state
    ip = shutil.which("ip")
    if ip is None:
        raise LabError("starting an L7 firewall needs the 'ip' command (Debian: iproute2)")
    progress(f"starting {len(firewalls)} L7 firewall(s)")
    directory = Path(state.state_dir)
    started: list[ProcessRecord] = []
    for w, service in firewalls:
        log = directory / "logs" / f"service-{w.namespace}.log"
        argv = [ip, "netns", "exec", w.namespace, sys.executable, "-m", "tagwall.l7fw"]
        argv += ["--mode", service.mode, "--left", service.left, "--right", service.right]
        argv += ["--log", str(verdict_log(directory, w))]
        if service.bridge is not None:
            argv += ["--bridge", service.bridge]
        record = ProcessRecord("service", w.name, spawn(argv, log), str(log))
        started.append(record)
        state = replace(state, processes=(*state.processes, record))
        write_state(state)  # recorded before the wait: a crash now still names it
    _wait_ready(started, timeout_s)
    return state


def _wait_ready(processes: list[ProcessRecord], timeout_s: float) -> None:
    waiting = list(processes)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for p in list(waiting):
            if READY_LINE in Path(p.log).read_text(errors="replace"):
                waiting.remove(p)
            elif not is_running(p.pid):
                raise LabError(
                    f"the L7 firewall of {p.name} (pid {p.pid}) exited; the end of its log "
                    f"{p.log}:",
                    log_tail(p.log),
                )
        if waiting and time.monotonic() > deadline:
            names = ", ".join(f"{p.name} (log {p.log})" for p in waiting)
            raise LabError(f"L7 firewall(s) not ready within {timeout_s:g} s: {names}")
        if waiting:
            time.sleep(_POLL_S)
