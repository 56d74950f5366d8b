"""The host agent: enforce this host's program, keep it in step with a controller, and keep
enforcing it when no controller answers.

Life of an agent:
1. Boot: the persisted program (``ProgramState``) is loaded into the data path before any
   connection is tried; with none, ``unprogrammed="closed"`` has the data path drop the
   traffic of workload interfaces until a first program arrives (``open`` leaves it alone).
2. Connect to the first controller that answers, in the order given, and say ``hello`` with
   the revision and digest of the program in force — a controller that knows that version
   answers with a delta, else a snapshot (``tagwall.control`` has the protocol).
3. Apply each message atomically, persist it, then ``ack``; refuse with ``nack`` (and keep the
   last good program) when the data path or the message says no.
4. On any disconnect, try the next controller after a short backoff.  The data path is never
   touched by a disconnect (fail-static): enforcement stays exactly as it was.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from ..compiler import Program, delta_from_wire, program_from_wire
from ..control import STREAM_PATH, digest, encode
from ..datapath import Datapath
from ..errors import TagwallError
from ._state import ProgramState

__all__ = ["Agent"]

log = logging.getLogger("tagwall.agent")


class Agent:
    """One host's agent.  ``on_applied(revision)`` is called after each acknowledged message
    (benchmarks and tests use it); ``connected_to`` names the controller in use, if any;
    ``revision`` is the revision of the program in force."""

    def __init__(
        self,
        host: str,
        controllers: Sequence[str],
        datapath: Datapath,
        state: ProgramState | None = None,
        *,
        retry_s: tuple[float, float] = (0.1, 1.0),
        ping_s: float = 1.0,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        if not controllers:
            raise ValueError("an agent needs at least one controller URL")
        self.host = host
        self.controllers = [_stream_url(url) for url in controllers]
        self.datapath = datapath
        self.state = state
        self.revision: int | None = None
        self.connected_to: str | None = None
        self.last_applied: str | None = None  # "snapshot" or "delta": how the last one came
        self._retry_s = retry_s
        self._ping_s = ping_s
        self._on_applied = on_applied

    # -- boot ----------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the persisted program into the data path; True if there was one."""
        saved = self.state.load() if self.state is not None else None
        if saved is None:
            return False
        revision, program = saved
        try:
            self.datapath.load(program)
        except TagwallError as exc:
            log.error(
                "persisted program of revision %s refused by the data path: %s", revision, exc
            )
            return False
        self.revision = revision
        log.info("restored the program of revision %s before connecting", revision)
        return True

    # -- the connection loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected to one of the controllers until cancelled."""
        attempt, delay = 0, self._retry_s[0]
        while True:
            url = self.controllers[attempt % len(self.controllers)]
            try:
                await self._session(url)
                delay = self._retry_s[0]  # it worked for a while: retry the next one quickly
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.info("controller %s: %s", url, _why(exc))
            finally:
                self.connected_to = None
            attempt += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_s[1])

    async def _session(self, url: str) -> None:
        async with connect(
            url,
            open_timeout=2,
            ping_interval=self._ping_s,
            ping_timeout=2 * self._ping_s,
            max_size=None,
            close_timeout=1,
        ) as ws:
            self.connected_to = url
            program = self.datapath.program()
            await ws.send(
                encode(
                    {
                        "type": "hello",
                        "host": self.host,
                        "revision": self.revision if program is not None else None,
                        "digest": digest(program) if program is not None else None,
                    }
                )
            )
            log.info("connected to %s at revision %s", url, self.revision)
            async for raw in ws:
                reply = await self.handle(raw if isinstance(raw, str) else raw.decode())
                await ws.send(encode(reply))
                if reply["type"] == "ack" and self._on_applied is not None:
                    self._on_applied(reply["revision"])

    # -- one message ---------------------------------------------------------------------------

    async def handle(self, raw: str) -> dict[str, Any]:
        """Apply one controller message; the ack or nack to send back."""
        try:
            message = json.loads(raw)
            kind, revision = message.get("type"), message.get("revision")
            if not isinstance(revision, int):
                raise ValueError("message without an integer revision")
        except (ValueError, AttributeError) as exc:
            return {"type": "nack", "revision": -1, "reason": f"unreadable message: {exc}"}
        try:
            if kind == "snapshot":
                program = program_from_wire(message["program"])
                await asyncio.to_thread(self.datapath.load, program)
                self._persist(lambda s: s.save(revision, program))
            elif kind == "delta":
                base = message.get("base")
                if base != self.revision:
                    raise ValueError(
                        f"delta from revision {base}, but this agent is at {self.revision}"
                    )
                delta = delta_from_wire(message["delta"])
                await asyncio.to_thread(self.datapath.update, delta)
                program = self.datapath.program() or Program(self.host)
                assert isinstance(base, int)
                self._persist(lambda s: s.append(base, revision, delta, program))
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except (TagwallError, ValueError, KeyError) as exc:
            log.warning(
                "revision %s refused, keeping revision %s: %s", revision, self.revision, exc
            )
            return {"type": "nack", "revision": revision, "reason": str(exc)}
        self.revision, self.last_applied = revision, kind
        # The program just applied lives until the next one: keep it out of the cyclic
        # collector's scans, so a full collection never delays an ack (as in the hub).
        gc.freeze()
        return {"type": "ack", "revision": revision}

    def _persist(self, write: Callable[[ProgramState], None]) -> None:
        if self.state is None:
            return
        started = time.perf_counter()
        try:
            write(self.state)
        except OSError as exc:  # enforcement already changed; a stale file only costs a resync
            log.error("program not persisted to %s: %s", self.state.directory, exc)
        else:
            log.debug("persisted in %.1f ms", (time.perf_counter() - started) * 1000)


def _stream_url(url: str) -> str:
    base = url.rstrip("/")
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if base.startswith(http):
            return ws + base[len(http) :] + STREAM_PATH
    if base.startswith(("ws://", "wss://")):
        return base if base.endswith(STREAM_PATH) else base + STREAM_PATH
    raise ValueError(f"controller URL {url!r} must start with http:// or https://")


def _why(exc: BaseException) -> str:
    if isinstance(exc, InvalidURI | InvalidHandshake):
        return f"refused the connection ({exc})"
    return str(exc) or type(exc).__name__
