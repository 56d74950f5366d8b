"""The network-namespace lab (``tagwall lab``): hosts and workloads of a configuration as Linux
network namespaces joined by veth pairs, with controllers and agents, and a probe that makes
real connection attempts between every pair of workloads (DESIGN §4).

Owns: planning a lab from a ``Config`` (``plan``; pure: ``_names``, ``_topology``,
``_plan``), making and removing its namespaces, links, addresses and routes (``_netlink``,
pyroute2), its state file (``_state``), its processes (``_processes``, ``_control``), the life
cycle (``up``, ``down``, ``probe``: ``_lab``; ``status``: ``_status``) and the probe engine
(``_probe``), and the functions of service workloads (``_services``: the reference L7
firewall).  docs/lab.md is the user's guide.

Imports ``model``, ``errors`` and ``tagwall._netns``; never the compiler, the evaluator, the
agent, the API or the CLI (the CLI imports it).  It talks to controllers over their REST API
and starts agents and controllers as processes, as an operator would.  Everything but planning
needs root.
"""

from ._errors import LabError
from ._lab import DATAPATHS, DownReport, down, probe, up
from ._names import DEFAULT_LAB, STATE_ROOT, check_lab_name, default_state_dir
from ._plan import FABRIC_IPV4, GATEWAY_IPV4, GATEWAY_IPV6, plan
from ._probe import DEFAULT_TIMEOUT_S, ProbeResult, probe_pairs
from ._state import LabState, Phase, ProcessRecord, read_state, resolve_state_dir
from ._status import LabStatus, status
from ._topology import (
    LabHost,
    LabInterface,
    LabService,
    LabWorkload,
    Namespace,
    Role,
    Route,
    Topology,
    Veth,
)

__all__ = [
    "DATAPATHS",
    "DEFAULT_LAB",
    "DEFAULT_TIMEOUT_S",
    "FABRIC_IPV4",
    "GATEWAY_IPV4",
    "GATEWAY_IPV6",
    "STATE_ROOT",
    "DownReport",
    "LabError",
    "LabHost",
    "LabInterface",
    "LabService",
    "LabState",
    "LabStatus",
    "LabWorkload",
    "Namespace",
    "Phase",
    "ProbeResult",
    "ProcessRecord",
    "Role",
    "Route",
    "Topology",
    "Veth",
    "check_lab_name",
    "default_state_dir",
    "down",
    "plan",
    "probe",
    "probe_pairs",
    "read_state",
    "resolve_state_dir",
    "status",
    "up",
]
