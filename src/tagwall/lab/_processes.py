"""The lab's processes (controllers, agents): start them detached, find them, stop them.

Each process starts in a session of its own (it outlives ``lab up`` and ignores the terminal's
Ctrl-C) with stdout and stderr appended to a log file.  Ownership is decided from the command
line, not from the state file, so ``down`` also finds processes started just before a crash:
a process belongs to a lab when one of its arguments is a path *inside* the lab's state
directory (controllers get ``--data-dir <dir>/data``, agents ``--state-dir <dir>/agents/…``,
L7 firewalls ``--log <dir>/logs/…``).
``lab up --state-dir <dir>`` itself names the directory, not a path inside it, so it is never
taken for one of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "belongs_to",
    "free_port",
    "is_running",
    "lab_pids",
    "log_tail",
    "spawn",
    "start_time",
    "stop",
]


def spawn(argv: Sequence[str], log: Path) -> int:
    """Start ``argv`` (``argv[0]`` an absolute path; paths in it absolute too: the process
    keeps the caller's working directory) in a new session, stdin from /dev/null, stdout and
    stderr appended to ``log``; return its pid.

    ``posix_spawn`` rather than ``subprocess.Popen``: the process outlives the caller's
    interest in it, and a dropped ``Popen`` of a running process warns (ResourceWarning).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), dict(os.environ), file_actions=actions, setsid=True)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot: with the pid, it names one process."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def is_running(pid: int) -> bool:
    """Does ``pid`` exist and run (a zombie does not)?  Reaps it if it is our exited child."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def belongs_to(pid: int, state_dir: Path) -> bool:
    """Is ``pid`` a running process of the lab whose state directory is ``state_dir``?"""
    inside = f"{state_dir}/"
    return is_running(pid) and any(arg.startswith(inside) for arg in _argv(pid))


def lab_pids(state_dir: Path) -> list[int]:
    """Every running process of the lab, found by command line; sorted."""
    mine = os.getpid()
    pids = (int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    return sorted(pid for pid in pids if pid != mine and belongs_to(pid, state_dir))


def stop(pids: Iterable[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after ``grace_s``; returns when all are gone."""
    left = set(pids)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            left = {pid for pid in left if is_running(pid)}
            if left:
                time.sleep(0.02)
        if not left:
            return


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the controller binds it first thing)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: str | Path, lines: int = 8) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
