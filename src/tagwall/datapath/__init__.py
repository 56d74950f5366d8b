"""Data paths: what enforces a compiled ``Program`` on one host.

``Datapath`` (``_base.py``) is the one interface; ``SimDatapath`` is the in-process simulator
(a full evaluator of compiled programs, used for scale tests and what-if); ``NftDatapath``
enforces the program with nftables on real packets (``_nft_render.py`` renders it, purely;
``_nftlib.py`` is the libnftables binding; ``nft_cleanup`` removes its table).  Imports
``tagwall.compiler`` and ``tagwall.model``; never the evaluator (the data paths must reach
their verdicts on their own).
"""

from ._base import Datapath
from ._nft import NftDatapath
from ._nft import cleanup as nft_cleanup
from ._sim import SimDatapath, SimDecision, SimNetwork

__all__ = ["Datapath", "NftDatapath", "SimDatapath", "SimDecision", "SimNetwork", "nft_cleanup"]
