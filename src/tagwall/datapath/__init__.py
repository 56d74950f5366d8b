"""Data paths: what enforces a compiled ``Program`` on one host.

``Datapath`` (``_base.py``) is the one interface; ``SimDatapath`` is the in-process simulator
(a full evaluator of compiled programs, used for scale tests and what-if); ``NftDatapath``
enforces the program with nftables on real packets (``_nft_render.py`` renders it, purely;
``_nftlib.py`` is the libnftables binding; ``nft_cleanup`` removes its table).  What the
kernel says decided a flow (``ct mark`` halves, NFLOG prefixes in group ``LOG_GROUP``) reads
back to a ``CounterKey`` through ``NftDatapath.decisions``.  ``NftDatapath`` also steers
the flows of ``redirect`` rules through local service instances (``_steering.py`` says how,
purely; ``_routing.py`` holds the policy routing it needs, with pyroute2), spreads them over
an instance's healthy workloads and reports each one's ``ServiceStatus``.  Imports
``tagwall.compiler`` and ``tagwall.model``; never the evaluator (the data paths must reach
their verdicts on their own).
"""

from ._base import Datapath
from ._nft import NftDatapath
from ._nft import cleanup as nft_cleanup
from ._nft_decisions import (
    DECISION_NONE,
    LOG_GROUP,
    parse_log_prefix,
    split_ct_mark,
)
from ._nft_render import CounterKey
from ._sim import SimDatapath, SimDecision, SimNetwork
from ._steering import Port as ServicePort
from ._steering import ServiceStatus

__all__ = [
    "DECISION_NONE",
    "LOG_GROUP",
    "CounterKey",
    "Datapath",
    "NftDatapath",
    "ServicePort",
    "ServiceStatus",
    "SimDatapath",
    "SimDecision",
    "SimNetwork",
    "nft_cleanup",
    "parse_log_prefix",
    "split_ct_mark",
]
