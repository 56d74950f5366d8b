"""The lab's processes (``tagwall.lab._processes``): detached start, ownership by command
line, stop.  Real processes; no root needed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tagwall.lab._processes import (
    belongs_to,
    is_running,
    lab_pids,
    log_tail,
    spawn,
    start_time,
    stop,
)

_SLEEPER = "import sys, time; print('started', sys.argv[1:], flush=True); time.sleep(60)"


def test_spawned_processes_are_found_by_their_state_dir_and_stopped(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    other = tmp_path / "lab2"  # a sibling whose name starts the same: not ours
    log = lab_dir / "logs" / "x.log"
    mine = spawn([sys.executable, "-c", _SLEEPER, "--data-dir", f"{lab_dir}/data"], log)
    theirs = spawn([sys.executable, "-c", _SLEEPER, "--data-dir", f"{other}/data"], log)
    named = spawn([sys.executable, "-c", _SLEEPER, "--state-dir", str(lab_dir)], log)
    try:
        assert os.getsid(mine) == mine  # a session of its own: outlives its starter's terminal
        assert start_time(mine) is not None
        assert belongs_to(mine, lab_dir)
        assert not belongs_to(theirs, lab_dir)
        # ``lab up --state-dir DIR`` names the directory itself, not a path inside it.
        assert not belongs_to(named, lab_dir)
        assert lab_pids(lab_dir) == [mine]
        stop([mine])
        assert not is_running(mine)
        assert lab_pids(lab_dir) == []
    finally:
        stop([mine, theirs, named])
    assert not is_running(theirs) and not is_running(named)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    pid = spawn([sys.executable, "-c", code, f"{tmp_path}/x"], log)
    try:
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert is_running(pid)
            time.sleep(0.01)
        stop([pid], grace_s=0.2)
        assert not is_running(pid)
    finally:
        stop([pid])


def test_log_tail_keeps_the_last_non_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {n}\n\n" for n in range(20)))
    assert log_tail(log, 3) == ["line 17", "line 18", "line 19"]
    assert log_tail(tmp_path / "missing.log") == []
