"""The reference evaluator: ``trace(config, flow)`` → verdict plus explanation at each end.

Owns the meaning of policy (docs/semantics.md): which rule, of which policy, set and tier,
decides at the source's egress and at the destination's ingress, with and without audit
policies.  It is written to be obviously right, not fast; the compiler, the simulator and the
nftables data path are tested against it.

Pure: imports only ``tagwall.model`` and ``tagwall.errors``; no I/O.
"""

from ._flow import Flow, FlowEnd, end_of_ip, end_of_workload, make_flow
from ._match import endpoint_matches, rule_matches
from ._trace import Decision, EndVerdict, Reason, RuleRef, Verdict, decide, reach, trace

__all__ = [
    "Decision",
    "EndVerdict",
    "Flow",
    "FlowEnd",
    "Reason",
    "RuleRef",
    "Verdict",
    "decide",
    "end_of_ip",
    "end_of_workload",
    "endpoint_matches",
    "make_flow",
    "reach",
    "rule_matches",
    "trace",
]
