"""Questions about a configuration: ``trace``, ``reach``, ``compile``, ``convert``.

Each answers offline from manifest files (``-f``, evaluated in this process by the reference
evaluator and the compiler) or, without ``-f``, asks a controller (``--server``) the same
question through the REST API.  Both paths print the same JSON for ``-o json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..model import FlowService, ServiceSyntaxError, parse_flow_service, translate
from ._common import (
    Client,
    FilesOpt,
    OutputFormat,
    OutputOpt,
    ServerOpt,
    dump_yaml,
    dump_yaml_stream,
    emit,
    fail,
    load_config,
    out,
    read_documents,
    records_table,
    require_one_source,
)

__all__ = ["compile_", "convert", "reach", "render_verdict", "trace"]


def _flow_service(text: str) -> str:
    """Check ``--service`` up front, so a typo is a usage error (exit 2) on either path."""
    try:
        parse_flow_service(text)
    except ServiceSyntaxError as exc:
        allowed = f" (protocols: {', '.join(exc.allowed)})" if exc.allowed else ""
        raise typer.BadParameter(f"{exc.text!r}: {exc.reason}{allowed}") from None
    return text


ServiceOpt = Annotated[
    str,
    typer.Option(
        "--service",
        "-s",
        help="The flow's service: tcp/80, udp/53, icmp, icmp/0, …",
        callback=_flow_service,
    ),
]


# -- trace ------------------------------------------------------------------------------------


def trace(
    from_: Annotated[str, typer.Option("--from", help="Source: a workload name or an IP address.")],
    to: Annotated[str, typer.Option("--to", help="Destination: a workload name or an IP.")],
    service: ServiceOpt,
    files: FilesOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Would a flow be allowed, and why?

    Shows the decision at the source's egress and at the destination's ingress: tier,
    policy set, policy and rule (or the implicit default), and the audit (shadow) verdict.
    """
    require_one_source(files, server)
    if files:
        from ..evaluator import make_flow
        from ..evaluator import trace as trace_flow

        config = load_config(files)
        verdict: dict[str, Any] = trace_flow(
            config, make_flow(config, from_, to, service)
        ).as_dict()
    else:
        with Client(server) as client:
            body = {"from": from_, "to": to, "service": service}
            verdict = client.request("POST", "/trace", json_body=body)
    if not emit(verdict, output):
        render_verdict(verdict)


def _end_label(end: Mapping[str, Any]) -> str:
    workload, ip = end.get("workload"), end.get("ip")
    if workload and ip:
        return f"{workload} ({ip})"
    return str(workload or ip or "?")


def _decided_by(decision: Mapping[str, Any]) -> str:
    """One line naming what decided an end (``Reason`` values of tagwall.evaluator)."""
    reason = decision.get("reason")
    if reason == "rule":
        return (
            f"{decision.get('tier')} tier: rule {decision.get('rule')} of policy "
            f"{decision.get('policy')} in set {decision.get('policySet')}"
        )
    if reason == "application-default-deny":
        return "application tier: implicit deny (policies apply here and no rule matched)"
    if reason == "default-posture":
        return "default posture (no tier decided)"
    if reason == "no-agent":
        return "no agent at this end (bare address or external workload): it allows"
    if reason == "local":
        return "local: a workload's traffic to itself never crosses its interface"
    return str(reason)


def _action_text(action: object) -> Text:
    allows = action in ("allow", "redirect")
    return Text(str(action), style="bold green" if allows else "bold red")


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("action", "reason", "policy", "rule"))


