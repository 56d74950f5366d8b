"""A whole lab's life: ``up``, ``down`` and ``probe`` (what ``tagwall lab`` runs; ``status`` is
in ``_status``).

``up`` order, and what a failure at each step leaves:

1. check (manifests, the plan, root, no lab of that name already there, and with ``server``
   that it would accept the manifests): nothing made yet;
2. write the state file (phase ``building``), make namespaces and links, start the service
   workloads' L7 firewalls (``_services``) and wait until they are ready;
3. start the controllers (unless ``server``), wait for ``/healthz``, apply the manifests
   with every host declared at its fabric address (``with_underlay``);
4. start one agent per host (unless ``agents=False``);
   a failure in steps 2-4 (or Ctrl-C) removes everything made, then re-raises;
5. phase ``up``; wait until every agent is ``in-sync``.  A failure here keeps the lab for
   inspection (the error says so; ``down`` removes it).

``down`` needs nothing but the lab name and state directory: it stops the ``up`` process
named in the state file if it still runs, every process whose command line points into the
state directory, deletes every namespace with the lab's prefix (their links go with them) and
the files the lab wrote.  It is idempotent and works after a crash or without a state file.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ..model import Document, FlowService, Json, load
from . import _control
from ._errors import LabError
from ._names import DEFAULT_LAB
from ._netlink import create, lab_namespaces, remove_namespaces
from ._plan import plan
from ._probe import DEFAULT_TIMEOUT_S, ProbeResult, probe_pairs
from ._processes import free_port, lab_pids, spawn, start_time, stop
from ._services import start_services
from ._state import (
    STATE_FILE,
    LabState,
    Phase,
    ProcessRecord,
    read_state,
    resolve_state_dir,
    write_state,
)
from ._status import up_running
from ._topology import LabHost, Topology

__all__ = ["DATAPATHS", "DownReport", "down", "probe", "up"]

DATAPATHS = ("nftables", "sim")
WORKLOAD_INTERFACES = "tw-*"
# What the lab writes in its state directory; ``down`` removes these and nothing else.
_OWNED = (STATE_FILE, f".{STATE_FILE}.tmp", "data", "logs", "agents")


def _quiet(_: str) -> None:
    """The default ``progress``: say nothing."""


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"{action} needs root: the lab creates network namespaces and veth pairs "
            f"(running as uid {os.geteuid()}).  Without root, run the control plane on its own "
            "(`tagwall controller`, agents with `--datapath sim`)."
        )


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tagwall.cli", *args]


# -- up ---------------------------------------------------------------------------------------


def up(
    documents: Sequence[Document],
    *,
    lab: str = DEFAULT_LAB,
    state_dir: str | Path | None = None,
    server: str | None = None,
    controllers: int = 2,
    datapath: str = "nftables",
    agents: bool = True,
    timeout_s: float = 30.0,
    progress: Callable[[str], None] = _quiet,
) -> LabState:
    """Build the lab of ``documents`` and start its control plane; return its state.

    ``server``: use that controller instead of starting ``controllers`` of the lab's own (on
    one shared store, every agent given all their URLs).  ``timeout_s`` bounds each wait
    (controllers healthy, agents in sync).  Raises ``ValidationError`` for manifests the lab
    cannot build and ``LabError`` for everything else (see the module docstring for what a
    failure leaves behind).
    """
    started = time.monotonic()
    directory = resolve_state_dir(lab, state_dir)
    if datapath not in DATAPATHS:
        raise LabError(f"unknown data path {datapath!r} (allowed: {', '.join(DATAPATHS)})")
    if server is None and controllers < 1:
        raise LabError("a lab needs at least one controller (or --server URL)")
    topology = plan(load(list(documents)), lab)  # manifest problems first: no root needed
    _require_root("tagwall lab up")
    _refuse_existing(lab, directory)
    registered = with_underlay(documents, topology)
    if server is not None:
        # Its objects may clash with the manifests (an address in use): ask before building.
        server = _normalize_url(server)
        _control.check_reachable(server)
        _control.register(server, registered, dry_run=True)
    externals = sum(1 for w in topology.workloads if w.host is None)
    progress(
        f"lab {lab}: {len(topology.hosts)} hosts, {len(topology.workloads)} workloads "
        f"({externals} external), state in {directory}"
    )
    directory.mkdir(parents=True, exist_ok=True)
    state = _initial_state(topology, directory, documents, datapath, agents, server)
    write_state(state)
    try:
        create(topology, progress)
        state = start_services(state, topology, timeout_s, progress)
        state = _start_control_plane(state, registered, controllers, timeout_s, progress)
        if agents:
            state = _start_agents(state, topology, progress)
    except BaseException:
        progress("lab up failed: removing what it made")
        _teardown(lab, directory, None)  # None: the ``up`` to stop is this one
        raise
    state = replace(state, phase=Phase.UP)
    write_state(state)
    if agents:
        try:
            _control.wait_in_sync(
                state.controller_urls,
                [p for p in state.processes if p.role == "agent"],
                timeout_s,
                progress,
            )
        except LabError as exc:
            raise LabError(
                f"{exc.message}; the lab stays up for inspection (logs in {directory}/logs); "
                f"`tagwall lab down --lab {lab}` removes it",
                exc.details,
            ) from exc
    progress(f"lab {lab} is up ({time.monotonic() - started:.1f} s)")
    return state


def _normalize_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def _refuse_existing(lab: str, directory: Path) -> None:
    namespaces = lab_namespaces(lab)
    pids = lab_pids(directory)
    if (directory / STATE_FILE).exists() or namespaces or pids:
        found = (
            [f"state file {directory / STATE_FILE}"] if (directory / STATE_FILE).exists() else []
        )
        found += [f"{len(namespaces)} namespace(s) {lab}-*"] if namespaces else []
        found += [f"processes {', '.join(map(str, pids))}"] if pids else []
        raise LabError(
            f"lab {lab} is already up or left over ({'; '.join(found)}): "
            f"run `tagwall lab down --lab {lab}` first"
        )


def _initial_state(
    topology: Topology,
    directory: Path,
    documents: Sequence[Document],
    datapath: str,
    agents: bool,
    server: str | None,
) -> LabState:
    return LabState(
        lab=topology.lab,
        state_dir=str(directory),
        phase=Phase.BUILDING,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        up_pid=os.getpid(),
        up_started=start_time(os.getpid()) or 0,
        datapath=datapath,
        agents=agents,
        server=server,
        manifests=tuple(dict.fromkeys(d.source for d in documents)),
        namespaces=tuple(ns.name for ns in topology.namespaces),
        hosts=topology.hosts,
        workloads=topology.workloads,
    )


def with_underlay(documents: Sequence[Document], topology: Topology) -> list[Document]:
    """``documents`` with every host of the lab declared as a ``Host`` whose ``address`` is
    its fabric IPv4 address (a declared Host keeps its tags; its address is replaced): how
    agents learn where another host's service instances are (docs/steering.md)."""
    hosts = {h.name: h for h in topology.hosts}
    out: list[Document] = []
    for d in documents:
        meta = d.body.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if d.kind == "Host" and isinstance(name, str) and name in hosts:
            spec = d.body.get("spec")
            tags = spec.get("tags") if isinstance(spec, Mapping) else None
            out.append(Document(_host_body(name, hosts.pop(name), tags), d.source, d.index))
        else:
            out.append(d)
    for name, host in hosts.items():
        out.append(Document(_host_body(name, host, None), "<lab>", len(out)))
    return out


