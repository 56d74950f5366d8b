"""The control protocol between a controller and its agents: messages and program digests.

One WebSocket per agent (``/api/v1/agents/stream``), JSON text frames, in this order:

1. agent → controller ``hello``: ``{"type": "hello", "host": H, "revision": R|null,
   "digest": D|null}`` — the revision and digest of the program the agent enforces (from its
   persisted state), null for none.
2. controller → agent, then whenever the host's program changes:
   - ``{"type": "snapshot", "revision": R, "program": <wire program>}``, or
   - ``{"type": "delta", "base": B, "revision": R, "delta": <wire delta>}``: turns the program
     of revision B into that of R.  An agent not at B refuses it.  An empty delta only moves
     the agent's revision (its program did not change since B).
3. agent → controller after each of them: ``{"type": "ack", "revision": R}`` when applied, or
   ``{"type": "nack", "revision": R, "reason": text}`` when refused — the agent keeps the
   last good program and the controller answers the next change with a snapshot.

Revisions are the store's global revision; a host's program changes at only some of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..compiler import Program, program_to_wire

__all__ = ["STREAM_PATH", "digest", "encode"]

STREAM_PATH = "/api/v1/agents/stream"


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def digest(program: Program) -> str:
    """A fingerprint of exactly what a program enforces (the wire form is deterministic)."""
    text = json.dumps(program_to_wire(program), separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
