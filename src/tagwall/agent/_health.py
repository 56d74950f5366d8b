"""Health checks of this host's service workloads, and what a change of health does: the data
path's ``set_service_health`` (DESIGN §2 "Service chains", §4; docs/steering.md "Health
checks").

Which workloads: each service workload of the program in force (``Program.services``) whose
template has a ``healthCheck``; one check per workload, even when several instances list it.
A workload without a check is always up.

When: every ``intervalS``, start to start, each probe bounded by ``timeoutS`` (a longer
timeout than the interval stretches the interval to it).  ``failures`` consecutive failed
probes → down; one successful probe → up again.  A workload starts up: an agent that starts
does not bypass or drop steered traffic before its checks have said anything.  So a workload
that dies leaves the hash at most one interval (to the next probe) plus ``failures - 1``
intervals plus one timeout after it died, plus one ``set_service_health`` transaction: within
``(failures + 1) * intervalS`` when ``timeoutS ≤ intervalS`` (the issue's bound).

How, from the host namespace (the agent's ``--netns``), against the workload's interfaces:

* in-network, ``icmp``: an echo request to the IPv4 address of the left and of the right
  interface; both must answer (steered flows enter by both sides);
* in-network, ``tcp``: a TCP connect to the left address, ``port`` (80 when unset);
* in-network, ``http``: ``GET path`` on the left address and ``port`` (80 when unset), answered
  with a status below 400;
* transparent, every type: a transparent service has no address, so the probe is a frame
  through the bump, both ways: an Ethernet frame of EtherType ``PROBE_ETHERTYPE`` (IEEE
  "local experimental") sent out of the host's left port to the MAC of its right port must come
  back in on the right port, and one from right to left on the left.  That is the way steered
  frames take (``_steering``: transparent hops); the host's stack ignores the EtherType, so
  nothing else sees the probe.  It proves the bridge passes frames, not that an inspecting
  process in it is alive (it inspects TCP only).

State changes are logged (the workload, its instance, the check and the last failure) and
pushed to the data path as the whole down set; a push the data path refuses is retried on the
next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .._checksum import internet_checksum
from .._netns import entered
from ..compiler import LocalInterface, LocalService, Program
from ..errors import TagwallError
from ..model import HealthCheck, HealthCheckType, ServiceTemplateMode

__all__ = ["PROBE_ETHERTYPE", "HealthMonitor", "ServiceDatapath", "Target", "Tracker", "targets"]

log = logging.getLogger("tagwall.agent.health")

PROBE_ETHERTYPE = 0x88B5
_DEFAULT_PORT = 80
_PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
_TICK_S = 0.2  # how often the program is looked at for new or gone workloads


class PortLike(Protocol):
    """The host side of a service interface (``tagwall.datapath.ServicePort``)."""

    @property
    def name(self) -> str: ...

    @property
    def mac(self) -> str: ...


class ServiceDatapath(Protocol):
    """What the monitor needs of a data path (``NftDatapath``)."""

    def program(self) -> Program | None: ...

    def set_service_health(self, down: Collection[str]) -> None: ...

    def service_ports(self) -> Mapping[tuple[str, str], PortLike]: ...


@dataclass(frozen=True)
class Target:
    """One service workload to check, as the program describes it."""

    workload: str
    instance: str  # the first instance listing it (for logs)
    mode: ServiceTemplateMode
    check: HealthCheck
    left: LocalInterface
    right: LocalInterface


def targets(program: Program | None) -> dict[str, Target]:
    """The workloads to check: each service workload whose template has a health check."""
    out: dict[str, Target] = {}
    for s in program.services if program is not None else ():
        if s.health_check is not None and s.workload not in out:
            out[s.workload] = _target(s, s.health_check)
    return out


def _target(s: LocalService, check: HealthCheck) -> Target:
    return Target(s.workload, str(s.instance), s.mode, check, s.left, s.right)


@dataclass
class Tracker:
    """Consecutive probe results of one workload → its health.  Invariant: ``failed`` counts
    the failures since the last success."""

    failures: int  # failed probes in a row that make the workload down
    healthy: bool = True
    failed: int = 0

    def observe(self, ok: bool) -> bool:
        """Record one probe; True when the health changed."""
        self.failed = 0 if ok else self.failed + 1
        now = ok or (self.healthy and self.failed < self.failures)
        changed, self.healthy = now != self.healthy, now
        return changed


Probe = Callable[[Target], Awaitable[None]]


@dataclass
class _Checked:
    target: Target
    tracker: Tracker
    task: asyncio.Task[None] | None = None
    last_error: str = ""


@dataclass
class HealthMonitor:
    """Checks the service workloads of ``datapath``'s program and sets their health on it.
    ``probe`` raises when a target fails (default: the probes of the module docstring, from
    namespace ``netns``)."""

    datapath: ServiceDatapath
    netns: str | None = None
    probe: Probe | None = None
    _checked: dict[str, _Checked] = field(default_factory=dict)
    _applied: frozenset[str] | None = None
    _program: Program | None = None

    def down(self) -> frozenset[str]:
        """The workloads down now."""
        return frozenset(w for w, c in self._checked.items() if not c.tracker.healthy)

    async def run(self) -> None:
        """Check until cancelled."""
        try:
            while True:
                self._reconcile()
                await self._push()
                await asyncio.sleep(_TICK_S)
        finally:
            for checked in self._checked.values():
                if checked.task is not None:
                    checked.task.cancel()
            for checked in self._checked.values():
                if checked.task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await checked.task

    def _reconcile(self) -> None:
        """Start checking new targets, stop gone or changed ones (a change of the check starts
        it afresh, as up; a change of anything else keeps its state)."""
        program = self.datapath.program()
        if program is self._program:
            return
        self._program = program
        wanted = targets(program)
        for workload in list(self._checked):
            checked = self._checked[workload]
            if wanted.get(workload) != checked.target:
                if checked.task is not None:
                    checked.task.cancel()
                del self._checked[workload]
        for workload, target in wanted.items():
            if workload not in self._checked:
                checked = _Checked(target, Tracker(target.check.failures))
                checked.task = asyncio.create_task(self._check(checked), name=f"health {workload}")
                self._checked[workload] = checked

    async def _check(self, checked: _Checked) -> None:
        target = checked.target
        check = target.check
        probe = self.probe or self._probe
        while True:
            started = time.monotonic()
            try:
                await asyncio.wait_for(probe(target), check.timeout_s)
                ok = True
            except (OSError, TimeoutError, ValueError) as exc:
                ok, checked.last_error = False, _why(exc)
            if checked.tracker.observe(ok):
                _log_change(checked)
                await self._push()
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, check.interval_s - elapsed))

    async def _push(self) -> None:
        down = self.down()
        if down == self._applied:
            return
        try:
            await asyncio.to_thread(self.datapath.set_service_health, down)
        except TagwallError as exc:
            log.error("service health not applied (retried): %s", exc)
            return
        self._applied = down

    async def _probe(self, target: Target) -> None:
        if target.mode is ServiceTemplateMode.TRANSPARENT:
            ports = await asyncio.to_thread(self.datapath.service_ports)
            left = ports.get((target.workload, target.left.interface))
            right = ports.get((target.workload, target.right.interface))
            if left is None or right is None:
                raise ValueError("its host ports are missing")
            await _frame_through(self.netns, left, right)
            await _frame_through(self.netns, right, left)
            return
        check = target.check
        address = _ipv4(target.left)
        if check.type is HealthCheckType.ICMP:
            await _echo(self.netns, address)
            await _echo(self.netns, _ipv4(target.right))
        elif check.type is HealthCheckType.TCP:
            _, writer = await _connect(self.netns, address, check.port or _DEFAULT_PORT)
            writer.close()
        else:
            await _http_get(self.netns, address, check.port or _DEFAULT_PORT, check.path)


def _log_change(checked: _Checked) -> None:
    t, tracker = checked.target, checked.tracker
    what = f"{t.check.type.value} check every {t.check.interval_s:g} s"
    if tracker.healthy:
        log.info(
            "service workload %s of instance %s is up: %s passed", t.workload, t.instance, what
        )
    else:
        log.warning(
            "service workload %s of instance %s is down: %d %s failed in a row (last: %s)",
            t.workload,
            t.instance,
            tracker.failed,
            what,
            checked.last_error,
        )


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    return str(exc) or type(exc).__name__


def _ipv4(itf: LocalInterface) -> str:
    for ip in itf.addresses:
        if isinstance(ip, ipaddress.IPv4Address):
            return str(ip)
    raise ValueError(f"interface {itf.interface!r} has no IPv4 address to check")


def _socket(netns: str | None, *args: int) -> socket.socket:
    """A non-blocking socket in ``netns`` (it stays there, ``tagwall._netns``)."""
    with entered(netns):
        sock = socket.socket(*args)
    sock.setblocking(False)
    return sock


# -- probes ------------------------------------------------------------------------------------


async def _echo(netns: str | None, address: str) -> None:
    """One ICMP echo to ``address``, answered (raw socket: the agent runs as root)."""
    ident, seq = os.getpid() & 0xFFFF, int(time.monotonic() * 1000) & 0xFFFF
    payload = b"tagwall-health"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, internet_checksum(header + payload), ident, seq) + payload
    loop = asyncio.get_running_loop()
    with _socket(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        await loop.sock_sendto(sock, packet, (address, 0))
        while True:
            data, (source, _) = await loop.sock_recvfrom(sock, 2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, got_id, got_seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if source == address and kind == 0 and (got_id, got_seq) == (ident, seq):
                return


async def _connect(
    netns: str | None, address: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = _socket(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _http_get(netns: str | None, address: str, port: int, path: str) -> None:
    reader, writer = await _connect(netns, address, port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        status = (await reader.readline()).split()
        if len(status) < 2 or not status[1].isdigit() or int(status[1]) >= 400:
            raise ValueError(
                f"GET {path} answered {b' '.join(status[:3]).decode(errors='replace')!r}"
            )
    finally:
        writer.close()


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


async def _frame_through(netns: str | None, out: PortLike, back: PortLike) -> None:
    """A frame sent out of ``out`` to ``back``'s MAC arrives on ``back``."""
    nonce = os.urandom(8)
    frame = _mac(back.mac) + _mac(out.mac) + struct.pack("!H", PROBE_ETHERTYPE) + nonce
    frame += b"\0" * (60 - len(frame))  # the Ethernet minimum
    proto = socket.htons(PROBE_ETHERTYPE)
    loop = asyncio.get_running_loop()
    with (
        _socket(netns, socket.AF_PACKET, socket.SOCK_RAW, proto) as receiver,
        _socket(netns, socket.AF_PACKET, socket.SOCK_RAW, proto) as sender,
    ):
        receiver.bind((back.name, PROBE_ETHERTYPE))
        sender.bind((out.name, PROBE_ETHERTYPE))
        await loop.sock_sendall(sender, frame)
        while True:
            data, address = await loop.sock_recvfrom(receiver, 2048)
            if address[2] != _PACKET_OUTGOING and data[14:22] == nonce:
                return
