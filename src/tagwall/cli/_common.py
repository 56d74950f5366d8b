"""What every command shares: output formats, error reporting, reading manifests, the client.

Contract with the user (and with scripts):

- ``-o json`` / ``-o yaml`` print exactly one JSON value / one YAML stream on stdout and
  nothing else; the default ``-o table`` is for people and may change between releases.
- Every failure the user can cause (bad input, an unknown object, an unreachable server) is
  a ``CliError`` or a ``TagwallError``: ``report`` prints it on stderr, one problem a line
  naming source, object, field and reason, and the command exits with status 1.  Usage
  errors (a missing or malformed option) exit with status 2.  No traceback, ever, for those.
"""

from __future__ import annotations

import enum
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from ..errors import Problem, ValidationError
from ..model import Config, Document, load, parse_documents

__all__ = [
    "DEFAULT_SERVER",
    "CliError",
    "Client",
    "FilesOpt",
    "OutputFormat",
    "OutputOpt",
    "ProjectOpt",
    "ServerOpt",
    "dump_yaml",
    "dump_yaml_stream",
    "emit",
    "err",
    "fail",
    "load_config",
    "out",
    "read_documents",
    "records_table",
    "report",
    "require_one_source",
]

DEFAULT_SERVER = "http://127.0.0.1:7080"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class OutputFormat(enum.StrEnum):
    TABLE = "table"  # Rich rendering for people
    JSON = "json"  # exactly one JSON value
    YAML = "yaml"  # one YAML stream


class CliError(Exception):
    """A failure to report to the user: a headline and, optionally, the problems behind it."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.message = message
        self.problems = tuple(problems)
        super().__init__(message)


# Options shared by several commands (typer reads the Annotated metadata).
FilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-f",
        "--file",
        help="Manifest file, directory (every *.yaml, *.yml, *.json below it) or '-' for "
        "stdin; repeatable.",
    ),
]
OutputOpt = Annotated[
    OutputFormat, typer.Option("-o", "--output", help="table for people; json or yaml for scripts.")
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"Controller URL (else env TAGWALL_SERVER, else {DEFAULT_SERVER}).",
        show_default=False,
    ),
]
ProjectOpt = Annotated[str | None, typer.Option("-p", "--project", help="Project of the object.")]


def fail(message: str, problems: Sequence[Problem] = ()) -> NoReturn:
    raise CliError(message, problems)


# -- output -----------------------------------------------------------------------------------


def emit(data: object, fmt: OutputFormat) -> bool:
    """Print ``data`` as JSON or YAML and return True; return False for the table format."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return True
    if fmt is OutputFormat.YAML:
        sys.stdout.write(dump_yaml(data))
        return True
    return False


def dump_yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_yaml_stream(manifests: Sequence[object]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True, allow_unicode=True)


def records_table(items: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    """A table over the scalar fields of ``items``; nested values are shown compactly."""
    columns: list[str] = []
    for item in items:
        columns.extend(key for key in item if key not in columns)
    table = Table(title=title, show_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        # Names stay whole (the first column); long values fold rather than lose their end.
        table.add_column(column.upper(), no_wrap=index == 0, overflow="fold")
    for item in items:
        table.add_row(*(compact(item.get(column)) for column in columns))
    return table


def compact(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={compact(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(compact(v) for v in value)
    return str(value)


# -- errors -----------------------------------------------------------------------------------


def report(exc: BaseException) -> None:
    """Print a failure on stderr: a headline, then one line per problem."""
    if isinstance(exc, CliError):
        headline, problems = exc.message, exc.problems
    elif isinstance(exc, ValidationError):
        headline, problems = f"{len(exc.problems)} problem(s) found", exc.problems
    else:
        headline, problems = str(exc), ()
    err.print(f"[bold red]error:[/] {headline}", highlight=False, markup=True)
    for problem in problems:
        err.print(f"  {problem}", highlight=False, markup=False)


# -- reading manifests ------------------------------------------------------------------------


def _expand(path_text: str) -> Iterator[tuple[str, str]]:
    """Yield (source name, text) for a path argument: stdin, a file, or a directory tree."""
    if path_text == "-":
        yield "<stdin>", sys.stdin.read()
        return
    path = Path(path_text)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        if not files:
            fail(f"{path_text}: no *.yaml, *.yml or *.json manifests in this directory")
        for file in files:
            yield from _expand(str(file))
        return
    try:
        yield path_text, path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path_text}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        fail(f"{path_text}: not UTF-8 text ({exc.reason})")


def read_documents(paths: Sequence[str] | None) -> list[Document]:
    """Parse every manifest of ``paths``; problems of all files are reported together."""
    if not paths:
        fail("no manifests given: use -f FILE (repeatable; a directory or '-' for stdin)")
    documents: list[Document] = []
    problems: list[Problem] = []
    for path_text in paths:
        for source, text in _expand(path_text):
            try:
                documents.extend(parse_documents(text, source))
            except ValidationError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ValidationError(problems)
    return documents


def load_config(paths: Sequence[str] | None) -> Config:
    return load(read_documents(paths))


# -- talking to a controller ------------------------------------------------------------------

_API_SOURCE = re.compile(r"^<api>#(\d+)$")


class Client:
    """The controller's REST API (docs/api-contract.md) as the CLI uses it.

    Turns transport failures into a ``CliError`` naming the URL, and problem+json answers into
    a ``CliError`` carrying the server's problems.  ``documents``, when given, maps the
    server's ``<api>#N`` sources back to the file and document the user wrote.
    """

    def __init__(
        self,
        server: str | None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,  # tests inject httpx.MockTransport
    ) -> None:
        self.server = (server or os.environ.get("TAGWALL_SERVER") or DEFAULT_SERVER).rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            self.server = "http://" + self.server
        self._http = httpx.Client(
            base_url=self.server + "/api/v1", timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | list[str] | None] | None = None,
        json_body: object = None,
        documents: Sequence[Document] = (),
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=json_body)
        except httpx.TransportError as exc:
            fail(f"cannot reach the tagwall server at {self.server}: {exc or type(exc).__name__}")
        if response.is_success:
            try:
                return response.json() if response.content else None
            except ValueError:
                fail(f"{self.server}: {method} {path}: the answer is not JSON")
        self._raise_problem(method, path, response, documents)

    def _raise_problem(
        self, method: str, path: str, response: httpx.Response, documents: Sequence[Document]
    ) -> NoReturn:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            fail(f"{method} {self.server}/api/v1{path}: HTTP {response.status_code}")
        problems = [
            _problem(p, documents) for p in body.get("problems") or [] if isinstance(p, dict)
        ]
        # With problems, ``detail`` only repeats them: the title heads the list instead.
        headline = body.get("title") if problems else body.get("detail") or body.get("title")
        fail(f"{headline or 'failed'} (HTTP {response.status_code}, {self.server})", problems)


def _problem(raw: Mapping[str, Any], documents: Sequence[Document]) -> Problem:
    problem = Problem.from_dict(raw)
    match = _API_SOURCE.match(problem.source)
    if match and int(match.group(1)) < len(documents):
        return replace(problem, source=documents[int(match.group(1))].where)
    return problem


def require_one_source(files: Sequence[str] | None, server: str | None) -> None:
    """Offline commands read ``-f`` files or ask ``--server``: exactly one of them."""
    if files and server:
        raise typer.BadParameter("give either -f FILE… or --server URL, not both")
