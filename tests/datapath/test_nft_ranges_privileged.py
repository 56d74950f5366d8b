"""Sets stored as runs on the kernel: a pool of consecutive addresses becomes one interval
set element; members leaving and joining the middle of a run, and a set switching between
runs and single addresses, keep every verdict the simulator's.

Privileged: needs root, network namespaces and nftables (support.py builds the topology).
"""

from __future__ import annotations

from tagwall.compiler import Compiler
from tagwall.datapath import NftDatapath
from tagwall.model import Config

from .support import REMOTE, WORKLOADS, Topology, privileged
from .test__nft import check, nft
from .test__nft_ranges import manifests

pytestmark = privileged

HOST = "h"
POOL = range(4, 41)  # workloads of another host at 10.0.0.4 … 10.0.0.40, fd00::4 … fd00::28
V4 = [v4 for v4, _ in WORKLOADS.values()] + [REMOTE[0]]
V6 = [v6 for _, v6 in WORKLOADS.values()] + [REMOTE[1]]


def estate(tiers: dict[int, str]) -> Config:
    """w1 (web), w2 and w3 on h, the pool elsewhere; ``tiers`` by the address's last part
    (default app)."""
    return manifests(
        (
            f"w{i}",
            HOST if i <= 3 else "other",
            f"[10.0.0.{i}, 'fd00::{i:x}']",
            tiers.get(i, "web" if i == 1 else "app"),
        )
        for i in (1, 2, 3, *POOL)
    )


def listed(topo: Topology) -> str:
    """The kernel's tagwall table, as nft lists it."""
    return nft(topo, "list", "table", "inet", "tagwall")


def agrees(topo: Topology, config: Config) -> dict[tuple[str, str, str], str]:
    return {**check(topo, config, ["tcp/80"], V4), **check(topo, config, ["tcp/80"], V6)}


def test_runs_split_merge_and_switch_with_the_simulators_verdicts(
    topo: Topology, datapath: NftDatapath
) -> None:
    compiler = Compiler(estate({}))
    datapath.load(compiler.program(HOST))
    table = listed(topo)
    assert "10.0.0.2-10.0.0.40" in table and "fd00::2-fd00::28" in table
    seen = agrees(topo, compiler.config)
    assert seen[("10.0.0.1", "10.0.0.3", "tcp/80")] == "allow"
    assert seen[("fd00::1", "fd00::3", "tcp/80")] == "allow"

    # w3 leaves the middle of the run 10.0.0.2-10.0.0.40: element commands split it.
    datapath.update(compiler.update(estate({3: "db"}))[HOST])
    lines = datapath.last_script.splitlines()
    assert lines and all(" element inet tagwall s_" in line for line in lines), lines
    assert "10.0.0.2, 10.0.0.4-10.0.0.40" in listed(topo)
    assert datapath.program() == compiler.program(HOST)
    seen = agrees(topo, compiler.config)
    assert seen[("10.0.0.1", "10.0.0.3", "tcp/80")] == "deny"
    assert seen[("10.0.0.1", "10.0.0.2", "tcp/80")] == "allow"

    # ... and comes back: merged again.
    datapath.update(compiler.update(estate({}))[HOST])
    assert "10.0.0.2-10.0.0.40" in listed(topo)
    assert agrees(topo, compiler.config)[("10.0.0.1", "10.0.0.3", "tcp/80")] == "allow"

    # Every other member leaves: runs of one address do not pay, so single addresses.
    scattered = {i: "db" for i in POOL if i % 2}
    datapath.update(compiler.update(estate(scattered))[HOST])
    assert "flags interval" not in listed(topo)
    assert "delete set inet tagwall" in datapath.last_script
    assert datapath.program() == compiler.program(HOST)
    seen = agrees(topo, compiler.config)
    assert seen[("10.0.0.1", "10.0.0.3", "tcp/80")] == "allow"

    datapath.update(compiler.update(estate({}))[HOST])
    assert "10.0.0.2-10.0.0.40" in listed(topo)
    agrees(topo, compiler.config)
