"""Random policies, three evaluators, real packets: for random tags and random policy objects
over six fixed workloads, ``lab probe`` through nftables agents, the reference evaluator
(``tagwall.evaluator.reach``) and the simulator running the compiled programs
(``tagwall.datapath.SimNetwork``) give the same verdict for every ordered pair, for tcp/80,
udp/53 and ICMP echo.

One lab is kept up for the module: the workloads' names, addresses and hosts are fixed (the
lab's namespaces are made once); each example replaces everything else — the workloads' tags
and named ports, the projects' tags, address groups, policies, policy sets, the default
posture — in one revision through the lab's controller, and waits until every agent has
acknowledged it.  The vocabulary is ``tests/strategies.py``'s (small on purpose, so that
selectors, tags, prefixes and ports collide).

Bounded for CI: 15 examples and no shrinking (each example costs a revision and three
probes; a failing example is already small, and Hypothesis replays it first on the next run).
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from strategies import (
    PROJECTS,
    _manifest,
    address_groups,
    policy_documents,
    project_documents,
    tag_maps,
)

from tagwall.compiler import Compiler
from tagwall.datapath import SimDatapath, SimNetwork
from tagwall.model import Action, Config, load, parse_flow_service

from .enforcement_support import (
    Matrix,
    RunningLab,
    as_documents,
    differences,
    expected,
    running_lab,
)
from .support import privileged, unique_lab

pytestmark = privileged

SERVICES = ("tcp/80", "udp/53", "icmp")

# name, host (None: external, no agent), address, project
WORKLOADS = [
    ("w0", "h1", "10.0.0.1", "p1"),
    ("w1", "h2", "10.0.0.2", "p1"),
    ("w2", "h3", "10.0.0.3", "p2"),
    ("w3", "h1", "10.0.0.4", "p2"),
    ("w4", "h2", "10.0.0.5", None),
    ("w5", None, "10.0.0.6", None),
]
NAMES = [w[0] for w in WORKLOADS]

Manifest = dict[str, Any]


def _workload(name: str, host: str | None, ip: str, project: str | None, **more: Any) -> Manifest:
    spec: Manifest = {"interfaces": [{"name": "eth0", "ips": [ip]}], **more}
    if host is None:
        spec["kind"] = "external"
    else:
        spec.setdefault("kind", "vm")
        spec["host"] = host
    workload: Manifest = _manifest("Workload", name, spec, project)
    return workload


@st.composite
def lab_models(draw: st.DrawFn) -> list[Manifest]:
    """``strategies.models`` with the lab's fixed workloads: tags, kinds (vm or container)
    and named ports are drawn, names, addresses, hosts and projects are not."""
    docs = draw(project_documents())
    for name, host, ip, project in WORKLOADS:
        more: Manifest = {"tags": draw(tag_maps())}
        if host is not None:
            more["kind"] = draw(st.sampled_from(["vm", "container"]))
        if draw(st.booleans()):
            more["ports"] = [{"name": "http", "port": draw(st.sampled_from([80, 8080, 85]))}]
        docs.append(_workload(name, host, ip, project, **more))
    # Excepting 10.0.0.4/30 leaves w3, w4, w5 (and .7) out of the group.
    groups = draw(address_groups({"10.0.0.0/29": ["10.0.0.4/30"]}))
    docs += groups
    docs += draw(policy_documents(NAMES, [g["metadata"]["name"] for g in groups]))
    return docs


def _simulated(config: Config, service: str) -> Matrix:
    """Every ordered pair through the simulator running each host's compiled program."""
    compiler = Compiler(config)
    network = SimNetwork()
    for host in compiler.hosts():
        network.hosts[host] = datapath = SimDatapath()
        datapath.load(compiler.program(host))
    flow_service = parse_flow_service(service)
    out: Matrix = {}
    for src, _, src_ip, _ in sorted(WORKLOADS):
        out[src] = {}
        for dst, _, dst_ip, _ in sorted(WORKLOADS):
            ends = network.verdict(ip_address(src_ip), ip_address(dst_ip), flow_service)
            out[src][dst] = all(end.action in (Action.ALLOW, Action.REDIRECT) for end in ends)
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    state_dir: Path = tmp_path_factory.mktemp("differential") / "state"
    base = [_manifest("Project", p, {}) for p in PROJECTS]
    base += [_workload(*w) for w in WORKLOADS]
    with running_lab(as_documents(base, "workloads.yaml"), unique_lab(), state_dir) as running:
        yield running


@settings(
    max_examples=15,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(models=lab_models())
def test_probe_equals_reference_equals_simulator(lab: RunningLab, models: list[Manifest]) -> None:
    docs = as_documents(models, "generated.yaml")
    config = load(docs)
    lab.set_objects(docs)
    probed = lab.probe(*SERVICES)
    for service in SERVICES:
        reference = expected(docs, service)
        simulated = _simulated(config, service)
        assert simulated == reference, f"{service}, simulator: " + "; ".join(
            differences(simulated, reference)
        )
        assert probed[service] == reference, f"{service}, nftables: " + "; ".join(
            differences(probed[service], reference)
        )
