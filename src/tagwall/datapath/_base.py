"""The one interface every data path implements (the simulator now, nftables next).

A data path enforces one host's ``Program``.  ``load`` replaces whatever it enforces with a
full program, atomically; ``update`` applies one ``ProgramDelta`` atomically.  Either succeeds
completely or raises and leaves the previous program in force — the agent relies on that to
keep the last good program when a delta is rejected.
"""

from __future__ import annotations

from typing import Protocol

from ..compiler import Program, ProgramDelta

__all__ = ["Datapath"]


class Datapath(Protocol):
    def load(self, program: Program) -> None:
        """Enforce ``program`` from now on, replacing the previous one atomically."""

    def update(self, delta: ProgramDelta) -> None:
        """Apply ``delta`` to the program in force, atomically."""

    def program(self) -> Program | None:
        """The program in force (None before the first load)."""
