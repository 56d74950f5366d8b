"""The control protocol between controllers and agents: a snapshot, then revision-stamped
deltas, each acknowledged by the agent (messages and digests in ``_protocol.py``); and the
flow reports agents send to the controller's analytics (``_flow_reports.py``).

Both halves import this package; it imports only the compiler.  The controller's half,
``ProgramHub`` (a compiler that follows the store and streams programs to agents), lives in
the submodule ``tagwall.control.hub``, which the agent never imports (it needs the store).
The agent's half is ``tagwall.agent``; the API mounts the hub on a WebSocket route
(``tagwall.api._agents``).
"""

from ._flow_reports import REPORTS_PATH, EndDecision, FlowReport, ReportError
from ._protocol import STREAM_PATH, digest, encode

__all__ = [
    "REPORTS_PATH",
    "STREAM_PATH",
    "EndDecision",
    "FlowReport",
    "ReportError",
    "digest",
    "encode",
]
