"""``tagwall controller``: serve the REST API (uvicorn) over the SQLite store in a data directory.

The listening socket is bound before anything else, so a taken port is a clear error and not
a uvicorn log line.  Manifests given with ``-f`` are parsed before serving (syntax errors stop
the start) and applied through the API itself once it answers, so they are validated exactly
like ``tagwall apply``; if they are refused the controller stops with status 1.  The server
side (uvicorn, fastapi, the store) is imported only when this command runs.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from ..model import Document
from ._common import Client, CliError, FilesOpt, err, fail, out, read_documents, report

__all__ = ["controller"]


def _bind(listen: str) -> socket.socket:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise typer.BadParameter(f"{listen!r} is not HOST:PORT (e.g. 127.0.0.1:7080)")
    host = host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port_text), type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc.strerror or exc}")
    return sock


async def _serve(server: Any, sock: socket.socket, url: str, documents: list[Document]) -> int:
    """Run ``server`` on ``sock``; once it answers, apply ``documents`` through the API."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        await task
        return 1
    if documents:
        try:
            await asyncio.to_thread(_apply_at_start, url, documents)
        except CliError as exc:
            report(exc)
            server.should_exit = True
            await task
            return 1
    out.print(f"tagwall controller serving [bold]{url}[/] (API {url}/api/v1, docs {url}/docs)")
    await task
    return 0


def _apply_at_start(url: str, documents: list[Document]) -> None:
    with Client(url) as client:
        result = client.request(
            "POST", "/apply", json_body=[dict(d.body) for d in documents], documents=documents
        )
    out.print(f"applied {len(documents)} manifest(s) at start: revision {result.get('revision')}")


def _analytics(path: Path, specs: list[Any], retention_days: int) -> Any:
    """The analytics role on ``path``, or None (said on stderr) when another process holds
    the file: one analytics role per flow store."""
    import duckdb

    from ..analytics import Analytics

    try:
        return Analytics(path, collectors=specs, retention_days=retention_days)
    except duckdb.IOException as exc:
        if specs:
            fail(f"cannot open the flow store {path}: {exc}")
        err.print(f"warning: running without flows: {path} is in use ({exc})".splitlines()[0])
        return None


def controller(
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to serve the API on.")
    ] = "127.0.0.1:7080",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Directory of the store (store.db).")
    ] = Path("var/tagwall"),
    files: FilesOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
    flows: Annotated[
        str,
        typer.Option(
            "--flows",
            help="DuckDB file of the analytics role (default DATA_DIR/flows.duckdb), or 'off'.",
        ),
    ] = "",
    collect: Annotated[
        list[str] | None,
        typer.Option(
            "--collect",
            help="Collect flows on a UDP port: ipfix|netflow|sflow|syslog[:[HOST:]PORT] "
            "(default ports 4739, 2055, 6343, 514); repeatable.",
        ),
    ] = None,
    retention_days: Annotated[
        int, typer.Option("--retention-days", min=1, help="Days of raw flows kept.")
    ] = 30,
) -> None:
    """Serve the REST API over the store in DATA_DIR; -f applies manifests at start.

    The same process runs the analytics role (flows in a DuckDB file) unless --flows off;
    when another controller already holds that file, this one runs without it and says so.
    """
    documents = read_documents(files) if files else []  # syntax errors fail before serving
    from ..analytics import parse_collector

    try:
        specs = [parse_collector(text) for text in collect or ()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--collect") from exc
    if specs and flows == "off":
        raise typer.BadParameter("collectors need the analytics role", param_hint="--collect")
    sock = _bind(listen)
    import uvicorn

    from ..api import create_app
    from ..store import SqliteStore

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the data directory {data_dir}: {exc.strerror or exc}")
    store = SqliteStore(data_dir / "store.db")
    analytics = (
        None
        if flows == "off"
        else _analytics(Path(flows) if flows else data_dir / "flows.duckdb", specs, retention_days)
    )
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    app = create_app(store, controller_id=url, analytics=analytics)
    config = uvicorn.Config(app, log_level=log_level, access_log=False)
    try:
        status = asyncio.run(_serve(uvicorn.Server(config), sock, url, documents))
    except KeyboardInterrupt:
        status = 0
    except OSError as exc:  # a collector's port is taken: the lifespan failed to start
        report(CliError(f"cannot start the collectors: {exc}"))
        status = 1
    finally:
        store.close()
    if status:
        raise typer.Exit(status)