def _host_body(name: str, host: LabHost, tags: Json) -> dict[str, Json]:
    spec: dict[str, Json] = {"address": str(host.fabric_ipv4)}
    if tags is not None:
        spec["tags"] = tags
    return {"apiVersion": "tagwall/v1", "kind": "Host", "metadata": {"name": name}, "spec": spec}


def _start_control_plane(
    state: LabState,
    documents: Sequence[Document],
    controllers: int,
    timeout_s: float,
    progress: Callable[[str], None],
) -> LabState:
    directory = Path(state.state_dir)
    if state.server is None:
        progress(f"starting {controllers} controller(s) on one store ({directory}/data)")
        for n in range(1, controllers + 1):
            port = free_port()
            log = directory / "logs" / f"controller-{n}.log"
            argv = _command(
                "controller", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{directory}/data"
            )
            if n > 1:  # one process holds the flow store: the first, not whichever is quicker
                argv = [*argv, "--flows", "off"]
            record = ProcessRecord(
                "controller",
                f"controller-{n}",
                spawn(argv, log),
                str(log),
                f"http://127.0.0.1:{port}",
            )
            state = replace(state, processes=(*state.processes, record))
            write_state(state)  # recorded before the wait: a crash now still names it
        _control.wait_healthy([p for p in state.processes if p.role == "controller"], timeout_s)
    url = state.controller_urls[0]
    progress(f"registering {len(documents)} manifest(s) at {url}")
    _control.register(url, documents)
    return state


