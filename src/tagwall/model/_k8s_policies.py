"""Kubernetes import, policies: NetworkPolicy and the admin-style kinds → policy sets.

Each direction of a Kubernetes policy becomes one FirewallPolicy plus the ApplicationPolicySet
that applies it in that direction only, both named ``<prefix>.<direction>.<name>``
(``np.ingress.allow-web``).  The direction comes before the name so that, at equal priority,
sets of one direction sort exactly as the Kubernetes names do.  Each Kubernetes rule becomes one
native rule per peer, in order, with sequences 10, 20, ... and the rule's ports as services.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._k8s_match import (
    admin_peers,
    admin_services,
    anchored,
    any_endpoint,
    cnp_services,
    np_peer,
    np_services,
    ns_type,
    pod_type,
    pods_terms,
    selector_terms,
)
from ._k8s_scope import Scope, at
from ._manifest import Document, Json
from ._tags import PROJECT_PSEUDO_TAG

__all__ = ["ADMIN_KINDS", "admin_policy", "network_policy"]

_RULE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_DIRECTIONS = (("ingress", "from", "Ingress"), ("egress", "to", "Egress"))


def _rules(
    base: str,
    endpoints: list[dict[str, Json]],
    services: list[Json] | None,
    action: str,
    egress: bool,
    out: list[Json],
) -> None:
    """Append one rule per endpoint; the peer is ``from`` on ingress and ``to`` on egress."""
    for j, endpoint in enumerate(endpoints, 1):
        peer_key = "to" if egress else "from"
        rule: dict[str, Json] = {
            "name": base if len(endpoints) == 1 else f"{base}.{peer_key}-{j}",
            "sequence": 10 * (len(out) + 1),
            "from": any_endpoint() if egress else endpoint,
            "to": endpoint if egress else any_endpoint(),
        }
        if services is not None:
            rule["services"] = list(services)
        rule["action"] = action
        out.append(rule)


def _emit_pair(
    s: Scope, name: str, rules: list[Json], set_spec: dict[str, Json], project: str | None
) -> list[Document]:
    policy = s.emit("FirewallPolicy", name, {"rules": rules}, project)
    set_spec["policies"] = [{"name": policy.name, "sequence": 10}]
    return [policy, s.emit("ApplicationPolicySet", name, set_spec, project)]


# -- NetworkPolicy --------------------------------------------------------------------------


def network_policy(s: Scope, name: str, namespace: str, body: Mapping[str, Json]) -> list[Document]:
    """networking.k8s.io/v1 NetworkPolicy → application-tier sets in project ``namespace``."""
    spec = s.mapping(body, "spec", "")
    s.known(spec, ("podSelector", "policyTypes", "ingress", "egress"), "spec")
    terms = selector_terms(s, spec.get("podSelector"), "spec.podSelector", pod_type)
    selector = ",".join([*terms, f"{PROJECT_PSEUDO_TAG}={namespace}"] if terms else anchored(s, []))
    types = s.listing(spec, "policyTypes", "spec")
    for i, value in enumerate(types):
        if value not in ("Ingress", "Egress"):
            s.problem(at("spec.policyTypes", i), "unknown type", value, ("Ingress", "Egress"))
    if not types:  # Kubernetes' defaulting: Ingress always, Egress iff there are egress rules
        types = ["Ingress", *(["Egress"] if s.listing(spec, "egress", "spec") else [])]
    out: list[Document] = []
    for direction, peer_key, policy_type in _DIRECTIONS:
        rules: list[Json] = []  # read even when not in effect: Kubernetes validates them too
        for i, rule in enumerate(s.listing(spec, direction, "spec")):
            where = at(at("spec", direction), i)
            if not isinstance(rule, dict):
                s.problem(where, "must be a mapping", rule)
                continue
            s.known(rule, (peer_key, "ports"), where)
            peers = s.listing(rule, peer_key, where)
            endpoints = [
                ep
                for j, peer in enumerate(peers)
                if (ep := np_peer(s, peer, at(at(where, peer_key), j), namespace)) is not None
            ]
            if not peers:  # an absent or empty peer list matches every peer
                endpoints = [any_endpoint()]
            services = np_services(s, rule, where)
            _rules(f"rule-{i + 1}", endpoints, services, "allow", direction == "egress", rules)
        if policy_type not in types:
            continue
        set_spec: dict[str, Json] = {
            "tier": "application",
            "selector": selector,
            "directions": [direction],
        }
        out += _emit_pair(s, f"np.{direction}.{name}", rules, set_spec, namespace)
    return out


# -- AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy -------------------


@dataclass(frozen=True, slots=True)
class _Flavor:
    """What differs between the admin-style kinds; everything else is shared."""

    prefix: str
    actions: Mapping[str, str]  # Kubernetes action → native action
    spec_keys: tuple[str, ...]
    services: Callable[[Scope, Mapping[str, Json], str], list[Json] | None]
    ports_key: str


_SPEC = ("subject", "ingress", "egress")
ADMIN_KINDS: Mapping[str, _Flavor] = {
    "AdminNetworkPolicy": _Flavor(
        "anp",
        {"Allow": "allow", "Deny": "deny", "Pass": "pass"},
        ("priority", *_SPEC),
        admin_services,
        "ports",
    ),
    "BaselineAdminNetworkPolicy": _Flavor(
        "banp", {"Allow": "allow", "Deny": "deny"}, _SPEC, admin_services, "ports"
    ),
    "ClusterNetworkPolicy": _Flavor(
        "cnp",
        {"Accept": "allow", "Deny": "deny", "Pass": "pass"},
        ("tier", "priority", *_SPEC),
        cnp_services,
        "protocols",
    ),
}
_CNP_TIERS = {"Admin": "admin", "Baseline": "baseline"}
BANP_PRIORITY = 1000  # BANP has no priority; it comes after every Baseline-tier CNP below 1000


def _rule_base(rule: Mapping[str, Json], i: int, taken: set[str]) -> str:
    """The Kubernetes rule name when it is a usable, unused native name; else ``rule-<i>``."""
    name = rule.get("name")
    base = name if isinstance(name, str) and _RULE_NAME_RE.match(name) else f"rule-{i}"
    while base in taken:
        base = f"{base}-{i}"
    taken.add(base)
    return base


def admin_policy(s: Scope, name: str, body: Mapping[str, Json]) -> list[Document]:
    """ANP / BANP (v1alpha1) or ClusterNetworkPolicy (v1alpha2) → global admin/baseline sets."""
    flavor = ADMIN_KINDS[s.doc.kind]
    spec = s.mapping(body, "spec", "")
    s.known(spec, flavor.spec_keys, "spec")
    if flavor.prefix == "anp":
        tier, priority = "admin", s.number(spec, "priority", "spec", 0, 1000)
    elif flavor.prefix == "banp":
        tier, priority = "baseline", BANP_PRIORITY
        if name != "default":
            s.problem("metadata.name", "a BaselineAdminNetworkPolicy must be named 'default'", name)
    else:
        raw_tier = s.text(spec, "tier", "spec", required=True)
        tier = _CNP_TIERS.get(raw_tier or "", "admin")
        if raw_tier is not None and raw_tier not in _CNP_TIERS:
            s.problem("spec.tier", "unknown tier", raw_tier, tuple(_CNP_TIERS))
        priority = s.number(spec, "priority", "spec", 0, 1000)
    subject = s.mapping(spec, "subject", "spec")
    s.known(subject, ("namespaces", "pods"), "spec.subject")
    kind = s.one_of(subject, ("namespaces", "pods"), "spec.subject")
    if kind == "namespaces":
        terms = anchored(s, selector_terms(s, subject[kind], "spec.subject.namespaces", ns_type))
    else:
        terms = pods_terms(s, s.mapping(subject, "pods", "spec.subject"), "spec.subject.pods")
    out: list[Document] = []
    for direction, peer_key, _ in _DIRECTIONS:
        rules: list[Json] = []
        taken: set[str] = set()
        for i, rule in enumerate(s.listing(spec, direction, "spec")):
            where = at(at("spec", direction), i)
            if not isinstance(rule, dict):
                s.problem(where, "must be a mapping", rule)
                continue
            s.known(rule, ("name", "action", peer_key, flavor.ports_key), where)
            action = s.text(rule, "action", where, required=True)
            if action is not None and action not in flavor.actions:
                s.problem(at(where, "action"), "unknown action", action, tuple(flavor.actions))
            peers = s.listing(rule, peer_key, where)
            if not peers:
                s.problem(at(where, peer_key), "must list at least one peer", rule.get(peer_key))
            endpoints = admin_peers(s, peers, at(where, peer_key), egress=direction == "egress")
            services = flavor.services(s, rule, where)
            native = flavor.actions.get(action or "", "deny")
            _rules(
                _rule_base(rule, i + 1, taken),
                endpoints,
                services,
                native,
                direction == "egress",
                rules,
            )
        if not rules:  # no rules in a direction: the policy does not touch that direction
            continue
        set_spec: dict[str, Json] = {
            "tier": tier,
            "priority": priority if priority is not None else 0,
            "selector": ",".join(terms),
            "directions": [direction],
        }
        out += _emit_pair(s, f"{flavor.prefix}.{direction}.{name}", rules, set_spec, None)
    return out
