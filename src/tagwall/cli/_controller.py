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
from ._common import Client, CliError, FilesOpt, fail, out, read_documents, report

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


def controller(
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to serve the API on.")
    ] = "127.0.0.1:7080",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Directory of the store (store.db).")
    ] = Path("var/tagwall"),
    files: FilesOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the REST API over the store in DATA_DIR; -f applies manifests at start."""
    documents = read_documents(files) if files else []  # syntax errors fail before serving
    sock = _bind(listen)
    import uvicorn

    from ..api import create_app
    from ..store import SqliteStore

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the data directory {data_dir}: {exc.strerror or exc}")
    store = SqliteStore(data_dir / "store.db")
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    config = uvicorn.Config(
        create_app(store, controller_id=url), log_level=log_level, access_log=False
    )
    try:
        status = asyncio.run(_serve(uvicorn.Server(config), sock, url, documents))
    except KeyboardInterrupt:
        status = 0
    finally:
        store.close()
    if status:
        raise typer.Exit(status)
