"""What the agent's netfilter netlink readers (``_conntrack``, ``_nflog``) share: the socket,
the message walk, and the reader lifecycle.

Lifecycle (``NetlinkReader``): one iterator at a time; ``close()`` from any thread wakes a
blocked iterator at once through an eventfd, and the sockets are released by whoever leaves
last (the iterator on its way out, or ``close()`` itself when nothing iterates).  A receive
buffer overflow (ENOBUFS) is counted in ``lost_overruns`` and reading goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator

__all__ = [
    "NLMSG",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "RECV_BYTES",
    "NetlinkReader",
    "messages",
    "netlink_socket",
]

NETLINK_NETFILTER = 12  # not in Python's socket module
NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, port id (host order)
NLMSG_ERROR, NLMSG_DONE = 2, 3
_SO_RCVBUFFORCE = 33  # SO_RCVBUF beyond net.core.rmem_max (root); not in typeshed
_RCVBUF_BYTES = 8 * 1024 * 1024
# With it, a failed delivery is reported back to the sender subsystem: conntrack then keeps a
# destroyed entry and redelivers its DESTROY event later instead of dropping it (conntrackd's
# NetlinkEventsReliable, off by default there too).
_SOL_NETLINK, _NETLINK_BROADCAST_ERROR = 270, 4
RECV_BYTES = 1 << 17  # larger than any one datagram these subsystems send


def netlink_socket(groups: int = 0, *, reliable: bool = False) -> socket.socket:
    """A netfilter netlink socket in the caller's namespace, bound to multicast ``groups``,
    with an 8 MiB receive buffer; ``reliable``: failed deliveries are reported back."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF_BYTES)
        if groups and reliable:
            sock.setsockopt(_SOL_NETLINK, _NETLINK_BROADCAST_ERROR, 1)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, whole message) of each netlink message in one datagram."""
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, flags, _, _ = NLMSG.unpack_from(data, offset)
        yield kind, flags, data[offset : offset + length]
        offset += (length + 3) & ~3


class NetlinkReader:
    """The lifecycle of a reader over netlink sockets.  A subclass passes its counters (with a
    ``lost_overruns`` key) to ``__init__``, iterates inside ``with self._iteration():``
    waiting with ``_wait``, reads with ``_recv_nowait`` and closes its sockets in
    ``_release_sockets``."""

    def __init__(self, counts: dict[str, int]) -> None:
        self._lock = threading.Lock()  # guards the fields below and the counters, not sockets
        self._closed = False
        self._iterating = False
        self._counts = counts
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def __enter__(self) -> NetlinkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release_sockets(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _iteration(self) -> Iterator[None]:
        with self._lock:
            if self._closed or self._iterating:
                raise RuntimeError("the reader is closed or already being iterated")
            self._iterating = True
        try:
            yield
        finally:
            with self._lock:
                self._iterating = False
                closed = self._closed
            if closed:
                self._release()

    def _wait(self, sock: socket.socket, timeout_s: float | None = None) -> bool | None:
        """Block until ``sock`` is readable (True), ``timeout_s`` passed (False) or ``close()``
        was called (None: stop iterating)."""
        ready, _, _ = select.select([sock.fileno(), self._wake], [], [], timeout_s)
        if self._wake in ready or self._closed:
            return None
        return bool(ready)

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False as soon as ``close()`` was called (stop iterating)."""
        ready, _, _ = select.select([self._wake], [], [], seconds)
        return not ready and not self._closed

    def _recv_nowait(self, sock: socket.socket) -> bytes | None:
        """One datagram, or None when there is none or the buffer overflowed (counted)."""
        try:
            return sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self._count(lost_overruns=1)
            return None

    def _count(self, **increments: int) -> None:
        with self._lock:
            for key, n in increments.items():
                self._counts[key] += n

    def close(self) -> None:
        """Stop the iterator (from any thread) and release the sockets.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._iterating:
                os.eventfd_write(self._wake, 1)  # the iterator releases on its way out
                return
        self._release()

    def _release(self) -> None:
        self._release_sockets()
        os.close(self._wake)
