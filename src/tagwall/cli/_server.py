"""Objects on a controller: ``apply``, ``get``, ``describe``, ``delete``.

Clients of the REST API (docs/api-contract.md); ``_controller`` serves it.  Kinds are named
as the user likes (``Workload``, ``workloads``, ``workload``, or a short name such as
``fp``) and sent as the API's plural.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.syntax import Syntax

from ..kinds import KIND_OF_PLURAL, PLURAL_OF_KIND
from ._common import (
    Client,
    CliError,
    FilesOpt,
    OutputFormat,
    OutputOpt,
    ProjectOpt,
    ServerOpt,
    compact,
    dump_yaml,
    dump_yaml_stream,
    emit,
    err,
    out,
    read_documents,
    records_table,
)
from ._describe import describe_extra

__all__ = [
    "KindArg",
    "apply",
    "delete",
    "describe",
    "get",
    "plural_of",
    "resolve_kind",
]

SHORT_NAMES = {
    "fp": "FirewallPolicy",
    "aps": "ApplicationPolicySet",
    "ag": "AddressGroup",
    "sg": "ServiceGroup",
    "netpol": "NetworkPolicy",
    "wl": "Workload",
}


def plural_of(kind: str) -> str:
    """The API's URL name of ``kind`` (``FirewallPolicy`` → ``firewallpolicies``)."""
    return PLURAL_OF_KIND[kind]


def resolve_kind(text: str) -> str:
    """Resolve what the user typed to a kind, or a usage error listing the kinds."""
    wanted = text.lower()
    for plural, kind in KIND_OF_PLURAL.items():
        if wanted in (kind.lower(), plural):
            return kind
    if wanted in SHORT_NAMES:
        return SHORT_NAMES[wanted]
    raise typer.BadParameter(f"unknown kind {text!r} (kinds: {', '.join(KIND_OF_PLURAL.values())})")


KindArg = Annotated[str, typer.Argument(help="Object kind: Workload, workloads, fp, aps, …")]


def _path(kind: str, name: str | None = None) -> str:
    base = "/" + plural_of(kind)
    return base if name is None else f"{base}/{quote(name, safe='/')}"


