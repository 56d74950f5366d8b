"""``tagwall agent``: run a host's agent, or remove everything an agent made (``--cleanup``).

The agent imports its data path only when it runs: ``nftables`` programs the ``inet tagwall``
table of the host (or of ``--netns``, for the lab), ``sim`` keeps the program in the in-process
simulator (no packets are filtered; for scale tests and hosts without nftables).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import err, fail

if TYPE_CHECKING:
    from ..agent import Agent, HealthMonitor, StatusReporter
    from ..agent.recorder import FlowRecorder

__all__ = ["agent"]


class DatapathKind(enum.Enum):
    NFTABLES = "nftables"
    SIM = "sim"


class Unprogrammed(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"


def agent(
    host: Annotated[
        str | None, typer.Option("--host", help="This host's name, as workloads name it.")
    ] = None,
    controller: Annotated[
        str | None,
        typer.Option(
            "--controller", help="Controller URL(s), comma-separated; the agent fails over."
        ),
    ] = None,
    datapath: Annotated[
        DatapathKind, typer.Option("--datapath", help="What enforces the program.")
    ] = DatapathKind.NFTABLES,
    netns: Annotated[
        str | None,
        typer.Option("--netns", help="Program nftables in this network namespace (lab hosts)."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Where the last program is kept [var/agent/HOST]."),
    ] = None,
    unprogrammed: Annotated[
        Unprogrammed,
        typer.Option(
            "--unprogrammed",
            help="Before the first program: drop workload traffic (closed) or leave it (open).",
        ),
    ] = Unprogrammed.CLOSED,
    workload_interfaces: Annotated[
        str,
        typer.Option("--workload-interfaces", help="Glob of the host's workload interfaces."),
    ] = "tw-*",
    flows: Annotated[
        bool,
        typer.Option(
            "--flows/--no-flows",
            help="Report flows (conntrack, NFLOG) to the controllers' analytics (nftables only).",
        ),
    ] = True,
    flow_snapshot_s: Annotated[
        float,
        typer.Option(
            "--flow-snapshot-s",
            min=0.5,
            help="Seconds between conntrack snapshots: a closed or idle flow is reported "
            "within one.",
        ),
    ] = 10.0,
    flow_spool_mb: Annotated[
        int,
        typer.Option(
            "--flow-spool-mb", min=1, help="Disk for reports no controller took yet (MiB)."
        ),
    ] = 256,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="Remove the tagwall table, the persisted program and unsent flow reports.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Python log level.")] = "info",
) -> None:
    """Enforce HOST's program from the controller(s), or --cleanup what an agent made."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.root.level))
    # One line per shipped batch of flow reports is noise; failures are logged by the shipper.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    from ..agent import Agent, HealthMonitor, ProgramState, StatusReporter

    if cleanup:
        _cleanup(netns, state_dir if state_dir else (Path("var/agent") / host if host else None))
        return
    if not host:
        raise typer.BadParameter("--host is required", param_hint="--host")
    if not controller:
        raise typer.BadParameter("--controller is required", param_hint="--controller")
    urls = [u.strip() for u in controller.split(",") if u.strip()]
    directory = state_dir or Path("var/agent") / host
    state = ProgramState(directory)
    from ..datapath import Datapath, SimDatapath

    nft = None
    dp: Datapath
    if datapath is DatapathKind.NFTABLES:
        from ..datapath import NftDatapath

        dp = nft = NftDatapath(netns=netns)
    else:
        dp = SimDatapath()
    try:
        runner = Agent(host, urls, dp, state)
    except ValueError as exc:
        fail(str(exc))
    if not runner.restore() and nft is not None and unprogrammed is Unprogrammed.CLOSED:
        nft.load_closed(workload_interfaces)
        err.print(f"no program yet: traffic of {workload_interfaces} dropped until one arrives")
    recorder: Callable[[], FlowRecorder] | None = None
    if flows and nft is not None:
        recorder = functools.partial(
            _recorder,
            host,
            urls,
            nft,
            directory / "flows",
            netns=netns,
            snapshot_interval_s=flow_snapshot_s,
            spool_bytes=flow_spool_mb * 1024 * 1024,
        )
    # Health checks of the local service workloads steer around the failed ones (nftables).
    health = HealthMonitor(nft, netns) if nft is not None else None
    status = StatusReporter(host, urls, nft) if nft is not None else None
    asyncio.run(_run(runner, recorder, health, status))


def _recorder(*args: Any, **kwargs: Any) -> FlowRecorder:
    from ..agent.recorder import FlowRecorder  # pyroute2 and netlink: only when recording

    return FlowRecorder(*args, **kwargs)


async def _run(
    runner: Agent,
    make_recorder: Callable[[], FlowRecorder] | None,
    health: HealthMonitor | None = None,
    status: StatusReporter | None = None,
) -> None:
    task = asyncio.create_task(runner.run())
    checks = asyncio.create_task(health.run()) if health is not None else None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Fail-static: stopping the agent leaves the data path exactly as it is.
        loop.add_signal_handler(sig, task.cancel)
    # Made only now: a stop signal from here on ends the recorder cleanly (its reports
    # spooled, its open flows' state written).
    recorder = make_recorder() if make_recorder is not None else None
    for started in (recorder, status):
        if started is not None:
            started.start()
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for stopped in (recorder, status):
            if stopped is not None:
                stopped.stop()
        if checks is not None:
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks


def _cleanup(netns: str | None, state_dir: Path | None) -> None:
    from ..agent import ProgramState
    from ..datapath import nft_cleanup

    nft_cleanup(netns)
    if state_dir is not None:
        shutil.rmtree(state_dir / "flows", ignore_errors=True)  # unsent reports go too
        ProgramState(state_dir).remove()
    err.print("removed the tagwall table" + (f" and {state_dir}" if state_dir else ""))
