"""Run a block of code inside a named network namespace (``ip netns`` names).

``entered(name)`` switches the calling thread into ``/run/netns/<name>`` and back when the
block ends.  Linux network namespaces are per thread, and a socket keeps the namespace it was
created in, so a socket (or a libnftables context, whose netlink socket is opened at creation)
made inside the block works there from any thread afterwards.  Python 3.11 has no
``os.setns``; this is the libc call through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["NETNS_DIR", "entered"]

NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Inside the block the calling thread is in namespace ``name`` (None: stay where it is)."""
    if name is None:
        yield
        return
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"network namespace {name!r} does not exist ({path})")
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)
