"""``tagwall draft …``: stage changes away from the live configuration, diff, commit, discard.

A draft lives on the controller (``/api/v1/drafts``).  Staging validates only the syntax of
the manifests; ``commit`` validates the whole would-be configuration, exactly like ``apply``,
and writes every staged change in one revision or none.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.syntax import Syntax

from ._common import (
    Client,
    FilesOpt,
    OutputFormat,
    OutputOpt,
    ProjectOpt,
    ServerOpt,
    dump_yaml,
    emit,
    out,
    read_documents,
    records_table,
)
from ._server import KindArg, resolve_kind

__all__ = ["app"]

app = typer.Typer(
    help="Stage changes in a draft, diff them against the live state, commit or discard.",
    no_args_is_help=True,
)

DraftArg = Annotated[str, typer.Argument(help="Draft name.", metavar="DRAFT")]


def _path(draft: str, suffix: str = "") -> str:
    return f"/drafts/{quote(draft, safe='')}{suffix}"


def _show(draft: Mapping[str, Any]) -> None:
    changes = draft.get("changes") or []
    out.print(
        f"draft [bold]{draft.get('name')}[/] (from revision {draft.get('baseRevision')}, "
        f"created {draft.get('created')}): {len(changes)} staged change(s)"
    )
    if changes:
        rows = [{k: c.get(k) for k in ("op", "kind", "project", "name")} for c in changes]
        out.print(records_table(rows))


@app.command()
def create(
    draft: DraftArg, server: ServerOpt = None, output: OutputOpt = OutputFormat.TABLE
) -> None:
    """Create an empty draft."""
    with Client(server) as client:
        result = client.request("POST", "/drafts", json_body={"name": draft})
    if not emit(result, output):
        _show(result)


@app.command("list")
def list_(server: ServerOpt = None, output: OutputOpt = OutputFormat.TABLE) -> None:
    """List drafts."""
    with Client(server) as client:
        result = client.request("GET", "/drafts")
    if emit(result, output):
        return
    rows = [
        {
            "name": d.get("name"),
            "baseRevision": d.get("baseRevision"),
            "created": d.get("created"),
            "changes": len(d.get("changes") or []),
        }
        for d in result.get("items") or []
    ]
    out.print(records_table(rows) if rows else "no drafts")


@app.command()
def show(draft: DraftArg, server: ServerOpt = None, output: OutputOpt = OutputFormat.TABLE) -> None:
    """Show a draft and its staged changes."""
    with Client(server) as client:
        result = client.request("GET", _path(draft))
    if not emit(result, output):
        _show(result)


@app.command("apply")
def apply_(
    draft: DraftArg,
    files: FilesOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Stage manifests (create or replace) in a draft."""
    documents = read_documents(files)
    with Client(server) as client:
        result = client.request(
            "POST",
            _path(draft, "/apply"),
            json_body=[dict(d.body) for d in documents],
            documents=documents,
        )
    if not emit(result, output):
        _show(result)


@app.command()
def delete(
    draft: DraftArg,
    kind: KindArg,
    name: Annotated[str, typer.Argument(help="The object's name.")],
    project: ProjectOpt = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Stage the deletion of one object."""
    body = {"kind": resolve_kind(kind), "name": name, "project": project}
    with Client(server) as client:
        result = client.request("POST", _path(draft, "/delete"), json_body=body)
    if not emit(result, output):
        _show(result)


def _unified(entry: Mapping[str, Any]) -> str:
    label = f"{entry.get('kind')}/{entry.get('name')}"
    before = dump_yaml(entry["live"]).splitlines(keepends=True) if entry.get("live") else []
    after = dump_yaml(entry["draft"]).splitlines(keepends=True) if entry.get("draft") else []
    return "".join(difflib.unified_diff(before, after, f"live/{label}", f"draft/{label}"))


@app.command()
def diff(draft: DraftArg, server: ServerOpt = None, output: OutputOpt = OutputFormat.TABLE) -> None:
    """What committing the draft would change, object by object (a unified YAML diff)."""
    with Client(server) as client:
        result = client.request("GET", _path(draft, "/diff"))
    if emit(result, output):
        return
    entries = result.get("entries") or []
    out.print(
        f"draft [bold]{draft}[/] (from revision {result.get('baseRevision')}) against live "
        f"revision {result.get('revision')}: {len(entries)} object(s)"
    )
    for entry in entries:
        where = f" (project {entry['project']})" if entry.get("project") else ""
        out.print(f"[bold]{entry.get('op')}[/] {entry.get('kind')}/{entry.get('name')}{where}")
        text = _unified(entry)
        if text:
            out.print(Syntax(text, "diff", background_color="default"))


@app.command()
def commit(
    draft: DraftArg, server: ServerOpt = None, output: OutputOpt = OutputFormat.TABLE
) -> None:
    """Commit every staged change atomically (validated like apply); the draft is gone."""
    with Client(server) as client:
        result = client.request("POST", _path(draft, "/commit"))
    if emit(result, output):
        return
    out.print(records_table(result.get("results") or []))
    out.print(f"committed draft {draft}: revision {result.get('revision')}")


@app.command()
def discard(
    draft: DraftArg, server: ServerOpt = None, output: OutputOpt = OutputFormat.TABLE
) -> None:
    """Throw a draft away."""
    with Client(server) as client:
        client.request("DELETE", _path(draft))
    if not emit({"draft": draft, "outcome": "discarded"}, output):
        out.print(f"discarded draft {draft}")
