"""``tagwall lab …``: build a lab of network namespaces from manifests, probe it, remove it.

A thin edge over ``tagwall.lab`` (docs/lab.md): ``up`` reads manifests like ``reach -f`` does,
``probe`` prints reach's JSON shape with real results, ``status`` and ``down`` need only the
lab's name.  Progress goes to stderr; ``-o json|yaml`` print one value on stdout.  ``LabError``
becomes a ``CliError`` (exit status 1) with its details as problem lines.

``--server`` here has no ``TAGWALL_SERVER`` fallback on purpose: it replaces the lab's own
controllers, and an environment variable left set should not silently change what ``up`` makes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..errors import Problem
from ..lab import (
    DEFAULT_LAB,
    DEFAULT_TIMEOUT_S,
    LabError,
    check_lab_name,
)
from ..lab import down as lab_down
from ..lab import probe as lab_probe
from ..lab import status as lab_status
from ..lab import up as lab_up
from ..model import parse_flow_service
from ._common import (
    CliError,
    FilesOpt,
    OutputFormat,
    OutputOpt,
    emit,
    err,
    out,
    read_documents,
    records_table,
)
from ._offline import ServiceOpt

__all__ = ["app"]

app = typer.Typer(
    help="A lab on this machine (needs root): every host and workload of the manifests a "
    "network namespace, real packets between them.",
    no_args_is_help=True,
)


class Datapath(enum.StrEnum):
    NFTABLES = "nftables"  # agents program nftables inside each host namespace
    SIM = "sim"  # agents run the in-process simulator: the lab forwards everything


def _lab_name(value: str) -> str:
    try:
        return check_lab_name(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


LabOpt = Annotated[
    str,
    typer.Option(
        "--lab",
        envvar="TAGWALL_LAB",
        callback=_lab_name,
        help="Lab name, also the prefix of its namespaces: twlab plus up to 8 lowercase "
        "letters or digits (env TAGWALL_LAB).",
    ),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="The lab's state file, logs and store [default: /run/tagwall-lab/LAB].",
        show_default=False,
    ),
]


@contextmanager
def _reported() -> Iterator[None]:
    try:
        yield
    except LabError as exc:
        raise CliError(exc.message, [Problem(line.strip()) for line in exc.details]) from None


def _progress(message: str) -> None:
    err.print(message, style="dim", markup=False, highlight=False)


# -- up ---------------------------------------------------------------------------------------


@app.command()
def up(
    files: FilesOpt = None,
    lab: LabOpt = DEFAULT_LAB,
    state_dir: StateDirOpt = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Use the controller at URL instead of starting the lab's own.",
            show_default=False,
        ),
    ] = None,
    controllers: Annotated[
        int | None,
        typer.Option(
            "--controllers",
            min=1,
            help="How many controllers to start, on one shared store; every agent gets all "
            "their URLs (failover) [default: 2].",
            show_default=False,
        ),
    ] = None,
    datapath: Annotated[
        Datapath, typer.Option("--datapath", help="What the agents enforce with.")
    ] = Datapath.NFTABLES,
    no_agents: Annotated[
        bool,
        typer.Option("--no-agents", help="Start no agents: connectivity without enforcement."),
    ] = False,
    timeout_s: Annotated[
        float,
        typer.Option("--timeout-s", min=0.1, help="Longest wait for controllers, then agents."),
    ] = 30.0,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Build the lab of the manifests: namespaces, links, controllers, one agent per host."""
    if server is not None and controllers is not None:
        raise typer.BadParameter("give either --server URL or --controllers N, not both")
    documents = read_documents(files)
    with _reported():
        lab_up(
            documents,
            lab=lab,
            state_dir=state_dir,
            server=server,
            controllers=controllers or 2,
            datapath=datapath.value,
            agents=not no_agents,
            timeout_s=timeout_s,
            progress=_progress,
        )
        _show_status(lab, state_dir, output)


# -- down -------------------------------------------------------------------------------------


