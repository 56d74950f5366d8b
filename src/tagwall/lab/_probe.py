"""Real connection attempts between every ordered pair of a lab's workloads (``lab probe``).

One process, one asyncio loop: each socket is made inside its workload's namespace
(``tagwall._netns.entered``) and keeps that namespace, so the listeners and clients of every
namespace run side by side and all attempts go out at once.

What makes a pair ``true`` (self pairs included; they stay inside the namespace):

- ``tcp/P``: the handshake with the destination's listener completes.  A reset (a ``reject``
  rule), an ICMP error or silence until the timeout (a ``drop``) is ``false``.
- ``udp/P``: the destination's echo listener sends the request's random token back (the
  request is resent every 0.1 s until the timeout).  ICMP port unreachable or silence is
  ``false``.
- ``icmp`` / ``icmpv6`` (echo request, type 8 / 128): an echo reply carrying the request's
  token comes back.  Other ICMP types cannot be asked for and are refused, as is ``sctp``.

Addresses are chosen as ``reach`` chooses them: the source's first address, the destination's
first address of the same family.  A pair without them (a workload without any address, a
destination without an address of the source's family, ``icmp`` from an IPv6 source) is
``false``, and ``ProbeResult.warnings`` says why, once per workload or pair.

Listeners (tcp, udp) are bound to the wildcard address of every destination namespace before
the first attempt.  Where the port is already taken (a server someone started there), that
server answers instead, and a warning says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from .._checksum import internet_checksum
from .._netns import entered
from ..model import FlowService, IPAddress, Protocol
from ._errors import LabError
from ._topology import LabWorkload

__all__ = ["DEFAULT_TIMEOUT_S", "ProbeResult", "probe_pairs"]

DEFAULT_TIMEOUT_S = 0.5
_UDP_RESEND_S = 0.1  # a UDP request is sent again after this long without its echo
_ECHO_REQUEST = {Protocol.ICMP: 8, Protocol.ICMPV6: 128}
_ECHO_REPLY = {Protocol.ICMP: 0, Protocol.ICMPV6: 129}
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_WILDCARD = {4: "0.0.0.0", 6: "::"}
_TOKEN_BYTES = 16


@dataclass(frozen=True, slots=True)
class ProbeResult:
    matrix: dict[str, dict[str, bool]]  # {from: {to: reached}}: reach's shape and key names
    warnings: tuple[str, ...] = ()
    attempts: int = 0  # pairs actually tried (pairs without usable addresses are not)
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Attempt:
    src: LabWorkload
    dst: LabWorkload
    src_ip: IPAddress
    dst_ip: IPAddress


def probe_pairs(
    workloads: Sequence[LabWorkload],
    service: FlowService,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    conntrack_namespaces: Sequence[str] = (),
) -> ProbeResult:
    """Try ``service`` from every workload to every workload; needs root (namespaces, raw
    ICMP sockets).  The matrix keeps the order of ``workloads`` (a lab's state keeps them
    sorted by name, as reach does)."""
    if service.protocol is Protocol.SCTP:
        raise LabError("the lab probes tcp, udp and ICMP echo; sctp is not supported")
    if not service.protocol.has_ports and service.icmp_type != _ECHO_REQUEST[service.protocol]:
        raise LabError(
            f"the lab probes ICMP echo requests only ({service.protocol.value}/"
            f"{_ECHO_REQUEST[service.protocol]}), not {service}"
        )
    started = time.monotonic()
    matrix = {src.name: {dst.name: False for dst in workloads} for src in workloads}
    attempts, warnings = _attempts(workloads, service)
    prober = _Prober(service, timeout_s, _taken=_flows(conntrack_namespaces, service))
    for attempt, reached in zip(attempts, asyncio.run(prober.run(attempts)), strict=True):
        matrix[attempt.src.name][attempt.dst.name] = reached
    warnings += prober.warnings
    return ProbeResult(
        matrix, tuple(dict.fromkeys(warnings)), len(attempts), time.monotonic() - started
    )


def _attempts(
    workloads: Sequence[LabWorkload], service: FlowService
) -> tuple[list[_Attempt], list[str]]:
    warnings: list[str] = []
    attempts: list[_Attempt] = []
    for w in workloads:
        if not w.ips:
            warnings.append(f"{w.name} has no address: every pair from or to it is false")
    for src in workloads:
        if not src.ips:
            continue
        src_ip = src.ips[0]
        if service.protocol in _ECHO_REQUEST and src_ip.version != (
            4 if service.protocol is Protocol.ICMP else 6
        ):
            warnings.append(
                f"{src.name}: {service.protocol.value} cannot leave from its first address "
                f"{src_ip}: every pair from it is false"
            )
            continue
        for dst in workloads:
            same = [ip for ip in dst.ips if ip.version == src_ip.version]
            if dst.ips and not same:
                warnings.append(
                    f"{src.name} → {dst.name}: no IPv{src_ip.version} address at the "
                    "destination: false"
                )
            if same:
                attempts.append(_Attempt(src, dst, src_ip, same[0]))
    return attempts, warnings


_PROTO = {Protocol.TCP: 6, Protocol.UDP: 17, Protocol.ICMP: 1, Protocol.ICMPV6: 58}


def _flows(namespaces: Sequence[str], service: FlowService) -> set[tuple[str, str, int]]:
    """(source, destination, source port or ICMP id) of every flow of ``service`` that
    conntrack holds in ``namespaces``: tuples an attempt must not reuse."""
    from pyroute2 import Conntrack  # type: ignore[import-untyped]  # pyroute2 has no types

    taken: set[tuple[str, str, int]] = set()
    for namespace in namespaces:
        ct = Conntrack(netns=namespace)  # pyroute2 opens it in a thread of its own
        try:
            for entry in ct.dump_entries():
                t = entry.tuple_orig
                if t.proto != _PROTO[service.protocol]:
                    continue
                if service.protocol.has_ports:
                    if t.dport == service.port:
                        taken.add((str(t.saddr), str(t.daddr), int(t.sport)))
                else:
                    taken.add((str(t.saddr), str(t.daddr), int(t.icmp_id)))
        finally:
            ct.close()
    return taken


class _Echo(asyncio.DatagramProtocol):
    """A UDP listener: sends every datagram back to its sender."""

    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)


@dataclass
class _Prober:
    """One run: listeners, ICMP sockets and client attempts; closes everything it opened.

    The last look: an attempt's timeout is a timer in the event loop, which also runs every
    other attempt's setup (a socket made inside a namespace, bound).  With hundreds of
    attempts on a busy machine the timer can fire before the loop has read an answer that
    came in time; so when it fires, the attempt looks once more at its own socket (TCP:
    connected?  UDP: the token queued?  ICMP: a reply queued on the raw socket?) before it
    says ``false``.  A drop rule leaves nothing to find."""

    service: FlowService
    timeout_s: float
    warnings: list[str] = field(default_factory=list)
    _closing: list[socket.socket] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _transports: list[asyncio.BaseTransport] = field(default_factory=list)
    # ICMP: (namespace, family) → raw socket; echo sequence → (reply future, expected source,
    # token).  Sequences are attempt indexes modulo 2**16; at most 1024 attempts are in flight.
    _raw: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    _pending: dict[int, tuple[asyncio.Future[bool], IPAddress, bytes]] = field(default_factory=dict)
    _taken: set[tuple[str, str, int]] = field(default_factory=set)

    async def run(self, attempts: list[_Attempt]) -> list[bool]:
        loop = asyncio.get_running_loop()
        try:
            if self.service.protocol.has_ports:
                await self._listen({(a.dst.namespace, a.dst_ip.version) for a in attempts})
            else:
                self._open_raw(attempts)
            # Every attempt holds a socket: stay well inside the open-file limit.
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            gate = asyncio.Semaphore(
                max(16, min(1024, soft - len(os.listdir("/proc/self/fd")) - 64))
            )

            async def gated(index: int, attempt: _Attempt) -> bool:
                async with gate:
                    return await self._try(loop, index, attempt)

            return list(await asyncio.gather(*(gated(i, a) for i, a in enumerate(attempts))))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for transport in self._transports:
                transport.close()
            for sock in [*self._closing, *self._raw.values()]:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(sock.fileno())
                sock.close()

    # -- listeners ----------------------------------------------------------------------------

    async def _listen(self, wanted: set[tuple[str, int]]) -> None:
        loop = asyncio.get_running_loop()
        port = self.service.port
        tcp = self.service.protocol is Protocol.TCP
        for namespace, version in sorted(wanted):
            with entered(namespace):
                sock = socket.socket(
                    _FAMILY[version], socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
                )
            try:
                if tcp:  # a previous probe's connections linger in TIME_WAIT on this port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if version == 6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((_WILDCARD[version], port))
            except OSError as exc:
                sock.close()
                self.warnings.append(
                    f"{namespace}: {self.service} is taken ({exc.strerror}); the server "
                    "already there answers the probe"
                )
                continue
            sock.setblocking(False)
            if tcp:
                sock.listen(1024)
                self._closing.append(sock)
                self._tasks.append(asyncio.create_task(self._accept(loop, sock)))
            else:
                transport, _ = await loop.create_datagram_endpoint(_Echo, sock=sock)
                self._transports.append(transport)

    @staticmethod
    async def _accept(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """Drain the accept queue so it never fills and drops handshakes."""
        while True:
            conn, _ = await loop.sock_accept(sock)
            conn.close()

    def _open_raw(self, attempts: list[_Attempt]) -> None:
        loop = asyncio.get_running_loop()
        proto = (
            socket.IPPROTO_ICMP if self.service.protocol is Protocol.ICMP else socket.IPPROTO_ICMPV6
        )
        for attempt in attempts:
            key = (attempt.src.namespace, attempt.src_ip.version)
            if key in self._raw:
                continue
            with entered(attempt.src.namespace):
                sock = socket.socket(_FAMILY[attempt.src_ip.version], socket.SOCK_RAW, proto)
            self._raw[key] = sock
            sock.setblocking(False)
            # Bound to the source address: it becomes the requests' source, and the socket
            # only sees packets sent to it.
            sock.bind((str(attempt.src_ip), 0))
            loop.add_reader(sock.fileno(), self._read_replies, sock, attempt.src_ip.version)

    # -- attempts -----------------------------------------------------------------------------

    async def _try(self, loop: asyncio.AbstractEventLoop, index: int, attempt: _Attempt) -> bool:
        if self.service.protocol is Protocol.TCP:
            return await self._tcp(loop, attempt)
        if self.service.protocol is Protocol.UDP:
            return await self._udp(loop, attempt)
        return await self._echo(loop, index, attempt)

    def _client(self, attempt: _Attempt, kind: int) -> socket.socket:
        with entered(attempt.src.namespace):
            sock = socket.socket(_FAMILY[attempt.src_ip.version], kind)
        sock.setblocking(False)
        while True:
            port = secrets.randbelow(60999 - 32768 + 1) + 32768
            if (str(attempt.src_ip), str(attempt.dst_ip), port) in self._taken:
                continue
            try:
                sock.bind((str(attempt.src_ip), port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                sock.close()
                raise
            self._taken.add((str(attempt.src_ip), str(attempt.dst_ip), port))
            return sock

    async def _tcp(self, loop: asyncio.AbstractEventLoop, attempt: _Attempt) -> bool:
        with self._client(attempt, socket.SOCK_STREAM) as sock:
            try:
                await asyncio.wait_for(
                    loop.sock_connect(sock, (str(attempt.dst_ip), self.service.port)),
                    self.timeout_s,
                )
            except TimeoutError:
                return _connected(sock)  # the last look (``_Prober``)
            except OSError:
                return False
            return True

    async def _udp(self, loop: asyncio.AbstractEventLoop, attempt: _Attempt) -> bool:
        token = os.urandom(_TOKEN_BYTES)
        with self._client(attempt, socket.SOCK_DGRAM) as sock:
            deadline = loop.time() + self.timeout_s
            try:
                sock.connect((str(attempt.dst_ip), self.service.port))
                while (left := deadline - loop.time()) > 0:
                    # Resent until the deadline, as a DNS client would: one datagram (or its
                    # echo) lost to a busy listener must not read as a drop rule.  The same
                    # socket, so the same flow: a rule that drops it drops every copy.
                    sock.send(token)
                    wait = min(left, _UDP_RESEND_S)
                    with contextlib.suppress(TimeoutError):
                        if await self._udp_echo(loop, sock, token, wait):
                            return True
                return _echoed(sock, token)  # the last look (``_Prober``)
            except OSError:
                return False

    @staticmethod
    async def _udp_echo(
        loop: asyncio.AbstractEventLoop, sock: socket.socket, token: bytes, wait_s: float
    ) -> bool:
        """Did ``token`` come back within ``wait_s``?  (Other datagrams are skipped.)"""
        deadline = loop.time() + wait_s
        while (left := deadline - loop.time()) > 0:
            if await asyncio.wait_for(loop.sock_recv(sock, 2 * _TOKEN_BYTES), left) == token:
                return True
        return False

    async def _echo(self, loop: asyncio.AbstractEventLoop, index: int, attempt: _Attempt) -> bool:
        sock = self._raw[(attempt.src.namespace, attempt.src_ip.version)]
        token = os.urandom(_TOKEN_BYTES)
        sequence = index & 0xFFFF  # with the token, tells the replies apart
        # A fresh identifier per request: conntrack keys ICMP on it, so a request never rides
        # on an earlier probe's entry (which an ``established`` rule would let through).
        ident = secrets.randbits(16)
        while (str(attempt.src_ip), str(attempt.dst_ip), ident) in self._taken:
            ident = secrets.randbits(16)
        self._taken.add((str(attempt.src_ip), str(attempt.dst_ip), ident))
        header = struct.pack("!BBHHH", _ECHO_REQUEST[self.service.protocol], 0, 0, ident, sequence)
        packet = header + token
        if self.service.protocol is Protocol.ICMP:  # the kernel sums ICMPv6 itself
            packet = header[:2] + struct.pack("!H", internet_checksum(packet)) + header[4:] + token
        future: asyncio.Future[bool] = loop.create_future()
        self._pending[sequence] = (future, attempt.dst_ip, token)
        try:
            sock.sendto(packet, (str(attempt.dst_ip), 0))
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            # The last look (``_Prober``): read what the socket holds, then ask again.
            self._read_replies(sock, attempt.src_ip.version)
            return future.done() and future.result()
        except OSError:
            return False
        finally:
            self._pending.pop(sequence, None)

    def _read_replies(self, sock: socket.socket, version: int) -> None:
        while True:
            try:
                data, address = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket: the request's wait times out
            if version == 4:
                data = data[(data[0] & 0x0F) * 4 :]  # IPv4 raw sockets see the IP header
            if len(data) < 8 + _TOKEN_BYTES or data[0] != _ECHO_REPLY[self.service.protocol]:
                continue
            (sequence,) = struct.unpack("!H", data[6:8])
            pending = self._pending.get(sequence)
            if pending is None:
                continue
            future, dst_ip, token = pending
            if (
                data[8 : 8 + _TOKEN_BYTES] == token
                and address[0].split("%")[0] == str(dst_ip)
                and not future.done()
            ):
                future.set_result(True)


def _connected(sock: socket.socket) -> bool:
    """Has the handshake of this non-blocking TCP client completed?"""
    try:
        sock.getpeername()
    except OSError:  # still connecting, or refused
        return False
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def _echoed(sock: socket.socket, token: bytes) -> bool:
    """Is ``token`` among the datagrams queued on this non-blocking UDP client?"""
    while True:
        try:
            if sock.recv(2 * _TOKEN_BYTES) == token:
                return True
        except (BlockingIOError, InterruptedError):
            return False