def _meta(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = manifest.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


# -- apply, get, describe, delete -------------------------------------------------------------


def apply(
    files: FilesOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate against the live state; write nothing.")
    ] = False,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Create or replace every object of the files, as one atomic commit."""
    documents = read_documents(files)
    with Client(server) as client:
        result = client.request(
            "POST",
            "/apply",
            params={"dryRun": "true" if dry_run else None},
            json_body=[dict(d.body) for d in documents],
            documents=documents,
        )
    if emit(result, output):
        return
    out.print(records_table(result.get("results") or []))
    note = " (dry run: nothing written)" if dry_run else ""
    out.print(f"revision {result.get('revision')}{note}")


_COLUMNS: Mapping[str, Sequence[str]] = {
    "Workload": ("kind", "host", "interfaces", "tags"),
    "FirewallPolicy": ("mode",),
    "ApplicationPolicySet": ("tier", "priority", "selector", "all", "directions", "policies"),
    "AddressGroup": ("prefixes", "except", "labels"),
    "Project": ("tags",),
}


def _row(kind: str, manifest: Mapping[str, Any]) -> dict[str, object]:
    spec = manifest.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    row: dict[str, object] = {
        "name": _meta(manifest).get("name"),
        "project": _meta(manifest).get("project"),
    }
    if kind == "Workload":
        ifaces = spec.get("interfaces") or []
        row.update(host=spec.get("host"), kind=spec.get("kind", "vm"), tags=spec.get("tags"))
        row["ips"] = [ip for i in ifaces if isinstance(i, Mapping) for ip in i.get("ips") or []]
        return row
    if kind == "FirewallPolicy":
        row.update(mode=spec.get("mode", "enforce"), rules=len(spec.get("rules") or []))
        return row
    if kind == "ApplicationPolicySet":
        policies = [p.get("name") for p in spec.get("policies") or [] if isinstance(p, Mapping)]
        selector = "all" if spec.get("all") else spec.get("selector")
        row.update(
            tier=spec.get("tier", "application"),
            priority=spec.get("priority", 100),
            selector=selector,
            directions=spec.get("directions"),
            policies=policies,
        )
        return row
    row["spec"] = compact(spec)[:80]
    return row


def get(
    kind: KindArg,
    name: Annotated[str | None, typer.Argument(help="One object; all when omitted.")] = None,
    project: ProjectOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """List objects of a kind, or show one (-o yaml/json prints manifests you can apply).

    ``get hosts`` lists every host with its enforcement state instead: connected or not, the
    controller it is connected to, desired and realized revision, last error.  ``get host
    NAME`` shows the Host object.  Likewise ``get serviceinstances`` lists every instance as
    it runs: health, and per service workload its host, health and the packets and flows
    steered into it; ``get serviceinstance NAME`` shows the object.
    """
    kind = resolve_kind(kind)
    if kind == "Host" and name is None:
        _hosts(server, output)
        return
    if kind == "ServiceInstance" and name is None:
        _service_instances(server, output, project)
        return
    with Client(server) as client:
        if name is not None:
            items = [client.request("GET", _path(kind, name), params={"project": project})]
        else:
            items = client.request("GET", _path(kind), params={"project": project})["items"]
    if output is OutputFormat.YAML:
        typer.echo(dump_yaml_stream(items), nl=False)
    elif name is not None:
        if not emit(items[0], output):
            out.print(records_table([_row(kind, items[0])]))
    elif not emit({"apiVersion": "tagwall/v1", "kind": "List", "items": items}, output):
        if items:
            out.print(records_table([_row(kind, item) for item in items]))
        else:
            err.print(f"no {plural_of(kind)}" + (f" in project {project}" if project else ""))


def _hosts(server: str | None, output: OutputFormat) -> None:
    with Client(server) as client:
        status = client.request("GET", "/agents")
    if output is OutputFormat.YAML:
        typer.echo(dump_yaml_stream([status]), nl=False)
    elif not emit(status, output):
        rows = [
            {
                "host": v["host"],
                "state": v["state"],
                "controller": v["controller"],
                "desired": v["desiredRevision"],
                "realized": v["realizedRevision"],
                "error": v["error"],
            }
            for v in status["items"]
        ]
        if rows:
            out.print(records_table(rows))
        else:
            err.print("no hosts: no workload names one and no agent has connected")


def _service_instances(server: str | None, output: OutputFormat, project: str | None) -> None:
    with Client(server) as client:
        status = client.request("GET", "/status/serviceinstances")
    if project is not None:
        status["items"] = [i for i in status["items"] if i["project"] == project]
    if output is OutputFormat.YAML:
        typer.echo(dump_yaml_stream([status]), nl=False)
        return
    if emit(status, output):
        return
    rows = [
        {
            "instance": f"{i['project']}/{i['name']}" if i["project"] else i["name"],
            "mode": i["mode"],
            "health": i["health"],
            "workload": w["workload"],
            "host": w["host"],
            "healthy": {True: "yes", False: "NO", None: "?"}[w["healthy"]],
            "packets": w.get("packets"),
            "flows": w.get("flows"),
        }
        for i in status["items"]
        for w in i["workloads"] or [{"workload": None, "host": None, "healthy": None}]
    ]
    if rows:
        out.print(records_table(rows))
    else:
        err.print("no service instances" + (f" in project {project}" if project else ""))


def describe(
    kind: KindArg,
    name: Annotated[str, typer.Argument(help="The object's name.")],
    project: ProjectOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Show one object in full, with its rules or policies as a table."""
    kind = resolve_kind(kind)
    with Client(server) as client:
        manifest = client.request("GET", _path(kind, name), params={"project": project})
    if emit(manifest, output):
        return
    project_name = _meta(manifest).get("project")
    out.print(f"[bold]{kind}[/] {name}" + (f"  (project {project_name})" if project_name else ""))
    for table in describe_extra(kind, manifest):
        out.print(table)
    out.print(Syntax(dump_yaml(manifest), "yaml", background_color="default"))


def delete(
    kind: Annotated[str | None, typer.Argument(help="Object kind (or use -f).")] = None,
    name: Annotated[str | None, typer.Argument(help="The object's name.")] = None,
    files: FilesOpt = None,
    project: ProjectOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Delete one object, or every object of the files at once (one revision)."""
    if files and (kind or name):
        raise typer.BadParameter("give KIND NAME or -f FILE…, not both")
    if not files and not (kind and name):
        raise typer.BadParameter("delete needs KIND NAME or -f FILE…")
    targets: list[dict[str, str | None]] = []
    for doc in read_documents(files) if files else []:
        scope = _meta(doc.body).get("project") or _meta(doc.body).get("namespace")
        targets.append({"kind": resolve_kind(doc.kind or "?"), "name": doc.name, "project": scope})
    with Client(server) as client:
        if files:
            _delete_at_once(client, targets)
        else:
            assert kind is not None and name is not None  # checked above
            targets = [{"kind": resolve_kind(kind), "name": name, "project": project}]
            client.request(
                "DELETE", _path(targets[0]["kind"] or "", name), params={"project": project}
            )
    results = [{**t, "outcome": "deleted"} for t in targets]
    if not emit(results, output):
        for r in results:
            where = f" (project {r['project']})" if r["project"] else ""
            out.print(f"deleted {r['kind']}/{r['name']}{where}")


def _delete_at_once(client: Client, targets: list[dict[str, str | None]]) -> None:
    """Delete many objects in one validated commit, whatever their order: a throw-away draft
    stages every delete, then commits (objects that refer to each other go together)."""
    draft = f"delete-{secrets.token_hex(4)}"
    client.request("POST", "/drafts", json_body={"name": draft})
    try:
        for target in targets:
            client.request("POST", f"/drafts/{draft}/delete", json_body=target)
        client.request("POST", f"/drafts/{draft}/commit")
    except CliError:
        client.request("DELETE", f"/drafts/{draft}")
        raise
