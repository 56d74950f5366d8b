"""``LabError``: what the lab reports when it cannot do what was asked.

A ``TagwallError`` (see ``tagwall.errors``): not root, a lab already up, a namespace or link
the kernel refused, a process that died, agents that never got in sync.  The message names
the namespace, host, process or log file concerned; ``details`` carries extra lines (a log's
last lines, the hosts not in sync) for the CLI to print under it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import TagwallError

__all__ = ["LabError"]


class LabError(TagwallError):
    status = 409
    title = "lab error"

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        self.message = message
        self.details = tuple(details)
        super().__init__("\n".join([message, *(f"  {line}" for line in self.details)]))