def render_verdict(verdict: Mapping[str, Any]) -> None:
    """The readable form of ``Verdict.as_dict()``: the verdict, then each end."""
    flow = verdict.get("flow") or {}
    allowed = bool(verdict.get("allowed"))
    headline = Text()
    headline.append(
        "ALLOWED" if allowed else "DENIED", style="bold green" if allowed else "bold red"
    )
    headline.append(
        f"  {_end_label(flow.get('from') or {})} → {_end_label(flow.get('to') or {})}"
        f"  {flow.get('service', '')}"
    )
    if verdict.get("shadowAllowed", allowed) != allowed:
        shadow = "would-allow" if verdict.get("shadowAllowed") else "would-deny"
        headline.append(f"  (shadow verdict with audit policies: {shadow})", style="yellow")
    out.print(headline)
    for key, title in (("egress", "egress at source"), ("ingress", "ingress at destination")):
        end = verdict.get(key) or {}
        line = Text(f"  {title} {_end_label(end)}: ")
        line.append_text(_action_text(end.get("action")))
        out.print(line)
        for passed in end.get("passedBy") or []:
            out.print(Text(f"      passed on by {passed}", style="dim"))
        out.print(f"      {_decided_by(end)}", highlight=False)
        shadow_end = end.get("shadow") or {}
        if shadow_end and not _same(shadow_end, end):
            line = Text("      shadow (audit policies enforced): ", style="yellow")
            line.append_text(_action_text(shadow_end.get("action")))
            line.append(f", {_decided_by(shadow_end)}")
            out.print(line)


# -- reach ------------------------------------------------------------------------------------


def reach(
    service: ServiceOpt,
    files: FilesOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Which workload may open SERVICE to which: every ordered pair, self pairs included."""
    require_one_source(files, server)
    matrix: dict[str, dict[str, bool]]
    if files:
        from ..evaluator import reach as reach_matrix

        flow_service: FlowService = parse_flow_service(service)
        matrix = reach_matrix(load_config(files), flow_service)
    else:
        with Client(server) as client:
            answer = client.request("POST", "/reach", json_body={"service": service})
        # The API wraps the matrix with its revision: {"revision", "service", "matrix"}.
        if not isinstance(answer, dict) or not isinstance(answer.get("matrix"), dict):
            fail(f"{client.server}: POST /reach: the answer holds no reach matrix")
        matrix = answer["matrix"]
    if emit(matrix, output):
        return
    names = list(matrix)
    table = Table(
        title=f"reach {service}: may row open a flow to column?", header_style="bold", box=None
    )
    table.add_column("FROM \\ TO")
    for index in range(len(names)):
        table.add_column(str(index + 1), justify="center")
    for index, src in enumerate(names):
        cells = [
            Text("✔", style="green") if matrix[src].get(dst) else Text("·", style="red dim")
            for dst in names
        ]
        table.add_row(f"{index + 1:>2} {src}", *cells)
    out.print(table)


# -- compile ----------------------------------------------------------------------------------


def compile_(
    host: Annotated[str, typer.Option("--host", help="The host to compile for.")],
    files: FilesOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """The program one host enforces: address sets, tag maps and rules (never pairs)."""
    require_one_source(files, server)
    program: dict[str, Any]
    if files:
        from ..compiler import compile_program

        program = compile_program(load_config(files), host).as_dict()
    else:
        with Client(server) as client:
            program = client.request("GET", f"/hosts/{host}/program")
    if emit(program, output):
        return
    summary = [
        {"section": key, "entries": len(value) if isinstance(value, list | dict) else value}
        for key, value in program.items()
    ]
    out.print(records_table(summary, title=f"program of host {host}"))
    out.print(Syntax(dump_yaml(program), "yaml", background_color="default"))


# -- convert ----------------------------------------------------------------------------------


def convert(
    files: FilesOpt = None,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="yaml (default) or json.")
    ] = OutputFormat.YAML,
) -> None:
    """Translate Kubernetes NetworkPolicy, AdminNetworkPolicy, … into native manifests."""
    manifests = [dict(doc.body) for doc in translate(read_documents(files))]
    if output is OutputFormat.JSON:
        emit({"apiVersion": "tagwall/v1", "kind": "List", "items": manifests}, output)
    else:
        typer.echo(dump_yaml_stream(manifests), nl=False)
