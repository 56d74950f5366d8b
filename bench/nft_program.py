"""nftables programming benchmark: one host's program of ≥ 10,000 set members and 1,000 rules.

Measures, in a network namespace it creates and removes (needs root):

* full atomic load — ``NftDatapath.load(program)``: render + one libnftables transaction
  (median of ``--runs``); also the two parts alone;
* one member update — a real delta from ``Compiler.update`` for one workload's tag change
  (a workload on another host flips its tier and back), applied by ``NftDatapath.update``
  (``apply_delta`` + render + one transaction of element commands; median); and one member
  added (a new workload appears) and removed again;
* the baseline in the same run: the very same rendered text given to the ``nft -f`` command
  line as a subprocess (what a shell-out data path would pay), for the load and for the
  member update.

Intent (fixed seed): ``--workloads`` workloads on 250 hosts, 100 applications, 4 tiers, 3
deployments, 5 sites, 10 labels; 1,000 rules in 50 policy sets, half with ``matchTags:
[application, deployment]``, some with an address group (prefixes), port ranges or named
ports; every set picks workloads by site, so all 1,000 rules reach the measured host
``host0`` (sets alternate between ingress and egress, so each rule is compiled once).

Usage: python bench/nft_program.py [--json] [--workloads N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from _estate import (
    SITES,
    address,
    doc,
    report,
    say,
    tier_rule,
    workload_tags,
)

from tagwall._netns import entered
from tagwall.compiler import Compiler, Program
from tagwall.datapath import NftDatapath
from tagwall.datapath._nft_render import layout_for, render_load
from tagwall.datapath._nftlib import NftContext
from tagwall.model import Config, Document, Tags, load

SERVICES = ["tcp/443", "tcp/8080", "tcp/5432", "udp/53", "tcp/9000-9100", "http", "icmp/8"]
HOST = "host0"
N_HOSTS = 250


def workloaddoc(i: int, rng: random.Random) -> dict[str, Any]:
    tags = workload_tags(rng)
    spec: dict[str, Any] = {
        "host": f"host{i % N_HOSTS}",
        "interfaces": [{"name": "eth0", "ips": [address(i + 1)]}],
        "tags": tags,
    }
    if rng.random() < 0.2:
        spec["ports"] = [{"name": "http", "port": rng.choice([80, 8080]), "protocol": "TCP"}]
    return doc("Workload", f"w{i}", spec)


def generate(n_workloads: int, n_rules: int = 1_000, n_sets: int = 50) -> list[dict[str, Any]]:
    rng = random.Random(11)
    docs = [workloaddoc(i, rng) for i in range(n_workloads)]
    docs.append(
        doc(
            "AddressGroup",
            "partners",
            {"prefixes": ["203.0.113.0/24", "198.51.100.0/24"], "except": ["203.0.113.7/32"]},
        )
    )
    per_set = n_rules // n_sets
    for s in range(n_sets):
        rules = []
        for r in range(per_set):
            rule = tier_rule(
                rng,
                r,
                services=SERVICES,
                actions=["allow"] * 7 + ["deny", "reject", "pass"],
                p_group=0.2,
                p_label=0.3,
            )
            rules.append(rule)
        docs.append(doc("FirewallPolicy", f"fp{s}", {"rules": rules}))
        docs.append(
            doc(
                "ApplicationPolicySet",
                f"aps{s}",
                {
                    "tier": "admin" if s == 0 else "application",
                    "priority": s,
                    "selector": f"site in ({SITES[s % 5]}, {SITES[(s + 1) % 5]})",
                    "directions": ["ingress" if s % 2 else "egress"],
                    "policies": [{"name": f"fp{s}", "sequence": 10}],
                },
            )
        )
    return docs


def build(docs: list[dict[str, Any]]) -> Config:
    return load([Document(d, "bench", i) for i, d in enumerate(docs)])


def with_workload(config: Config, name: str, tier: str) -> Config:
    """``config`` with one workload's tier changed, derived indexes updated for it alone
    (as bench/compile.py does: the controller validates only what changed)."""
    w = config.workloads[name]
    w = replace(w, tags=Tags.of({**w.tags, "tier": [tier]}))
    cfg = replace(config, workloads={**config.workloads, name: w})
    return replace(cfg, effective={**config.effective, name: cfg._compute_effective(w)})


def _other(tier: str) -> str:
    return "cache" if tier != "cache" else "web"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def members(program: Program) -> int:
    """Set elements, port-set elements and map entries: entries() without the rules."""
    rules = sum(len(b.rules) for blocks in program.chains.values() for b in blocks)
    return program.entries() - rules


def nft_cli(netns: str, script: str) -> float:
    """``nft -f FILE`` as a subprocess in ``netns`` (forked from a thread inside it, so no
    ``ip netns exec`` is added to the figure); the file is written beforehand."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(script)
        f.flush()
        with entered(netns):
            start = time.perf_counter()
            subprocess.run(["nft", "-f", f.name], check=True)
            return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--workloads", type=int, default=4_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        say("needs root: it creates a network namespace and programs nftables in it")
        return 2

    say(f"generating and compiling {args.workloads} workloads, 1,000 rules …")
    docs = generate(args.workloads)
    config = build(docs)
    compiler = Compiler(config)
    program = compiler.program(HOST)
    rules = sum(len(b.rules) for blocks in program.chains.values() for b in blocks)
    extra = workloaddoc(args.workloads, random.Random(5))
    extra["spec"]["host"] = "host1"  # a remote member: host0 sees set elements change
    with_extra = build([*docs, extra])

    netns = f"twbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        dp = NftDatapath(netns=netns)
        ctx = NftContext(netns)
        layout = layout_for(program, "tagwall")
        script = render_load(program, layout)
        say(f"host {HOST}: {members(program)} members, {rules} rules; loading …")
        render_s = statistics.median(
            timed(lambda: render_load(program, layout_for(program, "tagwall")))
            for _ in range(args.runs)
        )
        load_s = statistics.median(timed(lambda: dp.load(program)) for _ in range(args.runs))
        apply_s = statistics.median(
            timed(lambda: ctx.run(script, operation="load")) for _ in range(args.runs)
        )
        cli_load_s = statistics.median(nft_cli(netns, script) for _ in range(args.runs))
        dp.load(program)
        nft_rules = sum(
            1
            for line in dp.last_script.splitlines()
            if " counter " in line and "posture" not in line and "application-default" not in line
        )

        say("one workload's tag change, through Compiler.update …")
        tier = config.workloads["w1"].tags.value("tier") or "web"
        flips = [with_workload(config, "w1", t) for t in (_other(tier), tier)]
        update_times, scripts = [], []
        for i in range(args.runs * 2):
            delta = compiler.update(flips[i % 2])[HOST]
            start = time.perf_counter()
            dp.update(delta)
            update_times.append(time.perf_counter() - start)
            scripts.append(dp.last_script)
        lines = [line for s in scripts for line in s.splitlines()]
        elements_only = all(" element inet tagwall " in line for line in lines)
        apply_times = []
        for s in scripts:  # the same flips again, in the same order: ends where it started
            start = time.perf_counter()
            ctx.run(s, operation="update")
            apply_times.append(time.perf_counter() - start)
        cli_update_s = statistics.median(nft_cli(netns, s) for s in scripts)

        say("one workload added and removed …")
        add_times, remove_times = [], []
        for _ in range(args.runs):
            for target, times in ((with_extra, add_times), (config, remove_times)):
                delta = compiler.update(target)[HOST]
                start = time.perf_counter()
                dp.update(delta)
                times.append(time.perf_counter() - start)
        dp.close()
        ctx.close()
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)

    update_s = statistics.median(update_times)
    result = {
        "workloads": args.workloads,
        "host": HOST,
        "members": members(program),
        "rules": rules,
        "nft_rules": nft_rules,
        "load_script_bytes": len(script),
        "nft_render_load_s": round(render_s, 4),
        "nft_load_s": round(load_s, 4),
        "nft_apply_load_s": round(apply_s, 4),
        "nft_cli_load_s": round(cli_load_s, 4),
        "cli_to_lib_load_ratio": round(cli_load_s / apply_s, 2),
        "nft_member_update_s": round(update_s, 5),
        "member_update_commands": round(len(lines) / len(scripts), 1),
        "member_update_elements_only": elements_only,
        "nft_apply_member_update_s": round(statistics.median(apply_times), 5),
        "nft_cli_member_update_s": round(cli_update_s, 5),
        "cli_to_lib_member_update_ratio": round(cli_update_s / update_s, 1),
        "nft_member_add_s": round(statistics.median(add_times), 5),
        "nft_member_remove_s": round(statistics.median(remove_times), 5),
        "target_load_s": 0.2,
        "target_member_update_s": 0.005,
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
