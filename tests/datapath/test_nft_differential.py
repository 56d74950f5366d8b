"""nftables, the simulator and the reference evaluator agree on real packets (DESIGN §6,
"correctness"): random small models (tests/strategies.py) are compiled, loaded into the test
topology's host and probed on every ordered pair of its addresses; then one random operator
edit arrives as a compiler delta and the pairs are probed again.

The model's w0, w1, w2 (10.0.0.1-3) are pinned to host ``h1`` as the topology's workloads;
192.0.2.5 (one of the strategies' bare addresses) is the remote.  Other workloads live where
the model puts them, unprobed.  Bounded: each round of probes costs one probe timeout.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Manifest, build, models, mutate

from tagwall.compiler import Compiler
from tagwall.datapath import NftDatapath, nft_cleanup
from tagwall.model import Config, parse_flow_service

from .support import REMOTE, Topology, expected, privileged, probe_many, sim_network

pytestmark = privileged

HOST = "h1"
PROBED = ["10.0.0.1", "10.0.0.2", "10.0.0.3", REMOTE[0]]
SERVICES = ["tcp/80", "tcp/85", "udp/53", "icmp/8"]


def pinned(docs: list[Manifest]) -> list[Manifest]:
    """w0-w2 become agent-enforced workloads of h1 (the topology's), whatever was drawn."""
    for d in docs:
        if d["kind"] == "Workload" and d["metadata"]["name"] in ("w0", "w1", "w2"):
            spec: dict[str, Any] = d["spec"]
            spec["host"] = HOST
            if spec["kind"] == "external":
                spec["kind"] = "vm"
    return docs


def assert_agree(topo: Topology, config: Config, when: str) -> None:
    topo.flush_conntrack()
    net = sim_network(Compiler(config))
    present = {str(ip) for ip in config.by_ip} | {REMOTE[0]}
    flows = [
        (a, b, s)
        for a, b in itertools.permutations([ip for ip in PROBED if ip in present], 2)
        for s in SERVICES
    ]
    seen = probe_many(topo, [(a, b, parse_flow_service(s)) for a, b, s in flows])
    wrong = [
        f"{a} -> {b} {s}: nft {got}, simulator {want}"
        for (a, b, s), got in zip(flows, seen, strict=True)
        if got != (want := expected(config, net, a, b, s))
    ]
    assert wrong == [], when


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_nftables_agrees_with_the_simulator(topo: Topology, data: st.DataObject) -> None:
    docs = pinned(data.draw(models()))
    compiler = Compiler(build(docs))
    datapath = NftDatapath(netns=topo.host)
    try:
        datapath.load(compiler.program(HOST))
        assert_agree(topo, compiler.config, "after the load")
        docs = pinned(mutate(data, docs))
        delta = compiler.update(build(docs)).get(HOST)
        if delta is not None:
            datapath.update(delta)
        assert datapath.program() == compiler.program(HOST)
        assert_agree(topo, compiler.config, f"after the update:\n{datapath.last_script}")
    finally:
        datapath.close()
        nft_cleanup(topo.host)
