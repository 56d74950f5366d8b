"""Hypothesis strategies for random, valid tagwall models and flows.

Models are built as manifests (dicts) and go through the real validator, so what is generated
is what an operator could write.  The vocabulary is small on purpose: collisions between
selectors, tags, prefixes and ports are what exercise the semantics.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from tagwall.model import Config, Document, load

Manifest = dict[str, Any]

APPS = ["a1", "a2"]
TIERS = ["web", "app", "db"]
DEPLOYMENTS = ["prod", "dev"]
LABELS = ["x", "y"]
PROJECTS = ["p1", "p2"]
HOSTS = ["h1", "h2", "h3"]
BARE_IPS = ["192.0.2.5", "192.0.2.9", "10.0.0.200", "198.51.100.1"]
FLOW_SERVICES = ["tcp/80", "tcp/85", "tcp/8080", "udp/53", "icmp/8", "sctp/80"]


def _manifest(kind: str, name: str, spec: Manifest, project: str | None = None) -> Manifest:
    meta: Manifest = {"name": name}
    if project:
        meta["project"] = project
    return {"apiVersion": "tagwall/v1", "kind": kind, "metadata": meta, "spec": spec}


@st.composite
def tag_maps(draw: st.DrawFn) -> Manifest:
    tags: Manifest = {}
    for key, values in (("application", APPS), ("tier", TIERS), ("deployment", DEPLOYMENTS)):
        if draw(st.booleans()):
            tags[key] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        tags["label"] = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=2, unique=True))
    return tags


@st.composite
def selectors(draw: st.DrawFn) -> str:
    terms = draw(
        st.lists(
            st.one_of(
                st.sampled_from(TIERS).map(lambda v: f"tier={v}"),
                st.sampled_from(APPS).map(lambda v: f"application={v}"),
                st.sampled_from(DEPLOYMENTS).map(lambda v: f"deployment!={v}"),
                st.sampled_from(LABELS).map(lambda v: f"label={v}"),
                st.sampled_from(PROJECTS).map(lambda v: f"project={v}"),
                st.just("tier in (web,db)"),
                st.just("application notin (a1)"),
                st.just("!deployment"),
                st.just("tier"),
            ),
            min_size=0,
            max_size=2,
        )
    )
    return ",".join(terms)


@st.composite
def endpoints(draw: st.DrawFn, workloads: list[str], groups: list[str]) -> Manifest:
    choices = ["tags", "tags", "any", "cidr"]
    if workloads:
        choices.append("workload")
    if groups:
        choices.append("addressGroup")
    form = draw(st.sampled_from(choices))
    if form == "tags":
        return {"tags": draw(selectors())}
    if form == "any":
        return {"any": True}
    if form == "workload":
        return {"workload": draw(st.sampled_from(workloads))}
    if form == "addressGroup":
        return {"addressGroup": draw(st.sampled_from(groups))}
    cidr = draw(st.sampled_from(["10.0.0.0/24", "10.0.0.0/29", "192.0.2.0/28", "0.0.0.0/0"]))
    out: Manifest = {"cidr": cidr}
    if cidr == "10.0.0.0/24" and draw(st.booleans()):
        out["except"] = ["10.0.0.0/30"]
    return out


@st.composite
def rules(draw: st.DrawFn, workloads: list[str], groups: list[str], position: int) -> Manifest:
    rule: Manifest = {
        "name": f"r{position}",
        "sequence": draw(st.integers(1, 4)) * 10,
        "from": draw(endpoints(workloads, groups)),
        "to": draw(endpoints(workloads, groups)),
        "direction": draw(st.sampled_from([">", "<", "<>"])),
        "action": draw(st.sampled_from(["allow", "allow", "deny", "reject", "pass"])),
    }
    services = draw(
        st.lists(
            st.sampled_from(
                [
                    "tcp/80",
                    "tcp/80-90",
                    "udp/53",
                    "http",
                    "tcp/http",
                    "icmp/8",
                    "icmp",
                    "tcp",
                    "any",
                ]
            ),
            max_size=2,
            unique=True,
        )
    )
    if services:
        rule["services"] = services
    match_tags = draw(
        st.sampled_from(
            [[], [], ["application"], ["deployment"], ["project"], ["application", "deployment"]]
        )
    )
    if match_tags:
        rule["matchTags"] = match_tags
    return rule


@st.composite
def project_documents(draw: st.DrawFn) -> list[Manifest]:
    docs: list[Manifest] = []
    for p in PROJECTS:
        spec: Manifest = {}
        if draw(st.booleans()):
            spec["tags"] = {"application": draw(st.sampled_from(APPS))}
        docs.append(_manifest("Project", p, spec))
    return docs


@st.composite
def address_groups(draw: st.DrawFn, exceptions: dict[str, list[str]]) -> list[Manifest]:
    """0 to 2 groups over a few prefixes; a group of a prefix in ``exceptions`` may leave those
    out."""
    docs: list[Manifest] = []
    for i in range(draw(st.integers(0, 2))):
        spec = {
            "prefixes": [draw(st.sampled_from(["192.0.2.0/28", "10.0.0.0/29", "10.0.0.192/26"]))]
        }
        if draw(st.booleans()):
            spec["labels"] = draw(st.lists(st.sampled_from(LABELS), min_size=1, unique=True))
        if spec["prefixes"][0] in exceptions and draw(st.booleans()):
            spec["except"] = exceptions[spec["prefixes"][0]]
        docs.append(_manifest("AddressGroup", f"g{i}", spec))
    return docs


@st.composite
def policy_documents(draw: st.DrawFn, names: list[str], groups: list[str]) -> list[Manifest]:
    """1 to 3 FirewallPolicies of 0 to 4 rules, 1 to 3 ApplicationPolicySets using them, and maybe a
    default-deny posture."""
    docs: list[Manifest] = []
    policies: list[str] = []
    for i in range(draw(st.integers(1, 3))):
        n_rules = draw(st.integers(0, 4))
        spec = {
            "mode": draw(st.sampled_from(["enforce", "enforce", "audit"])),
            "rules": [draw(rules(names, groups, j)) for j in range(n_rules)],
        }
        docs.append(_manifest("FirewallPolicy", f"fp{i}", spec))
        policies.append(f"fp{i}")
    for i in range(draw(st.integers(1, 3))):
        spec = {
            "tier": draw(st.sampled_from(["admin", "application", "application", "baseline"])),
            "priority": draw(st.integers(1, 3)),
            "directions": draw(st.sampled_from([["ingress", "egress"], ["ingress"], ["egress"]])),
            "policies": [
                {"name": p, "sequence": draw(st.integers(1, 3))}
                for p in draw(st.lists(st.sampled_from(policies), min_size=1, unique=True))
            ],
        }
        if draw(st.booleans()):
            spec["all"] = True
        else:
            spec["selector"] = draw(selectors())
        docs.append(
            _manifest(
                "ApplicationPolicySet", f"aps{i}", spec, draw(st.sampled_from([None, None, "p1"]))
            )
        )
    if draw(st.booleans()):
        docs.append(_manifest("Settings", "default", {"defaultPosture": "deny"}))
    return docs


@st.composite
def models(draw: st.DrawFn) -> list[Manifest]:
    docs = draw(project_documents())
    names: list[str] = []
    for i in range(draw(st.integers(2, 8))):
        name = f"w{i}"
        spec = {
            "kind": draw(st.sampled_from(["vm", "vm", "container", "external"])),
            "interfaces": [{"name": "eth0", "ips": [f"10.0.0.{i + 1}"]}],
            "tags": draw(tag_maps()),
        }
        host = draw(st.sampled_from([*HOSTS, None]))
        if host and spec["kind"] != "external":
            spec["host"] = host
        if draw(st.booleans()):
            spec["ports"] = [{"name": "http", "port": draw(st.sampled_from([80, 8080, 85]))}]
        docs.append(_manifest("Workload", name, spec, draw(st.sampled_from([*PROJECTS, None]))))
        names.append(name)
    groups = draw(address_groups({"192.0.2.0/28": ["192.0.2.8/29"]}))
    docs += groups
    docs += draw(policy_documents(names, [g["metadata"]["name"] for g in groups]))
    return docs


def build(manifests: list[Manifest]) -> Config:
    return load([Document(m, "generated.yaml", i) for i, m in enumerate(manifests)])


@st.composite
def flows(draw: st.DrawFn, config: Config) -> tuple[str, str, str]:
    ips = [str(ip) for ip in config.by_ip] + BARE_IPS
    return (
        draw(st.sampled_from(ips)),
        draw(st.sampled_from(ips)),
        draw(st.sampled_from(FLOW_SERVICES)),
    )


def mutate(data: st.DataObject, docs: list[Manifest]) -> list[Manifest]:
    """One operator edit: retag one or two workloads (at once), move a workload, or edit a
    rule — its services only, its remote or local side, its ``matchTags``, or drop it.

    Hosts trim sets to what their local workloads can match (compiler ``_trim.py``), so the
    edits cover what moves those views: a local workload's tags or host, a remote member's
    value tuple, and which rules and sides a host keeps."""
    docs = copy.deepcopy(docs)
    workloads = [d for d in docs if d["kind"] == "Workload"]
    policies = [d for d in docs if d["kind"] == "FirewallPolicy" and d["spec"]["rules"]]
    edits = ["retag", "retag-two", "move"] + (["rule"] * 2 if policies else [])
    edit = data.draw(st.sampled_from(edits))
    if edit in ("retag", "retag-two"):
        for w in data.draw(
            st.lists(st.sampled_from(workloads), min_size=1, max_size=1 if edit == "retag" else 2)
        ):
            w["spec"]["tags"] = data.draw(tag_maps())
    elif edit == "move":
        w = data.draw(st.sampled_from(workloads))
        if w["spec"]["kind"] != "external":
            w["spec"]["host"] = data.draw(st.sampled_from(HOSTS))
    else:
        rules = data.draw(st.sampled_from(policies))["spec"]["rules"]
        rule = data.draw(st.sampled_from(rules))
        part = data.draw(st.sampled_from(["services", "to", "from", "matchTags", "drop"]))
        if part == "services":
            rule["services"] = [data.draw(st.sampled_from(["tcp/80", "udp/53", "tcp/85", "http"]))]
        elif part in ("to", "from"):
            rule[part] = data.draw(
                st.sampled_from(
                    [
                        {"any": True},
                        {"tags": "tier=db"},
                        {"tags": "application=a1"},
                        {"cidr": "10.0.0.0/30"},
                    ]
                )
            )
        elif part == "matchTags":
            rule.pop("matchTags", None)
            match_tags = data.draw(
                st.sampled_from([[], ["application"], ["deployment"], ["project"]])
            )
            if match_tags:
                rule["matchTags"] = match_tags
        else:
            rules.remove(rule)
    return docs
