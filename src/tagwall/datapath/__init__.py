"""Data paths: what enforces a compiled ``Program`` on one host.

``Datapath`` (``_base.py``) is the one interface; ``SimDatapath`` is the in-process simulator
(a full evaluator of compiled programs, used for scale tests and what-if); the nftables data
path comes with the agent.  Imports ``tagwall.compiler`` and ``tagwall.model``; never the
evaluator (the simulator must reach its verdicts on its own).
"""

from ._base import Datapath
from ._sim import SimDatapath, SimDecision, SimNetwork

__all__ = ["Datapath", "SimDatapath", "SimDecision", "SimNetwork"]
