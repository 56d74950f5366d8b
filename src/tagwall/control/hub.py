"""The controller's half of the control protocol: one long-lived compiler that follows the
store, and a versioned push stream per connected agent.

``ProgramHub.run`` follows the store's change feed: for every new revision it moves the
compiler to the new configuration (``Compiler.update``: deltas for the hosts whose programs
changed, nothing for the others) and sends each connected agent of those hosts its delta.
Per host it keeps the recent program versions (``history``), so an agent that reconnects
with the revision and digest of the program it enforces gets a delta from there instead of
a full snapshot.  Every agent's state (connected, desired and realized revision, last error)
goes to the store's agent-status table, so any controller sharing the store can show it.

Thread and task model: everything runs on one asyncio loop; the compiler is only touched
under ``_lock``, and its CPU work runs in a worker thread so pings and acks keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..compiler import (
    Compiler,
    Program,
    ProgramDelta,
    apply_delta,
    delta_to_wire,
    diff_programs,
    program_to_wire,
)
from ..errors import TagwallError
from ..model import Config
from ..store import AgentStatus, Store
from ._protocol import digest, encode

__all__ = ["AgentView", "ProgramHub", "Session"]

log = logging.getLogger("tagwall.control")

# A connected agent's status row is refreshed this often; a reader treats a "connected" row
# older than STALE_AFTER as a controller that stopped reporting (crashed or cut off).
HEARTBEAT_S = 2.0
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_S)


@dataclass
class Session:
    """One connected agent.  ``sent`` is the revision of the last message sent (the agent will
    be there once it applies it); ``resync`` is set by a nack: the next change goes out as a
    snapshot, since the agent's program is no longer known for sure."""

    host: str
    send: Callable[[str], Awaitable[None]]
    sent: int | None = None
    acked: int | None = None
    error: str | None = None
    resync: bool = False


@dataclass(frozen=True, slots=True)
class AgentView:
    """One host as ``GET /api/v1/agents`` and ``tagwall get hosts`` show it."""

    host: str
    state: str  # in-sync | pending | rejected | disconnected
    connected: bool
    controller: str | None
    desired_revision: int | None
    realized_revision: int | None
    error: str | None
    updated: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "state": self.state,
            "connected": self.connected,
            "controller": self.controller,
            "desiredRevision": self.desired_revision,
            "realizedRevision": self.realized_revision,
            "error": self.error,
            "updated": self.updated.isoformat() if self.updated else None,
        }


class _Versions:
    """A host's recent program versions: the oldest kept as a program, the later ones as the
    deltas the compiler produced (materialised only when an agent needs one, so a change to
    every host costs no program copies)."""

    def __init__(self, revision: int, program: Program) -> None:
        self._base: tuple[int, Program] = (revision, program)
        self._steps: list[tuple[int, ProgramDelta]] = []
        self._cache: dict[int, Program] = {revision: program}
        self._digests: dict[int, str] = {}

    @property
    def latest(self) -> int:
        return self._steps[-1][0] if self._steps else self._base[0]

    def add(self, revision: int, delta: ProgramDelta, keep: int) -> None:
        self._steps.append((revision, delta))
        if len(self._steps) > keep:  # fold the oldest step into the base
            base = self.program(self._steps[0][0])
            self._base = (self._steps.pop(0)[0], base)
            self._cache = {self._base[0]: base}
            self._digests = {r: d for r, d in self._digests.items() if r >= self._base[0]}

    def at(self, revision: int) -> int | None:
        """The revision of the version in force at ``revision``, if kept."""
        if revision < self._base[0]:
            return None
        found = self._base[0]
        for step_revision, _ in self._steps:
            if step_revision > revision:
                break
            found = step_revision
        return found

    def program(self, revision: int) -> Program:
        """The program of version ``revision`` (one of the kept ones)."""
        if revision in self._cache:
            return self._cache[revision]
        known = max(r for r in self._cache if r <= revision)
        program = self._cache[known]
        for step_revision, delta in self._steps:
            if known < step_revision <= revision:
                program = apply_delta(program, delta)
        self._cache[revision] = program
        return program

    def digest(self, revision: int) -> str:
        if revision not in self._digests:
            self._digests[revision] = digest(self.program(revision))
        return self._digests[revision]