@app.command()
def down(
    lab: LabOpt = DEFAULT_LAB,
    state_dir: StateDirOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Remove every namespace, process and file of the lab (also after a crash; idempotent)."""
    with _reported():
        report = lab_down(lab=lab, state_dir=state_dir, progress=_progress)
    if emit(report.as_dict(), output):
        return
    if not (report.pids or report.namespaces or report.files):
        out.print(f"lab {lab}: nothing to remove")
        return
    out.print(
        f"lab {lab} removed: {len(report.pids)} process(es) stopped, "
        f"{len(report.namespaces)} namespace(s) deleted, {len(report.files)} file(s) removed",
        highlight=False,
    )
    if report.kept_dir:
        out.print(f"kept {report.state_dir}: it holds files the lab did not write", markup=False)


# -- status -----------------------------------------------------------------------------------


@app.command()
def status(
    lab: LabOpt = DEFAULT_LAB,
    state_dir: StateDirOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """What the lab is made of and how it is doing: processes, namespaces, agents."""
    with _reported():
        _show_status(lab, state_dir, output)


def _show_status(lab: str, state_dir: Path | None, output: OutputFormat) -> None:
    data = lab_status(lab=lab, state_dir=state_dir).as_dict()
    if emit(data, output):
        return
    phase = str(data["phase"])
    style = {"up": "bold green", "absent": "bold"}.get(phase, "bold yellow")
    headline = Text(f"lab {lab}: ")
    headline.append(phase, style=style)
    if "created" in data:
        headline.append(
            f"  (created {data['created']}, {data['datapath']} data path"
            f"{'' if data['agents'] else ', no agents'}; state in {data['stateDir']})"
        )
    out.print(headline)
    if phase == "absent":
        return
    for key in ("controllers", "hosts", "workloads"):
        rows = data.get(key)
        if isinstance(rows, list) and rows:
            out.print(records_table([_flat(row) for row in rows], title=key))
    if data.get("server"):
        out.print(f"controller (not the lab's): {data['server']}", markup=False)
    problems = data.get("problems")
    for line in problems if isinstance(problems, list) else []:
        out.print(Text(f"  ! {line}", style="yellow"))
    leftovers = data.get("leftovers")
    if isinstance(leftovers, Mapping) and (leftovers.get("namespaces") or leftovers.get("pids")):
        out.print(
            Text(
                f"  leftovers: namespaces {leftovers.get('namespaces')}, processes "
                f"{leftovers.get('pids')}: `tagwall lab down --lab {lab}` removes them",
                style="yellow",
            )
        )


def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    """A table row: the agent's view folded into a few columns, interfaces as name→peer."""
    flat = {k: v for k, v in row.items() if k not in ("agent", "interfaces", "log", "role")}
    if "fabricAddresses" in flat:
        flat["fabric"] = flat.pop("fabricAddresses")
    agent = row.get("agent")
    if isinstance(agent, Mapping):
        flat["agent"] = agent.get("state") or ("running" if agent.get("running") else "stopped")
        flat["revision"] = agent.get("realizedRevision")
    interfaces = row.get("interfaces")
    if isinstance(interfaces, list):
        flat["interfaces"] = [f"{i.get('name')}↔{i.get('peer')}" for i in interfaces]
    return flat


# -- probe ------------------------------------------------------------------------------------


@app.command()
def probe(
    service: ServiceOpt,
    lab: LabOpt = DEFAULT_LAB,
    state_dir: StateDirOpt = None,
    timeout_s: Annotated[
        float,
        typer.Option("--timeout-s", min=0.01, help="How long one attempt waits for an answer."),
    ] = DEFAULT_TIMEOUT_S,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Try SERVICE for real between every ordered pair of workloads; reach's JSON shape.

    tcp: the handshake completes; udp: the listener's echo comes back; icmp: an echo reply.
    """
    with _reported():
        result = lab_probe(
            parse_flow_service(service), lab=lab, state_dir=state_dir, timeout_s=timeout_s
        )
    for warning in result.warnings:
        err.print(Text(f"warning: {warning}", style="yellow"))
    if emit(result.matrix, output):
        return
    names = list(result.matrix)
    table = Table(
        title=f"lab probe {service}: did row reach column? ({result.attempts} attempts, "
        f"{result.elapsed_s:.2f} s)",
        header_style="bold",
        box=None,
    )
    table.add_column("FROM \\ TO")
    for index in range(len(names)):
        table.add_column(str(index + 1), justify="center")
    for index, src in enumerate(names):
        cells = [
            Text("✔", style="green") if result.matrix[src][dst] else Text("·", style="red dim")
            for dst in names
        ]
        table.add_row(f"{index + 1:>2} {src}", *cells)
    out.print(table)
