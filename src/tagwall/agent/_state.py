"""The agent's persisted program: what it enforces, kept on disk so that a restarted agent
(or a rebooted host) enforces it again before it reaches any controller.

Layout of the state directory: ``program.json`` — ``{"revision": R, "program": <wire>}``,
replaced atomically (write, fsync, rename) — and ``deltas.jsonl``, one ``{"base": B,
"revision": R, "delta": <wire>}`` line per delta applied since, fsynced before the agent
acknowledges.  Appending a small line keeps a tag change cheap to persist however large the
program; after ``COMPACT_AFTER`` lines the agent writes a fresh snapshot instead.  A torn last
line (a crash mid-write) is ignored: that delta was never acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from ..compiler import (
    Program,
    ProgramDelta,
    apply_delta,
    delta_from_wire,
    delta_to_wire,
    program_from_wire,
    program_to_wire,
)
from ..errors import TagwallError
from ._spool import fsync_dir

__all__ = ["COMPACT_AFTER", "ProgramState"]

log = logging.getLogger("tagwall.agent")

COMPACT_AFTER = 200


class ProgramState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._snapshot = directory / "program.json"
        self._journal = directory / "deltas.jsonl"
        self._lines = 0

    def load(self) -> tuple[int, Program] | None:
        """The last persisted program and its revision, or None if there is none (or the
        snapshot is unreadable, which is logged)."""
        try:
            saved = json.loads(self._snapshot.read_text())
            revision, program = int(saved["revision"]), program_from_wire(saved["program"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, TagwallError) as exc:
            log.error("persisted program %s unreadable, ignored: %s", self._snapshot, exc)
            return None
        try:
            lines = self._journal.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                if entry["base"] != revision:
                    raise ValueError(f"base {entry['base']} is not revision {revision}")
                program = apply_delta(program, delta_from_wire(entry["delta"]))
                revision = int(entry["revision"])
            except (ValueError, KeyError, TypeError, TagwallError) as exc:
                log.warning("%s line %d ignored, and what follows: %s", self._journal, number, exc)
                break
        self._lines = len(lines)
        return revision, program

    def save(self, revision: int, program: Program) -> None:
        """Replace everything persisted with ``program`` at ``revision``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._snapshot.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"revision": revision, "program": program_to_wire(program)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._snapshot)
        # The journal belongs to the old snapshot; the new one already contains it.
        self._journal.unlink(missing_ok=True)
        self._lines = 0
        fsync_dir(self.directory)

    def append(self, base: int, revision: int, delta: ProgramDelta, program: Program) -> None:
        """Record ``delta`` (base → revision); ``program`` is the result, snapshotted instead
        when the journal has grown long."""
        if self._lines >= COMPACT_AFTER or not self._snapshot.exists():
            self.save(revision, program)
            return
        line = json.dumps({"base": base, "revision": revision, "delta": delta_to_wire(delta)})
        with open(self._journal, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._lines += 1

    def remove(self) -> None:
        for path in (self._snapshot, self._journal, self._snapshot.with_suffix(".tmp")):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (someone else's files) or already gone
            self.directory.rmdir()