class ProgramHub:
    """Compiles every revision of ``store`` and streams programs to agents.

    ``load_config`` returns the validated configuration of the current revision with that
    revision (the API's ``LiveConfig.config``, which caches what its writes validated).
    """

    def __init__(
        self,
        store: Store,
        load_config: Callable[[], tuple[int, Config]],
        controller_id: str,
        *,
        history: int = 64,
    ) -> None:
        self.store = store
        self.controller_id = controller_id
        self._load_config = load_config
        self._keep = history
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._compiler: Compiler | None = None
        self.revision = 0
        self._versions: dict[str, _Versions] = {}
        self._sessions: dict[str, Session] = {}
        self._status: asyncio.Queue[tuple[AgentStatus, bool]] = asyncio.Queue()

    @property
    def ready(self) -> bool:
        """True once the first revision is compiled (agents are served from then on)."""
        return self._ready.is_set()

    # -- following the store -------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the store until cancelled.  A revision whose configuration cannot be
        compiled is logged and skipped; the next one is tried from scratch."""
        writer = asyncio.create_task(self._write_statuses())
        beat = asyncio.create_task(self._heartbeat())
        try:
            await self._start()
            while True:
                await self._next_revision()
                try:
                    await self._advance()
                except TagwallError as exc:  # e.g. a foreign writer stored an invalid config
                    log.error("revision %s not compiled: %s", self.store.revision(), exc)
        finally:
            beat.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(beat, writer)

    async def _start(self) -> None:
        revision, config = await asyncio.to_thread(self._load_config)

        def build() -> tuple[Compiler, dict[str, Program]]:
            compiler = Compiler(config)
            return compiler, {h: compiler.program(h) for h in compiler.hosts()}

        async with self._lock:
            self._compiler, programs = await asyncio.to_thread(build)
            self.revision = revision
            for host, program in programs.items():
                self._versions[host] = _Versions(revision, program)
        self._ready.set()

    async def _next_revision(self) -> None:
        """Wait until the store is past ``self.revision``."""
        async for _event in self.store.awatch(self.revision):
            return

    async def _advance(self) -> None:
        revision, config = await asyncio.to_thread(self._load_config)
        if revision <= self.revision:
            return
        async with self._lock:
            compiler = self._compiler
            assert compiler is not None  # set by _start

            deltas = await asyncio.to_thread(compiler.update, config)
            previous, self.revision = self.revision, revision
            sends = []
            for host, delta in deltas.items():
                session = self._sessions.get(host)
                versions = self._versions.get(host)
                if versions is None:  # a new host: its program so far was the empty one
                    versions = self._versions[host] = _Versions(previous, Program(host))
                # The compiler's delta fits an agent that has the latest version.
                in_step = (
                    session is not None
                    and session.sent is not None
                    and versions.at(session.sent) == versions.latest
                )
                versions.add(revision, delta, self._keep)
                if session is None:
                    continue
                if session.resync or not in_step:
                    message = self._snapshot(session, versions.program(revision))
                else:
                    message = self._delta(session, delta)
                sends.append(self._send(session, message))
                self._report(session)
        await asyncio.gather(*sends)
        # The configuration and compiler state just built live until the next revision:
        # take them out of the cyclic collector's scans.  Without this, a full collection
        # walked every object of a 1,000-workload estate every few writes and added ~50 ms
        # to one API write in six (measured; bench/propagation.py); with it the controller's
        # memory stayed flat over 400 writes (they are freed by reference counting).
        gc.freeze()

    # -- sessions ------------------------------------------------------------------------------

    async def attach(
        self, hello: dict[str, Any], send: Callable[[str], Awaitable[None]]
    ) -> Session:
        """Register the agent that said ``hello`` and send it its first message."""
        host, revision, agent_digest = _parse_hello(hello)
        await self._ready.wait()
        async with self._lock:
            session = Session(host, send)
            self._sessions[host] = session  # a reconnect replaces a session not yet detached
            current = self._current(host)
            message = None
            versions = self._versions.get(host)
            if revision is not None and agent_digest is not None and versions is not None:
                found = versions.at(revision)
                if found is not None and versions.digest(found) == agent_digest:
                    session.sent = revision
                    delta = await asyncio.to_thread(diff_programs, versions.program(found), current)
                    message = self._delta(session, delta)
            if message is None:
                message = self._snapshot(session, current)
            self._report(session)
        await self._send(session, message)
        return session

    async def receive(self, session: Session, message: dict[str, Any]) -> None:
        """An agent's ack or nack."""
        kind, revision = message.get("type"), message.get("revision")
        if not isinstance(revision, int) or kind not in ("ack", "nack"):
            raise ValueError(f"expected an ack or nack with an integer revision, got {message!r}")
        if kind == "ack":
            session.acked = revision
            if revision == session.sent:
                session.error = None
        else:
            reason = message.get("reason")
            session.error = f"revision {revision} refused: {reason}"
            session.resync = True
            log.warning("agent %s refused revision %s: %s", session.host, revision, reason)
        self._report(session)

    async def detach(self, session: Session) -> None:
        if self._sessions.get(session.host) is session:
            del self._sessions[session.host]
            self._status.put_nowait(
                (
                    AgentStatus(
                        session.host,
                        self.controller_id,
                        False,
                        "disconnected",
                        self._desired(session.host),
                        session.acked,
                        session.error,
                        datetime.now(UTC),
                    ),
                    True,
                )
            )

    def _current(self, host: str) -> Program:
        versions = self._versions.get(host)
        return versions.program(versions.latest) if versions else Program(host)

    def _desired(self, host: str) -> int | None:
        versions = self._versions.get(host)
        return versions.latest if versions else None

    def _snapshot(self, session: Session, program: Program) -> str:
        session.sent, session.resync = self.revision, False
        return encode(
            {"type": "snapshot", "revision": self.revision, "program": program_to_wire(program)}
        )

    def _delta(self, session: Session, delta: ProgramDelta) -> str:
        base, session.sent = session.sent, self.revision
        return encode(
            {
                "type": "delta",
                "base": base,
                "revision": self.revision,
                "delta": delta_to_wire(delta),
            }
        )

    async def _send(self, session: Session, message: str) -> None:
        try:
            await session.send(message)
        except Exception as exc:  # the connection's own handler sees the close and detaches
            log.info("send to agent %s failed: %s", session.host, exc)

    # -- status --------------------------------------------------------------------------------

    def _report(self, session: Session) -> None:
        desired = self._desired(session.host)
        if session.error is not None and session.resync:
            state = "rejected"
        elif session.acked is not None and (desired is None or session.acked >= desired):
            state = "in-sync"
        else:
            state = "pending"
        status = AgentStatus(
            session.host,
            self.controller_id,
            True,
            state,
            desired,
            session.acked,
            session.error,
            datetime.now(UTC),
        )
        self._status.put_nowait((status, False))

    async def _write_statuses(self) -> None:
        """One writer, in order, so a disconnect never overtakes the ack before it; whatever
        queued up meanwhile goes in one transaction (acks of many agents arrive together)."""
        while True:
            batch = [await self._status.get()]
            while not self._status.empty():
                batch.append(self._status.get_nowait())
            try:
                await asyncio.to_thread(self.store.put_agent_statuses, batch)
            except TagwallError as exc:
                log.warning("status of %d agent(s) not recorded: %s", len(batch), exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for session in list(self._sessions.values()):
                self._report(session)

    def views(self) -> list[AgentView]:
        """Every host the configuration implies or an agent reported, with its state."""
        rows = {s.host: s for s in self.store.agent_statuses()}
        now = datetime.now(UTC)
        out = []
        for host in sorted(rows.keys() | self._versions.keys()):
            desired = self._desired(host)
            row = rows.get(host)
            if row is None:
                out.append(AgentView(host, "disconnected", False, None, desired, None, None, None))
                continue
            connected = row.connected and now - row.updated <= STALE_AFTER
            if row.controller == self.controller_id and host not in self._sessions:
                connected = False  # a row of this controller's previous life: it knows better
            realized = row.realized_revision
            if not connected:
                state = "disconnected"
            elif row.state == "rejected":
                state = "rejected"
            elif realized is not None and (desired is None or realized >= desired):
                state = "in-sync"
            else:
                state = "pending"
            error = row.error
            if row.connected and not connected and row.controller != self.controller_id:
                error = f"controller {row.controller} stopped reporting"
            out.append(
                AgentView(
                    host, state, connected, row.controller, desired, realized, error, row.updated
                )
            )
        return out


def _parse_hello(hello: dict[str, Any]) -> tuple[str, int | None, str | None]:
    host, revision, agent_digest = hello.get("host"), hello.get("revision"), hello.get("digest")
    if hello.get("type") != "hello" or not isinstance(host, str) or not host:
        raise ValueError("the first message must be a hello naming the host")
    if revision is not None and not isinstance(revision, int):
        raise ValueError("hello.revision must be an integer or null")
    if agent_digest is not None and not isinstance(agent_digest, str):
        raise ValueError("hello.digest must be a string or null")
    return host, revision, agent_digest
