"""Many UDP datagrams per system call: Linux ``recvmmsg(2)`` through ctypes, into one
preallocated buffer, handed on as :class:`~.collectors.Burst` s per exporter.

Why ``recvmmsg``: it takes up to ``count`` datagrams per call, straight into a buffer the
IPFIX decoder reads without a ``bytes`` object per datagram, and the reader thread needs the
GIL once per call rather than once per datagram.  Draining a full socket of the ingest
benchmark's 1,370-byte IPFIX messages (``bench/ingest.py``) took 1.0 µs of CPU per datagram
this way, against 1.9 µs for ``socket.recvmsg_into`` into the
same buffer one datagram per call.  The standard library has no ``recvmmsg``; its layout
(``struct mmsghdr``) is declared below, and ctypes releases the GIL for the call.  Linux only,
as the rest of tagwall.

Layout: ``count`` slots of 65,536 bytes (no UDP datagram is longer, so none is truncated);
the buffer is allocated once and untouched pages cost no memory.  A burst's datagrams are
then copied to a compact array as wide as the longest of them, so the slots can be
reused at once while the burst waits to be decoded.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

import numpy as np

from .collectors import Burst

__all__ = ["Receiver"]

_SLOT_BYTES = 65536
_NAME_BYTES = 28  # sizeof(struct sockaddr_in6), which also holds a sockaddr_in
_MSG_WAITFORONE = 0x10000  # block for the first datagram only, then take what is queued
# Where the address sits in the sockaddr of each family: (first byte, length).
_ADDRESS = {socket.AF_INET: (4, 4), socket.AF_INET6: (8, 16)}


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int


class Receiver:
    """Reads bursts of up to ``count`` datagrams from the bound UDP socket ``sock``, waiting
    at most ``wake_s`` for the first.  Only one thread may call :meth:`receive`; the socket
    must stay open while it does (close it after that thread has returned)."""

    def __init__(self, sock: socket.socket, *, count: int = 1024, wake_s: float = 0.2) -> None:
        self._sock = sock
        self._family = sock.family
        # A blocking descriptor whose receive timeout wakes the reader to look at its stop
        # flag (a Python timeout would make the descriptor non-blocking).
        sock.settimeout(None)
        seconds, fraction = divmod(wake_s, 1.0)
        timeval = struct.pack("@ll", int(seconds), int(fraction * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self._slots = np.empty((count, _SLOT_BYTES), np.uint8)
        # Fault in each slot's first page now, not in the first burst's receive call, where
        # 1,024 page faults made the socket overflow.
        self._slots[:, 0] = 0
        self._names = np.zeros((count, _NAME_BYTES), np.uint8)
        self._iovecs = (_IoVec * count)()
        self._messages = (_MMsgHdr * count)()
        slots, names = self._slots.ctypes.data, self._names.ctypes.data
        for i in range(count):
            self._iovecs[i].base = slots + i * _SLOT_BYTES
            self._iovecs[i].len = _SLOT_BYTES
            header = self._messages[i].hdr
            header.name = names + i * _NAME_BYTES
            header.namelen = _NAME_BYTES
            header.iov = ctypes.addressof(self._iovecs[i])
            header.iovlen = 1
        # Each message's msg_len, read in place.
        self._lengths = np.ndarray(
            (count,),
            np.uint32,
            buffer=memoryview(self._messages),
            offset=_MMsgHdr.len.offset,
            strides=(ctypes.sizeof(_MMsgHdr),),
        )

    def receive(self) -> list[tuple[str, Burst]]:
        """The datagrams that arrived, as one burst per exporter (by source address) in
        arrival order; empty after ``wake_s`` without any.  Raises ``OSError`` if the
        socket fails (closed under the reader)."""
        got = _recvmmsg(
            self._sock.fileno(), self._messages, len(self._lengths), _MSG_WAITFORONE, None
        )
        if got < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(code, os.strerror(code))
        lengths = self._lengths[:got].astype(np.intp)
        compact = self._slots[:got, : int(lengths.max())].copy()
        first, size = _ADDRESS[self._family]
        sources = self._names[:got, first : first + size]
        if bool((sources == sources[0]).all()):
            return [(self._text(sources[0]), Burst(compact, np.arange(got), lengths))]
        unique, which = np.unique(sources, axis=0, return_inverse=True)
        bursts = []
        for k, address in enumerate(unique):
            picked = np.flatnonzero(which.ravel() == k)
            bursts.append((self._text(address), Burst(compact, picked, lengths[picked])))
        return bursts

    def _text(self, address: np.ndarray) -> str:
        return socket.inet_ntop(self._family, address.tobytes())
