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

Estates (fixed seeds):

* ``--estate sites`` (default): ``--workloads`` workloads on 250 hosts, 100 applications, 4
  tiers, 3 deployments, 5 sites, 10 labels; 1,000 rules in 50 policy sets, half with
  ``matchTags: [application, deployment]``, some with an address group (prefixes), port
  ranges or named ports; every set picks workloads by site, so all 1,000 rules reach the
  measured host ``host0`` (sets alternate between ingress and egress, so each rule is
  compiled once).  Workloads are placed round robin: few runs of consecutive addresses.
* ``--estate realistic``: bench/compile.py's realistic estate (10,000 workloads on 500
  hosts), measured on its largest program, whose largest set is stored as runs (compiler
  ``_ranges.py``).  The member update flips the deployment of a member of that set on
  another host (it leaves the set, splitting a run, and comes back); the added workload is
  a copy of it at a free address of its host.  ``--without-runs`` measures the same host
  with every set stored as single addresses: what storing runs costs the updates.

Usage: python bench/nft_program.py [--json] [--estate sites|realistic] [--workloads N]
       [--runs N] [--without-runs]
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
from dataclasses import dataclass, replace
from ipaddress import ip_address
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
from compile import realistic

from tagwall._netns import entered
from tagwall.compiler import Compiler, Program, _ranges
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


def with_tag(config: Config, name: str, key: str, value: str) -> Config:
    """``config`` with one workload's tag changed, derived indexes updated for it alone
    (as bench/compile.py does: the controller validates only what changed)."""
    w = config.workloads[name]
    w = replace(w, tags=Tags.of({**w.tags, key: [value]}))
    cfg = replace(config, workloads={**config.workloads, name: w})
    return replace(cfg, effective={**config.effective, name: cfg._compute_effective(w)})


@dataclass(frozen=True)
class Case:
    """What one run measures: the estate, its measured host, the two configurations one
    member update flips between (the second is ``config`` again) and ``config`` with one
    workload more (on another host)."""

    config: Config
    host: str
    flips: tuple[Config, Config]
    with_extra: Config


def sites_case(n_workloads: int) -> Case:
    docs = generate(n_workloads)
    config = build(docs)
    tier = config.workloads["w1"].tags.value("tier") or "web"
    other = "cache" if tier != "cache" else "web"
    flips = (with_tag(config, "w1", "tier", other), with_tag(config, "w1", "tier", tier))
    extra = workloaddoc(n_workloads, random.Random(5))
    extra["spec"]["host"] = "host1"  # a remote member: host0 sees set elements change
    return Case(config, HOST, flips, build([*docs, extra]))


def realistic_case() -> Case:
    docs = realistic(10_000, 500, 1_000, 50)
    config = build(docs)
    compiler = Compiler(config)
    host = max(compiler.hosts(), key=lambda h: compiler.program(h).entries())
    program = compiler.program(host)
    largest = max(program.sets.values(), key=len)
    local = {n for n, w in config.workloads.items() if w.host == host}
    member = config.workloads[
        min(n for n in map(config.by_ip.__getitem__, largest.addresses) if n not in local)
    ]
    deployment = member.tags.value("deployment") or "dev"
    flips = (
        with_tag(config, member.name, "deployment", "prod" if deployment != "prod" else "dev"),
        with_tag(config, member.name, "deployment", deployment),
    )
    used = set(config.by_ip)
    ip = ip_address(member.interfaces[0].ips[0])
    free = next(ip + n for n in range(1, 32) if ip + n not in used)
    [extra] = [d for d in docs if d["metadata"]["name"] == member.name]
    extra = {**extra, "metadata": {**extra["metadata"], "name": "w-extra"}}
    extra["spec"] = {**extra["spec"], "interfaces": [{"name": "eth0", "ips": [str(free)]}]}
    return Case(config, host, flips, build([*docs, extra]))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def members(program: Program) -> int:
    """Set members (addresses and prefixes), port-set elements and map entries."""
    return (
        sum(len(s) for s in program.sets.values())
        + sum(len(p) for p in program.port_sets.values())
        + sum(len(m) for m in program.tag_maps.values())
    )


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
    ap.add_argument("--estate", choices=["sites", "realistic"], default="sites")
    ap.add_argument("--workloads", type=int, default=4_000, help="of the sites estate")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--without-runs",
        action="store_true",
        help="store every set as single addresses (the same host as with runs)",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        say("needs root: it creates a network namespace and programs nftables in it")
        return 2

    say(f"generating and compiling the {args.estate} estate …")
    case = sites_case(args.workloads) if args.estate == "sites" else realistic_case()
    config, host = case.config, case.host
    if args.without_runs:
        _ranges.RANGE_BUDGET = 0  # no set fits: every one is a hash set of addresses
    compiler = Compiler(config)
    program = compiler.program(host)
    rules = sum(len(b.rules) for blocks in program.chains.values() for b in blocks)

    netns = f"twbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        dp = NftDatapath(netns=netns)
        ctx = NftContext(netns)
        layout = layout_for(program, "tagwall")
        script = render_load(program, layout)
        say(f"host {host}: {members(program)} members, {rules} rules; loading …")
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
        update_times, scripts = [], []
        for i in range(args.runs * 2):
            delta = compiler.update(case.flips[i % 2])[host]
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
            for target, times in ((case.with_extra, add_times), (config, remove_times)):
                delta = compiler.update(target)[host]
                start = time.perf_counter()
                dp.update(delta)
                times.append(time.perf_counter() - start)
        dp.close()
        ctx.close()
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)

    update_s = statistics.median(update_times)
    result = {
        "estate": args.estate,
        "workloads": len(config.workloads),
        "host": host,
        "members": members(program),
        "stored_entries": program.entries() - rules,
        "ranged_sets": len(layout.ranged),
        "without_runs": args.without_runs,
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
