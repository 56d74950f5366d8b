"""The control plane's push side: a compiler that follows the store and streams each agent
its program as a snapshot, then revision-stamped deltas, acknowledged by the agent.

``ProgramHub`` (``_hub.py``) is the controller's half; the messages and digests both halves
use are in ``_protocol.py``; the agent's half is ``tagwall.agent``.  No HTTP here: the API
mounts the hub on a WebSocket route (``tagwall.api._agents``).
"""

from ._hub import AgentView, ProgramHub, Session
from ._protocol import STREAM_PATH, digest, encode

__all__ = ["STREAM_PATH", "AgentView", "ProgramHub", "Session", "digest", "encode"]
