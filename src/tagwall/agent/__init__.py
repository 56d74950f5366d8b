"""The host agent: enforces its host's program with a data path (nftables or the simulator),
follows a controller's push stream with failover between controllers, persists the last
program and keeps enforcing it when every controller is gone (fail-static).

``Agent`` (``_agent.py``) is the connection loop and message handling; ``ProgramState``
(``_state.py``) the on-disk program; ``HealthMonitor`` (``_health.py``) checks the local
service workloads and sets their health on the nftables data path; ``StatusReporter``
(``_status.py``) tells every controller their health and steered traffic.  The CLI
(``tagwall agent``) builds one from options.

Flow reports live in the submodule ``tagwall.agent.recorder`` (``FlowRecorder``: conntrack and
NFLOG in, reports spooled and shipped to the controller's analytics; ``_flows.py`` assembles
them), imported only by an agent that records flows: it needs netlink sockets and threads,
which neither the agent's core nor the simulator data path does.
"""

from ._agent import Agent
from ._health import HealthMonitor
from ._state import ProgramState
from ._status import StatusReporter

__all__ = ["Agent", "HealthMonitor", "ProgramState", "StatusReporter"]
