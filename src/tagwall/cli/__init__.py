"""The ``tagwall`` command line (Typer + Rich): a thin edge over the core and the REST API.

Owns: argument parsing, output formats and error reporting for people and scripts.  It holds
no policy logic: offline commands (``trace``, ``reach``, ``convert``, ``compile`` with ``-f``)
call ``tagwall.model`` / ``evaluator`` / ``compiler`` directly; server commands speak the REST
API of docs/api-contract.md through httpx.  ``controller`` is the only command that imports
the server side (store, api, uvicorn), and only when it runs.

Modules: ``_common`` (formats, errors, manifests, client) · ``_offline`` (trace, reach,
convert, compile) · ``_controller`` · ``_agent`` · ``_server`` (apply, get, describe,
delete) · ``_drafts`` · ``_describe`` (describe's tables) · ``_lab`` (the network-namespace
lab).

Exit status: 0 success, 1 a reported failure (invalid input, unknown object, unreachable
server; see ``_common``), 2 a usage error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import TagwallError
from . import _agent, _controller, _drafts, _flows, _lab, _offline, _server
from ._common import CliError, report

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """The root group: every expected failure of any subcommand is reported, not raised."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, TagwallError) as exc:
            report(exc)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="tagwall",
    help="tagwall: intent-driven distributed firewall. Tags in, nftables on every host out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("Controller", _controller.controller),
    ("Hosts", _agent.agent),
    ("Configuration", _server.apply),
    ("Configuration", _server.get),
    ("Configuration", _server.describe),
    ("Configuration", _server.delete),
    ("Questions (offline with -f FILE, or --server)", _offline.trace),
    ("Questions (offline with -f FILE, or --server)", _offline.reach),
    ("Questions (offline with -f FILE, or --server)", _offline.compile_),
    ("Questions (offline with -f FILE, or --server)", _offline.convert),
    ("Flows (analytics)", _flows.flows),
    ("Flows (analytics)", _flows.graph),
    ("Flows (analytics)", _flows.top),
    ("Flows (analytics)", _flows.violations),
)
for _panel, _command in _COMMANDS:
    app.command(name=_command.__name__.rstrip("_"), rich_help_panel=_panel)(_command)
app.add_typer(_drafts.app, name="draft", rich_help_panel="Configuration")
app.add_typer(_lab.app, name="lab", rich_help_panel="Lab (root: network namespaces)")


def main() -> None:
    """Console-script entry point (``tagwall = "tagwall.cli:main"``)."""
    app()
