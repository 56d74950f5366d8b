"""Compile benchmark: 10,000 workloads on 500 hosts, 1,000 rules in 50 policy sets.

Measures, on one generated intent (fixed seed):
* full compile — ``Compiler(config)``, every host's program resolved and distilled;
* incremental — ``Compiler.update(new_config)`` for one workload's tag change and for one
  rule edit (the new Config is prepared beforehand, as the controller's validation would);
* the largest per-host program in entries (set, port-set and map elements plus rules);
* the baseline in the same run: naive pairwise ACL expansion of the same intent — one entry
  per (local workload, remote workload, service) that each rule allows, as security-group style
  systems program it — counted per host.

Usage: python bench/compile.py [--json] [--workloads N] [--hosts N] [--rules N] [--sets N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from _estate import (
    address,
    doc,
    report,
    say,
    tier_rule,
    workload_tags,
)

from tagwall.compiler import Compiler
from tagwall.model import Config, Document, Tags, TrafficDirection, Workload, load

SERVICES = ["tcp/443", "tcp/8080", "tcp/5432", "tcp/6379", "udp/53", "tcp/9000-9100"]


def generate(n_workloads: int, n_hosts: int, n_rules: int, n_sets: int, seed: int = 7) -> list[Any]:
    """Manifests of a realistic estate: 100 applications in 20 projects, 4 tiers, 3
    deployments, 5 sites, 10 labels; rules between tiers, half with matchTags."""
    rng = random.Random(seed)
    n_apps = 100
    docs: list[dict[str, Any]] = []
    for p in range(20):
        docs.append(doc("Project", f"proj{p}", {}))
    for i in range(n_workloads):
        tags = workload_tags(rng, n_apps)
        app = int(tags["application"].removeprefix("app"))
        spec = {
            "host": f"host{i % n_hosts}",
            "interfaces": [{"name": "eth0", "ips": [address(i)]}],
            "tags": tags,
        }
        docs.append(doc("Workload", f"w{i}", spec, f"proj{app % 20}"))
    docs.append(doc("AddressGroup", "partners", {"prefixes": ["203.0.113.0/24"]}))
    per_set = n_rules // n_sets
    for s in range(n_sets):
        rules = []
        for r in range(per_set):
            rule = tier_rule(
                rng,
                r,
                services=SERVICES,
                actions=["allow"] * 8 + ["deny", "pass"],
                p_group=0.1,
                p_label=0.2,
            )
            rules.append(rule)
        docs.append(doc("FirewallPolicy", f"fp{s}", {"rules": rules}))
        apps = ",".join(f"app{x}" for x in range(s * 2, s * 2 + 2))
        docs.append(
            doc(
                "ApplicationPolicySet",
                f"aps{s}",
                {
                    "tier": "admin" if s == 0 else "application",
                    "priority": s,
                    **({"all": True} if s == 0 else {"selector": f"application in ({apps})"}),
                    "policies": [{"name": f"fp{s}", "sequence": 10}],
                },
            )
        )
    return docs


def with_workload(config: Config, workload: Workload) -> Config:
    """``config`` with one workload replaced, derived indexes updated for it alone."""
    workloads = {**config.workloads, workload.name: workload}
    cfg = replace(config, workloads=workloads)
    effective = {**config.effective, workload.name: cfg._compute_effective(workload)}
    return replace(cfg, effective=effective)


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def pairwise_entries(compiler: Compiler) -> dict[str, int]:
    """Entries per host if every allowed (local, remote, service) triple were one ACL entry.

    A remote prefix counts as one entry, ``any`` as one.  With ``matchTags`` only the remote
    members that share the local workload's values count, as a pairwise system would program
    them.
    """
    members: dict[str, int] = {}
    for name, g in compiler._sets.items():  # a benchmark may look inside
        members[name] = len(g.members) + len(g.prefixes)
    same_values: dict[tuple[str, str], Counter[tuple[str, ...]]] = {}

    def sharing(set_name: str, map_name: str, values: tuple[str, ...] | None) -> int:
        if values is None:
            return 0
        if (set_name, map_name) not in same_values:
            table = compiler._tag_maps[map_name][1]
            same_values[(set_name, map_name)] = Counter(
                table[ip] for ip in compiler._sets[set_name].members if ip in table
            )
        return same_values[(set_name, map_name)][values]

    per_host: dict[str, int] = {}
    for host in compiler.hosts():
        program = compiler.program(host)
        total = 0
        for (direction, _tier), blocks in program.chains.items():
            egress = direction is TrafficDirection.EGRESS
            for block in blocks:
                local = program.sets[block.applies_to].addresses
                for rule in block.rules:
                    local_side, remote_side = (
                        (rule.src, rule.dst) if egress else (rule.dst, rule.src)
                    )
                    local_set = program.sets[local_side].addresses if local_side else None
                    services = max(1, len(rule.services or ()))
                    for ip in local:
                        if local_set is not None and ip not in local_set:
                            continue
                        if remote_side is None:
                            remote = 1
                        elif rule.match_tags:
                            values = compiler._tag_maps[rule.match_tags][1].get(ip)
                            remote = sharing(remote_side, rule.match_tags, values)
                        else:
                            remote = members[remote_side]
                        total += remote * services
        per_host[host] = total
    return per_host


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--workloads", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--rules", type=int, default=1_000)
    ap.add_argument("--sets", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)

    say(f"generating {args.workloads} workloads, {args.hosts} hosts, {args.rules} rules …")
    docs = generate(args.workloads, args.hosts, args.rules, args.sets)
    start = time.perf_counter()
    config = load([Document(d, "bench", i) for i, d in enumerate(docs)])
    validate_s = time.perf_counter() - start
    say(f"validated in {validate_s:.2f} s; compiling …")
    full_s = best_of(args.runs, lambda: Compiler(config))
    compiler = Compiler(config)

    # One workload's tag change: w0 flips tier (and back, so every run changes something).
    w0 = config.workloads["w0"]
    flips = [
        with_workload(config, replace(w0, tags=Tags.of({**w0.tags, "tier": [t]})))
        for t in ("cache", w0.tags.value("tier") or "web")
    ]
    tag_times, tag_hosts = [], []
    for i in range(args.runs * 2):
        start = time.perf_counter()
        deltas = compiler.update(flips[i % 2])
        tag_times.append(time.perf_counter() - start)
        tag_hosts.append(len(deltas))

    # One rule edit: fp7's first rule changes its port.
    base = compiler.config
    ref = next(r for r in base.policies if r.name == "fp7")
    policy = base.policies[ref]
    edits = []
    for port in (9443, 443):
        first = replace(
            policy.rules[0], services=(replace(policy.rules[0].services[0], ports=(port, port)),)
        )  # type: ignore[index]
        edits.append(
            replace(
                base,
                policies={**base.policies, ref: replace(policy, rules=(first, *policy.rules[1:]))},
            )
        )
    rule_times, rule_hosts = [], []
    for i in range(args.runs * 2):
        start = time.perf_counter()
        deltas = compiler.update(edits[i % 2])
        rule_times.append(time.perf_counter() - start)
        rule_hosts.append(len(deltas))

    say("counting entries …")
    entries = {h: compiler.program(h).entries() for h in compiler.hosts()}
    pairwise = pairwise_entries(compiler)
    max_host = max(entries, key=entries.__getitem__)
    result = {
        "workloads": args.workloads,
        "hosts": len(entries),
        "rules": args.rules,
        "policy_sets": args.sets,
        "validate_s": round(validate_s, 3),
        "full_compile_s": round(full_s, 3),
        "incremental_tag_change_s": round(statistics.median(tag_times), 5),
        "incremental_tag_change_hosts": max(tag_hosts),
        "incremental_rule_edit_s": round(statistics.median(rule_times), 5),
        "incremental_rule_edit_hosts": max(rule_hosts),
        "max_host_entries": entries[max_host],
        "pairwise_max_host_entries": max(pairwise.values()),
        "pairwise_to_tagwall_entries_ratio": round(max(pairwise.values()) / entries[max_host], 1),
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