def _start_agents(state: LabState, topology: Topology, progress: Callable[[str], None]) -> LabState:
    directory = Path(state.state_dir)
    progress(f"starting {len(topology.hosts)} agent(s) ({state.datapath} data path)")
    for host in topology.hosts:
        log = directory / "logs" / f"agent-{host.namespace}.log"
        argv = _command(
            "agent",
            "--host",
            host.name,
            "--controller",
            ",".join(state.controller_urls),
            "--datapath",
            state.datapath,
            "--netns",
            host.namespace,
            "--state-dir",
            f"{directory}/agents/{host.namespace}",
            "--workload-interfaces",
            WORKLOAD_INTERFACES,
        )
        record = ProcessRecord("agent", host.name, spawn(argv, log), str(log))
        state = replace(state, processes=(*state.processes, record))
        write_state(state)
    return state


# -- down -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownReport:
    """What ``down`` removed (empty lists when nothing was there)."""

    lab: str
    state_dir: str
    pids: tuple[int, ...] = ()
    namespaces: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    kept_dir: bool = False  # the state directory holds files the lab did not write

    def as_dict(self) -> dict[str, object]:
        return {
            "lab": self.lab,
            "stateDir": self.state_dir,
            "stoppedPids": list(self.pids),
            "deletedNamespaces": list(self.namespaces),
            "removedFiles": list(self.files),
            "keptStateDir": self.kept_dir,
        }


def down(
    *,
    lab: str = DEFAULT_LAB,
    state_dir: str | Path | None = None,
    progress: Callable[[str], None] = _quiet,
) -> DownReport:
    """Remove every process, namespace and file of the lab; idempotent."""
    directory = resolve_state_dir(lab, state_dir)
    _require_root("tagwall lab down")
    try:
        state = read_state(directory)
    except LabError:
        state = None  # damaged: everything is found without it
    return _teardown(lab, directory, state, progress)


def _teardown(
    lab: str,
    directory: Path,
    state: LabState | None,
    progress: Callable[[str], None] = _quiet,
) -> DownReport:
    stopped: list[int] = []
    if state is not None and up_running(state) and state.up_pid != os.getpid():
        # A live ``up`` first, and alone: whatever it starts until it stops, the scan below sees.
        progress(f"stopping lab up (pid {state.up_pid})")
        stop([state.up_pid])
        stopped.append(state.up_pid)
    pids = lab_pids(directory)  # the recorded ones and any started just before a crash
    if pids:
        progress(f"stopping {len(pids)} process(es)")
        stop(sorted(pids))
        stopped += pids
    namespaces = lab_namespaces(lab)
    if namespaces:
        progress(f"deleting {len(namespaces)} namespace(s)")
        remove_namespaces(namespaces)
    files: list[str] = []
    for name in _OWNED:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        files.append(str(path))
    kept = directory.is_dir() and any(directory.iterdir())
    if directory.is_dir() and not kept:
        directory.rmdir()
    return DownReport(
        lab, str(directory), tuple(sorted(stopped)), tuple(namespaces), tuple(files), kept
    )


# -- probe ------------------------------------------------------------------------------------


def probe(
    service: FlowService,
    *,
    lab: str = DEFAULT_LAB,
    state_dir: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """Real attempts of ``service`` between every ordered pair of the lab's workloads."""
    directory = resolve_state_dir(lab, state_dir)
    _require_root("tagwall lab probe")
    state = read_state(directory)
    if state is None:
        raise LabError(
            f"lab {lab} is not up (no state file in {directory}): run `tagwall lab up -f FILE…`"
        )
    if state.phase is not Phase.UP:
        raise LabError(
            f"lab {lab} is not up yet (phase {state.phase.value}): see `tagwall lab status`"
        )
    present = set(lab_namespaces(lab))
    missing = [w.namespace for w in state.workloads if w.namespace not in present]
    if missing:
        raise LabError(
            f"lab {lab} lacks {len(missing)} workload namespace(s) (e.g. {missing[0]}): "
            "run `tagwall lab down`, then `tagwall lab up` again"
        )
    hosts = [h.namespace for h in state.hosts]
    return probe_pairs(state.workloads, service, timeout_s, hosts)
