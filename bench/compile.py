"""Compile benchmark: 10,000 workloads on 500 hosts, 1,000 rules in 50 policy sets.

Three estates of that size, each measured next to its own baseline (docs/benchmarks.md,
"Compile"): the realistic estate (``realistic``: guard rails, a shared three-tier template,
one policy per application, hosts pooled per deployment and application tier) whose
figures are the JSON's top-level keys; ``random_placement``, the same intent with workloads
spread at random inside each deployment's hosts; and ``worst_case``, "estate-wide tier
rules" (``generate``, the estate this benchmark used first).

Figures per estate (fixed seeds):
* full compile — ``Compiler(config)``, every host's program resolved and distilled;
* incremental — ``Compiler.update(new_config)`` for one workload's tag change and for one
  rule edit (the new Config is prepared beforehand, as the controller's validation would);
* the largest per-host program in entries (set, port-set and map elements plus rules; a
  set's addresses count as their runs where a data path stores them so, compiler
  ``_ranges.py``);
* the baseline in the same run: naive pairwise ACL expansion of the same intent — one entry
  per (local workload, remote workload, service) that each rule allows, as security-group style
  systems program it — counted per host.
``--explain`` adds what fills the largest host's program: entries by kind, its largest sets
and the rules that name them.

Usage: python bench/compile.py [--json] [--explain] [--workloads N] [--hosts N] [--rules N]
       [--sets N] [--runs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from _estate import (
    DEPLOYMENTS,
    LABELS,
    SITES,
    TIERS,
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
    """Manifests of the worst case, "estate-wide tier rules": 100 applications in 20
    projects, 4 tiers, 3 deployments, 5 sites, 10 labels, workloads round-robin on hosts;
    random rules between estate-wide tier selectors, half with matchTags, one service each."""
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


# -- the realistic estate (primary figure) -------------------------------------------------------

INFRA = ["dns", "ntp", "monitoring", "backup", "logging"]  # shared services, small
TIER_SERVICES = {
    "web": ["tcp/443", "tcp/80", "tcp/8443"],
    "app": ["tcp/8080", "tcp/8443", "tcp/9000-9100", "tcp/7000-7001"],
    "db": ["tcp/5432", "tcp/5433", "tcp/3306"],
    "cache": ["tcp/6379", "tcp/26379", "tcp/11211"],
}
SLOTS_PER_HOST = 32  # each host's workloads take addresses from its own /27, like a pod CIDR


def _rule(
    name: str,
    src: dict[str, Any],
    dst: dict[str, Any],
    services: list[str] | None = None,
    *,
    action: str = "allow",
    match: list[str] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "from": src, "to": dst, "action": action}
    if services is not None:
        rule["services"] = services
    if match:
        rule["matchTags"] = match
    if action in ("deny", "reject"):
        rule["log"] = True
    return rule


def _sequenced(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "sequence": (i + 1) * 10} for i, r in enumerate(rules)]


def _tags(selector: str) -> dict[str, Any]:
    return {"tags": selector}


ANY: dict[str, Any] = {"any": True}
INTERNET: dict[str, Any] = {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}
OFFICE: dict[str, Any] = {"cidr": "172.16.0.0/12"}


def guard_rails() -> list[dict[str, Any]]:
    """The admin tier: a handful of estate-wide guard rails, as in examples/guardrails."""
    return _sequenced(
        [
            _rule(
                "deny-nonprod-to-prod",
                _tags("deployment in (dev,staging)"),
                _tags("deployment=prod"),
                action="deny",
            ),
            _rule("allow-dns", ANY, _tags("application=dns"), ["udp/53", "tcp/53"]),
            _rule("allow-ntp", ANY, _tags("application=ntp"), ["udp/123"]),
            _rule(
                "allow-monitoring", _tags("application=monitoring"), ANY, ["tcp/9100", "tcp/9102"]
            ),
            _rule("allow-backup", _tags("application=backup"), ANY, ["tcp/10000", "tcp/8400-8403"]),
            _rule("allow-logging", ANY, _tags("application=logging"), ["udp/514", "tcp/6514"]),
            _rule("allow-ssh-from-bastions", {"addressGroup": "bastions"}, ANY, ["tcp/22"]),
            _rule("pass-the-rest", ANY, ANY, action="pass"),
        ]
    )


def template_rules() -> list[dict[str, Any]]:
    """One three-tier policy written once with tier selectors and ``matchTags:
    [application, deployment]``, shared by every application without a policy of its own
    (examples/three-tier)."""
    same = ["application", "deployment"]
    tiers = [
        ("web", "app", ["tcp/8080", "tcp/8443"]),
        ("app", "db", ["tcp/5432"]),
        ("app", "cache", ["tcp/6379"]),
        ("web", "cache", ["tcp/6379"]),
        ("app", "app", ["tcp/7000-7001"]),
        ("db", "db", ["tcp/5432", "tcp/5433"]),
        ("cache", "cache", ["tcp/6379", "tcp/26379"]),
    ]
    rules = [
        _rule(f"{a}-to-{b}", _tags(f"tier={a}"), _tags(f"tier={b}"), svc, match=same)
        for a, b, svc in tiers
    ]
    rules += [
        _rule("partners-to-web", {"addressGroup": "partners"}, _tags("tier=web"), ["tcp/443"]),
        _rule("office-to-web", OFFICE, _tags("tier=web"), ["tcp/443", "tcp/80"]),
        _rule("app-to-internet", _tags("tier=app"), INTERNET, ["tcp/443"]),
        _rule("web-to-app-health", _tags("tier=web"), _tags("tier=app"), ["tcp/8081"], match=same),
        _rule("deny-the-rest", ANY, ANY, action="deny"),
    ]
    return _sequenced(rules)


def app_rules(rng: random.Random, app: str, peers: list[str], count: int) -> list[dict[str, Any]]:
    """``count`` rules of one application's own policy: explicit ``application=X,tier=T``
    selectors, ``matchTags: [deployment]`` between workloads, 1 to 3 services per rule; calls
    to and from the API tiers of other applications; partners, office and internet at the
    edges; a final logged deny to the database tier."""
    same = ["deployment"]
    rules = [
        _rule(
            "partners-to-web",
            {"addressGroup": "partners"},
            _tags(f"application={app},tier=web"),
            ["tcp/443"],
        ),
        _rule("office-to-web", OFFICE, _tags(f"application={app},tier=web"), ["tcp/443", "tcp/80"]),
        _rule("app-to-internet", _tags(f"application={app},tier=app"), INTERNET, ["tcp/443"]),
    ]
    for i in range(count - len(rules) - 1):
        kind = rng.random()
        if kind < 0.7:  # between two tiers of the application
            a, b = rng.choice(TIERS), rng.choice(TIERS)
            src, dst = f"application={app},tier={a}", f"application={app},tier={b}"
        elif kind < 0.9:  # calls another application's API
            src = f"application={app},tier=app"
            b = rng.choice(["app", "web"])
            dst = f"application={rng.choice(peers)},tier={b}"
        else:  # another application calls this one
            src, b = f"application={rng.choice(peers)},tier=app", "app"
            dst = f"application={app},tier=app"
        services = rng.sample(TIER_SERVICES[b], rng.randint(1, 3))
        rules.append(_rule(f"r{i}", _tags(src), _tags(dst), services, match=same))
    rules.append(_rule("deny-to-db", ANY, _tags(f"application={app},tier=db"), action="deny"))
    return _sequenced(rules)


def realistic(
    n_workloads: int,
    n_hosts: int,
    n_rules: int,
    n_sets: int,
    *,
    placement: str = "pooled",
    seed: int = 11,
) -> list[dict[str, Any]]:
    """Manifests of the realistic estate (docs/benchmarks.md, "Compile").

    Tags: 100 applications (5 of them small shared services, 1% of the workloads), 4 tiers,
    3 deployments, 5 sites (the host's), 10 labels (30% of workloads carry two).
    Placement ``pooled``: hosts form pools per deployment and take the workloads of one
    application tier after another (node pools, host groups); ``random``: any host of the
    deployment's pool.  Each host's workloads have addresses from the host's own /27.
    Policy: ``n_sets`` sets — one admin set of guard rails (``guard_rails``), one
    application set for the applications without a policy of their own
    (``template_rules``), and one set per remaining application (``app_rules``), the rules
    split evenly to make ``n_rules``.
    """
    rng = random.Random(seed)
    business = [f"app{i}" for i in range(100 - len(INFRA))]
    drawn = []
    for _ in range(n_workloads):
        tags: dict[str, Any] = {
            "application": rng.choice(INFRA) if rng.random() < 0.01 else rng.choice(business),
            "tier": rng.choice(TIERS),
            "deployment": rng.choice(DEPLOYMENTS),
        }
        if rng.random() < 0.3:
            tags["label"] = rng.sample(LABELS, 2)
        drawn.append(tags)
    pools = {d: [i for i, t in enumerate(drawn) if t["deployment"] == d] for d in DEPLOYMENTS}
    if placement == "pooled":
        for members in pools.values():
            members.sort(key=lambda i: (drawn[i]["application"], drawn[i]["tier"], i))
    else:
        for members in pools.values():
            rng.shuffle(members)
    docs: list[dict[str, Any]] = [doc("Project", f"proj{p}", {}) for p in range(20)]
    first = 0
    for d, members in pools.items():
        # Hosts in proportion to the pool's workloads; the pool's workloads spread evenly.
        hosts = (
            round(len(members) * n_hosts / n_workloads)
            if d != DEPLOYMENTS[-1]
            else (n_hosts - first)
        )
        used: Counter[int] = Counter()
        for j, i in enumerate(members):
            host = first + j * hosts // len(members)
            k = used[host]
            used[host] += 1
            assert k < SLOTS_PER_HOST, "too many workloads for a host's /27"
            tags = {**drawn[i], "site": SITES[host * len(SITES) // n_hosts]}
            spec = {
                "host": f"host{host}",
                "interfaces": [{"name": "eth0", "ips": [address(host * SLOTS_PER_HOST + k)]}],
                "tags": tags,
            }
            app = tags["application"]
            project = None if app in INFRA else f"proj{int(app.removeprefix('app')) % 20}"
            docs.append(doc("Workload", f"w{i}", spec, project))
        first += hosts
    docs.append(doc("AddressGroup", "partners", {"prefixes": ["203.0.113.0/24"]}))
    docs.append(doc("AddressGroup", "bastions", {"prefixes": ["192.0.2.0/28"]}))

    own = business[: n_sets - 2]
    shared = business[n_sets - 2 :] + INFRA
    policies: list[tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = [
        ("guard-rails", "admin", {"all": True}, guard_rails()),
        (
            "three-tier",
            "application",
            {"selector": f"application in ({','.join(shared)})"},
            template_rules(),
        ),
    ]
    left = n_rules - sum(len(p[3]) for p in policies)
    for j, app in enumerate(own):
        count = left // len(own) + (1 if j < left % len(own) else 0)
        peers = [b for b in business if b != app]
        policies.append(
            (
                app,
                "application",
                {"selector": f"application={app}"},
                app_rules(rng, app, peers, count),
            )
        )
    for priority, (name, tier, pick, rules) in enumerate(policies):
        docs.append(doc("FirewallPolicy", name, {"rules": rules}))
        docs.append(
            doc(
                "ApplicationPolicySet",
                name,
                {
                    "tier": tier,
                    "priority": priority,
                    **pick,
                    "policies": [{"name": name, "sequence": 10}],
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
                    # The global set: the program's own is trimmed to this host's needs.
                    local_set = compiler._sets[local_side].members if local_side else None
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


def explain(compiler: Compiler, host: str, top: int = 8) -> dict[str, Any]:
    """What fills ``host``'s program: its entries by kind, and its largest address sets:
    members, entries as stored (runs where the set is stored as runs), and how many rules of
    its chains name each on the local side (the end this host enforces: the source at
    egress, the destination at ingress) and on the remote side.  A rule of a set applied in
    both directions counts once in each chain."""
    program = compiler.program(host)
    stored = program.set_entries()
    sides: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for (direction, _tier), blocks in program.chains.items():
        egress = direction is TrafficDirection.EGRESS
        for block in blocks:
            for rule in block.rules:
                local, remote = (rule.src, rule.dst) if egress else (rule.dst, rule.src)
                if local:
                    sides[local]["local"] += 1
                if remote:
                    sides[remote]["remote"] += 1
    largest = sorted(program.sets.items(), key=lambda kv: -len(kv[1]))[:top]
    rules = sum(len(b.rules) for blocks in program.chains.values() for b in blocks)
    whole = {
        "sets": sum(stored.values()),
        "port_sets": sum(len(p) for p in program.port_sets.values()),
        "tag_maps": sum(len(m) for m in program.tag_maps.values()),
        "rules": rules,
    }
    sets = [
        {
            "set": name,
            "elements": len(s),
            "stored_entries": stored[name],
            "local_uses": sides[name]["local"],
            "remote_uses": sides[name]["remote"],
        }
        for name, s in largest
    ]
    return {"entries": whole, "largest_sets": sets}


def measure(docs: list[Any], edited_policy: str, runs: int, with_explain: bool) -> dict[str, Any]:
    """Every figure of one estate (the module docstring)."""
    start = time.perf_counter()
    config = load([Document(d, "bench", i) for i, d in enumerate(docs)])
    validate_s = time.perf_counter() - start
    say(f"validated in {validate_s:.2f} s; compiling …")
    full_s = best_of(runs, lambda: Compiler(config))
    compiler = Compiler(config)

    # One workload's tag change: w0 flips tier (and back, so every run changes something).
    w0 = config.workloads["w0"]
    tier = w0.tags.value("tier") or "web"
    flips = [
        with_workload(config, replace(w0, tags=Tags.of({**w0.tags, "tier": [t]})))
        for t in ("cache" if tier != "cache" else "web", tier)
    ]
    tag_times, tag_hosts = [], []
    for i in range(runs * 2):
        start = time.perf_counter()
        deltas = compiler.update(flips[i % 2])
        tag_times.append(time.perf_counter() - start)
        tag_hosts.append(len(deltas))

    # One rule edit: the first rule of ``edited_policy`` changes its port.
    base = compiler.config
    ref = next(r for r in base.policies if r.name == edited_policy)
    policy = base.policies[ref]
    services = policy.rules[0].services
    assert services, f"{edited_policy}'s first rule names no service to edit"
    edits = []
    for port in (9443, 443):
        first = replace(policy.rules[0], services=(replace(services[0], ports=(port, port)),))
        edits.append(
            replace(
                base,
                policies={**base.policies, ref: replace(policy, rules=(first, *policy.rules[1:]))},
            )
        )
    rule_times, rule_hosts = [], []
    for i in range(runs * 2):
        start = time.perf_counter()
        deltas = compiler.update(edits[i % 2])
        rule_times.append(time.perf_counter() - start)
        rule_hosts.append(len(deltas))

    say("counting entries …")
    entries = {h: compiler.program(h).entries() for h in compiler.hosts()}
    pairwise = pairwise_entries(compiler)
    max_host = max(entries, key=entries.__getitem__)
    result: dict[str, Any] = {
        "hosts": len(entries),
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
    if with_explain:
        result["max_host"] = max_host
        result["max_host_explained"] = explain(compiler, max_host)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--explain", action="store_true", help="add the largest host's largest sets")
    ap.add_argument("--workloads", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--rules", type=int, default=1_000)
    ap.add_argument("--sets", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    size = (args.workloads, args.hosts, args.rules, args.sets)

    result: dict[str, Any] = {
        "workloads": args.workloads,
        "hosts": args.hosts,
        "rules": args.rules,
        "policy_sets": args.sets,
    }
    estates = [
        (None, "realistic, pooled placement", realistic(*size), "app5"),
        (
            "random_placement",
            "realistic policy, placement at random within each deployment's hosts",
            realistic(*size, placement="random"),
            "app5",
        ),
        ("worst_case", "estate-wide tier rules", generate(*size), "fp7"),
    ]
    for key, label, docs, edited in estates:
        say(f"{label}: {args.workloads} workloads, {args.hosts} hosts, {args.rules} rules …")
        figures = {"estate": label, **measure(docs, edited, args.runs, args.explain)}
        if key is None:  # the primary estate: its figures at the top level
            result.update(figures)
        else:
            result[key] = figures
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
