"""Kubernetes semantics after import: small clusters, and what Kubernetes says may connect.

Each expectation comes from the Kubernetes documentation and API reference (NetworkPolicy
concepts page; network-policy-api AdminNetworkPolicy, BaselineAdminNetworkPolicy and
ClusterNetworkPolicy types), never from the translation: a pod is isolated for a direction
only when a NetworkPolicy selecting it has that policyType; policies are additive; a connection
needs the source's egress and the destination's ingress to allow it; admin policies go first
by priority (Allow/Accept and Deny final, Pass to NetworkPolicy), baseline ones only apply to
pods that no NetworkPolicy isolates in that direction; with no policy everything is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from tagwall.evaluator import make_flow, reach, trace
from tagwall.model import Config, load, parse_documents, parse_flow_service

EXAMPLE = Path(__file__).parents[2] / "examples" / "kubernetes" / "shop.yaml"
Obj = Mapping[str, object]


# -- building clusters ----------------------------------------------------------------------


def namespace(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ref: str, ip: str, ports: Mapping[str, int] | None = None, **labels: str) -> Obj:
    """``pod("ns/name", "10.0.0.1", {"http": 8080}, app="web")``; UDP ports end in ``/udp``."""
    ns, name = ref.split("/")
    container_ports = [
        {"name": key.split("/")[0], "containerPort": port, "protocol": "UDP"}
        if key.endswith("/udp")
        else {"name": key, "containerPort": port}
        for key, port in (ports or {}).items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": container_ports}]},
        "status": {"podIP": ip},
    }


def netpol(ref: str, spec: Mapping[str, object]) -> Obj:
    ns, name = ref.split("/")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": dict(spec),
    }


def admin(kind: str, name: str, spec: Mapping[str, object]) -> Obj:
    version = "v1alpha2" if kind == "ClusterNetworkPolicy" else "v1alpha1"
    return {
        "apiVersion": f"policy.networking.k8s.io/{version}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def anp(name: str, priority: int, subject: Obj, **rules: object) -> Obj:
    return admin("AdminNetworkPolicy", name, {"priority": priority, "subject": subject, **rules})


def banp(subject: Obj, **rules: object) -> Obj:
    return admin("BaselineAdminNetworkPolicy", "default", {"subject": subject, **rules})


def cluster(*objects: Obj) -> Config:
    text = yaml.safe_dump_all([dict(o) for o in objects])
    return load(parse_documents(text, "k8s.yaml"))


def allowed(config: Config, src: str, dst: str, service: str = "tcp/80") -> bool:
    return trace(config, make_flow(config, src, dst, service)).allowed


def outcomes(config: Config, cases: Sequence[tuple[str, str, str]]) -> list[bool]:
    return [allowed(config, *case) for case in cases]


ALL_NS: Obj = {"namespaces": {}}
SEL = {"matchLabels": {"app": "db"}}

# Two namespaces, three pods each side of most tests.
BASE = (
    namespace("prod", env="prod"),
    namespace("dev", env="dev"),
    pod("prod/web", "10.0.0.1", {"http": 8080}, app="web"),
    pod("prod/db", "10.0.0.2", {"pg": 5432, "dns/udp": 53}, app="db"),
    pod("dev/web", "10.0.1.1", {"http": 9000}, app="web"),
)
OUTSIDE = "203.0.113.7"


# -- NetworkPolicy --------------------------------------------------------------------------


def test_without_policies_everything_is_allowed() -> None:
    config = cluster(*BASE)
    matrix = reach(config, parse_flow_service("tcp/80"))
    assert all(all(row.values()) for row in matrix.values())
    assert allowed(config, OUTSIDE, "prod/db") and allowed(config, "prod/db", OUTSIDE)


def test_isolation_is_per_direction_and_per_selected_pod() -> None:
    """An ingress-only policy isolates the selected pod's ingress; nothing else changes."""
    config = cluster(*BASE, netpol("prod/deny", {"podSelector": SEL, "policyTypes": ["Ingress"]}))
    assert not allowed(config, "prod/web", "prod/db")
    assert not allowed(config, OUTSIDE, "prod/db")
    assert allowed(config, "prod/db", "prod/web")  # db's egress is not isolated
    assert allowed(config, "prod/db", OUTSIDE)
    assert allowed(config, "dev/web", "prod/web")  # web is selected by nothing


def test_egress_isolation() -> None:
    config = cluster(*BASE, netpol("prod/deny", {"podSelector": SEL, "policyTypes": ["Egress"]}))
    assert not allowed(config, "prod/db", "prod/web")
    assert not allowed(config, "prod/db", OUTSIDE)
    assert allowed(config, "prod/web", "prod/db")  # ingress of db is not isolated


def test_policies_are_additive() -> None:
    from_web = {"podSelector": {"matchLabels": {"app": "web"}}}
    from_dev = {"namespaceSelector": {"matchLabels": {"env": "dev"}}}
    config = cluster(
        *BASE,
        pod("prod/batch", "10.0.0.3", app="batch"),
        netpol("prod/a", {"podSelector": SEL, "ingress": [{"from": [from_web]}]}),
        netpol("prod/b", {"podSelector": SEL, "ingress": [{"from": [from_dev]}]}),
    )
    assert allowed(config, "prod/web", "prod/db")
    assert allowed(config, "dev/web", "prod/db")
    assert not allowed(config, "prod/batch", "prod/db")


def test_both_ends_must_allow() -> None:
    """Egress of the source and ingress of the destination are both required."""
    config = cluster(
        *BASE,
        netpol(
            "prod/web-out",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 5432}]}],
            },
        ),
        netpol(
            "prod/db-in",
            {
                "podSelector": SEL,
                "ingress": [
                    {"from": [{"namespaceSelector": {}}], "ports": [{"port": 5432}, {"port": 6432}]}
                ],
            },
        ),
    )
    assert allowed(config, "prod/web", "prod/db", "tcp/5432")
    assert not allowed(config, "prod/web", "prod/db", "tcp/6432")  # web's egress refuses
    assert allowed(config, "dev/web", "prod/db", "tcp/6432")
    assert not allowed(config, OUTSIDE, "prod/db", "tcp/5432")  # db's ingress refuses


def test_pod_selector_peer_means_the_policys_own_namespace() -> None:
    config = cluster(
        *BASE,
        netpol(
            "prod/p",
            {
                "podSelector": SEL,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        ),
    )
    assert allowed(config, "prod/web", "prod/db")
    assert not allowed(config, "dev/web", "prod/db")  # same labels, other namespace


def test_namespace_and_pod_selector_in_one_peer_versus_two_peers() -> None:
    """The documentation's AND-versus-OR example."""
    both = {
        "namespaceSelector": {"matchLabels": {"env": "dev"}},
        "podSelector": {"matchLabels": {"app": "web"}},
    }
    either = [
        {"namespaceSelector": {"matchLabels": {"env": "dev"}}},
        {"podSelector": {"matchLabels": {"app": "web"}}},
    ]
    objs = (*BASE, pod("dev/tool", "10.0.1.2", app="tool"))
    cases = [
        ("dev/web", "prod/db", "tcp/80"),
        ("dev/tool", "prod/db", "tcp/80"),
        ("prod/web", "prod/db", "tcp/80"),
    ]
    and_config = cluster(
        *objs, netpol("prod/p", {"podSelector": SEL, "ingress": [{"from": [both]}]})
    )
    or_config = cluster(
        *objs, netpol("prod/p", {"podSelector": SEL, "ingress": [{"from": either}]})
    )
    assert outcomes(and_config, cases) == [True, False, False]
    assert outcomes(or_config, cases) == [True, True, True]


def test_empty_namespace_selector_means_every_pod_but_no_outside_address() -> None:
    config = cluster(
        *BASE,
        netpol("prod/p", {"podSelector": SEL, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )
    assert allowed(config, "dev/web", "prod/db") and allowed(config, "prod/web", "prod/db")
    assert not allowed(config, OUTSIDE, "prod/db")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            [True, True, False, False],
        ),
        ({"key": "tier", "operator": "NotIn", "values": ["front"]}, [False, True, True, True]),
        ({"key": "tier", "operator": "Exists"}, [True, True, True, False]),
        ({"key": "tier", "operator": "DoesNotExist"}, [False, False, False, True]),
    ],
)
def test_match_expressions(expression: Obj, expected: list[bool]) -> None:
    config = cluster(
        *BASE,
        pod("prod/a", "10.0.0.11", tier="front"),
        pod("prod/b", "10.0.0.12", tier="edge"),
        pod("prod/c", "10.0.0.13", tier="back"),
        pod("prod/d", "10.0.0.14"),
        netpol(
            "prod/p",
            {
                "podSelector": SEL,
                "ingress": [{"from": [{"podSelector": {"matchExpressions": [expression]}}]}],
            },
        ),
    )
    sources = ["prod/a", "prod/b", "prod/c", "prod/d"]
    assert [allowed(config, s, "prod/db") for s in sources] == expected


def test_namespace_labels_select_through_namespace_selector_only() -> None:
    """A namespace label never matches as a pod label, and the other way round."""
    config = cluster(
        *BASE,
        pod("prod/envpod", "10.0.0.21", env="dev"),
        netpol(
            "prod/p",
            {
                "podSelector": SEL,
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}}]}],
            },
        ),
    )
    assert allowed(config, "dev/web", "prod/db")
    assert not allowed(config, "prod/envpod", "prod/db")


def test_ip_block_with_except() -> None:
    config = cluster(
        *BASE,
        netpol(
            "prod/p",
            {
                "podSelector": SEL,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}
                        ]
                    }
                ],
                "egress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}],
            },
        ),
    )
    assert allowed(config, "203.0.113.7", "prod/db")
    assert not allowed(config, "203.0.113.200", "prod/db")  # in the except
    assert not allowed(config, "192.0.2.1", "prod/db")
    assert allowed(config, "prod/db", "198.51.100.9")
    assert not allowed(config, "prod/db", "192.0.2.1")


def test_named_port_is_resolved_on_the_destination_pod() -> None:
    config = cluster(
        *BASE,
        netpol(
            "prod/p",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "http"}]}],
            },
        ),
        netpol("dev/p", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )
    # prod/web's egress allows "http": 9000 on dev/web (its http), not 8080 (web's own http)
    assert allowed(config, "prod/web", "dev/web", "tcp/9000")
    assert not allowed(config, "prod/web", "dev/web", "tcp/8080")
    assert not allowed(config, "prod/web", "prod/db", "tcp/8080")  # db has no http port
    assert not allowed(config, OUTSIDE, "dev/web", "tcp/8080")


def test_end_port_range_is_inclusive() -> None:
    config = cluster(
        *BASE,
        netpol(
            "prod/p",
            {"podSelector": SEL, "ingress": [{"ports": [{"port": 32000, "endPort": 32768}]}]},
        ),
    )
    results = [
        allowed(config, OUTSIDE, "prod/db", f"tcp/{p}") for p in (31999, 32000, 32768, 32769)
    ]
    assert results == [False, True, True, False]


def test_protocols_udp_sctp_and_protocol_without_port() -> None:
    config = cluster(
        *BASE,
        netpol(
            "prod/p",
            {
                "podSelector": SEL,
                "ingress": [
                    {
                        "ports": [
                            {"protocol": "UDP", "port": 53},
                            {"protocol": "SCTP", "port": 9999},
                        ]
                    },
                    {"ports": [{"protocol": "UDP", "port": "dns"}]},
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "UDP"}],
                    },
                ],
            },
        ),
    )
    assert allowed(config, OUTSIDE, "prod/db", "udp/53")
    assert not allowed(config, OUTSIDE, "prod/db", "tcp/53")
    assert allowed(config, OUTSIDE, "prod/db", "sctp/9999")
    assert not allowed(config, OUTSIDE, "prod/db", "udp/9999")
    assert allowed(config, "prod/web", "prod/db", "udp/4242")  # every UDP port
    assert not allowed(config, "prod/web", "prod/db", "tcp/4242")


@pytest.mark.parametrize(
    ("spec", "ingress_isolated", "egress_isolated"),
    [
        ({"podSelector": SEL}, True, False),
        ({"podSelector": SEL, "egress": []}, True, False),
        ({"podSelector": SEL, "egress": [{"ports": [{"port": 5432}]}]}, True, True),
        ({"podSelector": SEL, "policyTypes": ["Egress"], "ingress": [{}]}, False, True),
        ({"podSelector": SEL, "policyTypes": ["Ingress", "Egress"], "ingress": [{}]}, False, True),
    ],
)
def test_policy_types_defaulting(spec: Obj, ingress_isolated: bool, egress_isolated: bool) -> None:
    config = cluster(*BASE, netpol("prod/p", spec))
    assert allowed(config, "prod/web", "prod/db") is not ingress_isolated
    assert allowed(config, "prod/db", "prod/web") is not egress_isolated


def test_allow_all_rule_and_empty_from() -> None:
    allow_all = cluster(*BASE, netpol("prod/p", {"podSelector": SEL, "ingress": [{}]}))
    empty_from = cluster(*BASE, netpol("prod/p", {"podSelector": SEL, "ingress": [{"from": []}]}))
    for config in (allow_all, empty_from):
        assert allowed(config, OUTSIDE, "prod/db", "tcp/1") and allowed(
            config, "dev/web", "prod/db"
        )


# -- AdminNetworkPolicy, BaselineAdminNetworkPolicy -----------------------------------------

PROD: Obj = {"namespaces": {"matchLabels": {"env": "prod"}}}
FROM_DEV = [{"namespaces": {"matchLabels": {"env": "dev"}}}]
DENY_ALL_INGRESS = netpol("prod/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_ALL_INGRESS = netpol("prod/allow", {"podSelector": {}, "ingress": [{}]})


def test_anp_allow_overrides_network_policy_deny() -> None:
    config = cluster(
        *BASE, DENY_ALL_INGRESS, anp("a", 10, PROD, ingress=[{"action": "Allow", "from": FROM_DEV}])
    )
    assert allowed(config, "dev/web", "prod/db")
    assert not allowed(config, "prod/web", "prod/db")  # not matched: the NetworkPolicy decides


def test_anp_deny_overrides_network_policy_allow() -> None:
    config = cluster(
        *BASE, ALLOW_ALL_INGRESS, anp("a", 10, PROD, ingress=[{"action": "Deny", "from": FROM_DEV}])
    )
    assert not allowed(config, "dev/web", "prod/db")
    assert allowed(config, "prod/web", "prod/db")


def test_anp_pass_hands_over_to_network_policy_then_baseline() -> None:
    passing = anp(
        "a",
        10,
        PROD,
        ingress=[{"action": "Pass", "from": FROM_DEV}, {"action": "Allow", "from": [ALL_NS]}],
    )
    baseline = banp(PROD, ingress=[{"action": "Deny", "from": FROM_DEV}])
    with_np = cluster(*BASE, passing, baseline, DENY_ALL_INGRESS)
    without_np = cluster(*BASE, passing, baseline)
    assert not allowed(with_np, "dev/web", "prod/db")  # passed, NetworkPolicy isolates
    assert allowed(with_np, "prod/web", "prod/db")  # the later Allow rule
    assert not allowed(without_np, "dev/web", "prod/db")  # passed, no NP, baseline denies
    no_baseline = cluster(*BASE, passing)
    assert allowed(no_baseline, "dev/web", "prod/db")  # passed all the way: default allow


def test_anp_lower_priority_value_wins() -> None:
    deny = {"action": "Deny", "from": FROM_DEV}
    allow = {"action": "Allow", "from": FROM_DEV}
    first = cluster(
        *BASE, anp("z-deny", 5, PROD, ingress=[deny]), anp("a-allow", 50, PROD, ingress=[allow])
    )
    second = cluster(
        *BASE, anp("z-deny", 50, PROD, ingress=[deny]), anp("a-allow", 5, PROD, ingress=[allow])
    )
    assert not allowed(first, "dev/web", "prod/db")
    assert allowed(second, "dev/web", "prod/db")


def test_anp_rules_in_written_order_and_per_direction() -> None:
    config = cluster(
        *BASE,
        anp(
            "a",
            10,
            PROD,
            egress=[
                {
                    "action": "Allow",
                    "to": [{"networks": ["198.51.100.0/24"]}],
                    "ports": [{"portNumber": {"protocol": "TCP", "port": 443}}],
                },
                {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]},
            ],
        ),
    )
    assert allowed(config, "prod/web", "198.51.100.1", "tcp/443")
    assert not allowed(config, "prod/web", "198.51.100.1", "tcp/80")
    assert not allowed(config, "prod/web", "dev/web")  # networks also match pod addresses
    assert allowed(config, "dev/web", "prod/web")  # the ANP has no ingress rules


def test_anp_ports_named_and_range() -> None:
    config = cluster(
        *BASE,
        anp(
            "a",
            10,
            {"namespaces": {}},
            ingress=[
                {
                    "action": "Allow",
                    "from": [ALL_NS],
                    "ports": [
                        {"namedPort": "http"},
                        {"portRange": {"protocol": "TCP", "start": 7000, "end": 7100}},
                    ],
                },
                {"action": "Deny", "from": [ALL_NS]},
            ],
        ),
    )
    assert allowed(config, "prod/db", "prod/web", "tcp/8080")  # web's http
    assert allowed(config, "prod/db", "dev/web", "tcp/9000")  # dev/web's http
    assert not allowed(config, "prod/db", "dev/web", "tcp/8080")
    assert allowed(config, "prod/db", "dev/web", "tcp/7100")
    assert not allowed(config, "prod/db", "dev/web", "tcp/7101")


def test_anp_pods_subject() -> None:
    subject = {"pods": {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": SEL}}
    config = cluster(*BASE, anp("a", 10, subject, ingress=[{"action": "Deny", "from": [ALL_NS]}]))
    assert not allowed(config, "dev/web", "prod/db")
    assert allowed(config, "dev/web", "prod/web")


def test_namespace_peers_never_match_a_bare_address_even_one_carrying_labels() -> None:
    """Peers select pods; an all-negative namespace selector must not catch an outside IP."""
    partners = {
        "apiVersion": "tagwall/v1",
        "kind": "AddressGroup",
        "metadata": {"name": "partners"},
        "spec": {"prefixes": ["203.0.113.0/24"], "labels": ["partner"]},
    }
    not_dev = {
        "namespaces": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}
    }
    config = cluster(
        *BASE, partners, anp("a", 10, PROD, ingress=[{"action": "Deny", "from": [not_dev]}])
    )
    assert allowed(config, OUTSIDE, "prod/db")
    assert not allowed(config, "prod/web", "prod/db")
    assert allowed(config, "dev/web", "prod/db")


def test_banp_applies_only_where_no_network_policy_isolates_that_direction() -> None:
    ingress_np = netpol(
        "prod/in", {"podSelector": SEL, "ingress": [{"from": [{"namespaceSelector": {}}]}]}
    )
    config = cluster(
        *BASE,
        ingress_np,
        banp(
            {"namespaces": {}},
            ingress=[{"action": "Deny", "from": FROM_DEV}],
            egress=[{"action": "Deny", "to": FROM_DEV}],
        ),
    )
    assert allowed(config, "dev/web", "prod/db")  # db's ingress is decided by its NP
    assert not allowed(config, "dev/web", "prod/web")  # web: no NP, baseline denies
    assert not allowed(config, "prod/db", "dev/web")  # db's NP is ingress-only: egress baseline
    assert allowed(config, "prod/web", "prod/db")  # nothing denies prod → prod


def test_banp_allow_then_deny() -> None:
    config = cluster(
        *BASE,
        banp(
            PROD,
            egress=[
                {"action": "Allow", "to": [ALL_NS]},
                {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]},
            ],
        ),
    )
    assert allowed(config, "prod/web", "dev/web")
    assert not allowed(config, "prod/web", OUTSIDE)
    assert allowed(config, "dev/web", OUTSIDE)


# -- ClusterNetworkPolicy v1alpha2 ----------------------------------------------------------


def cnp(name: str, tier: str, priority: int, subject: Obj, **rules: object) -> Obj:
    spec = {"tier": tier, "priority": priority, "subject": subject, **rules}
    return admin("ClusterNetworkPolicy", name, spec)


def test_cnp_admin_tier_accept_deny_pass() -> None:
    config = cluster(
        *BASE,
        DENY_ALL_INGRESS,
        cnp(
            "c",
            "Admin",
            10,
            PROD,
            ingress=[
                {
                    "action": "Accept",
                    "from": FROM_DEV,
                    "protocols": [{"tcp": {"destinationPort": {"number": 5432}}}],
                },
                {
                    "action": "Deny",
                    "from": FROM_DEV,
                    "protocols": [
                        {"udp": {"destinationPort": {"range": {"start": 50, "end": 60}}}}
                    ],
                },
                {"action": "Pass", "from": FROM_DEV},
                {"action": "Accept", "from": [ALL_NS]},
            ],
        ),
    )
    assert allowed(config, "dev/web", "prod/db", "tcp/5432")
    assert not allowed(config, "dev/web", "prod/db", "udp/53")
    assert not allowed(config, "dev/web", "prod/db", "tcp/80")  # passed to the deny-all NP
    assert allowed(config, "prod/web", "prod/db", "tcp/80")


def test_cnp_baseline_tier_comes_after_network_policy() -> None:
    baseline = cnp(
        "c", "Baseline", 10, {"namespaces": {}}, ingress=[{"action": "Deny", "from": FROM_DEV}]
    )
    config = cluster(*BASE, pod("dev/tool", "10.0.1.2"), ALLOW_ALL_INGRESS, baseline)
    assert allowed(config, "dev/web", "prod/db")  # prod pods are decided by their NP
    assert not allowed(config, "dev/tool", "dev/web")  # dev/web has no NP: baseline denies
    assert allowed(config, "prod/web", "dev/web")  # prod is not dev


def test_cnp_pass_in_the_baseline_tier_falls_to_the_default_allow() -> None:
    baseline = cnp(
        "c",
        "Baseline",
        10,
        {"namespaces": {}},
        ingress=[{"action": "Pass", "from": FROM_DEV}, {"action": "Deny", "from": [ALL_NS]}],
    )
    config = cluster(*BASE, baseline)
    assert allowed(config, "dev/web", "prod/db")
    assert not allowed(config, "prod/web", "prod/db")


# -- the example ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "service", "expected"),
    [
        ("203.0.113.9", "shop/web-1", "tcp/80", True),  # allow-web: from anywhere on 80
        ("203.0.113.9", "shop/web-1", "tcp/22", False),  # default-deny-ingress
        ("shop/web-1", "shop/api-1", "tcp/8080", True),  # api's named port http
        ("shop/web-1", "shop/db-1", "tcp/5432", False),  # only api may reach db
        ("shop/api-1", "shop/db-1", "tcp/5432", True),
        ("shop/db-1", "shop/api-1", "tcp/8080", False),  # db's egress: []
        ("monitoring/prometheus-0", "shop/api-1", "tcp/9090", True),  # ANP Allow beats deny
        ("monitoring/prometheus-0", "shop/api-1", "tcp/8080", False),  # ANP Deny others
        ("sandbox/toy-1", "shop/web-1", "tcp/80", False),  # ANP Deny beats allow-web
        ("sandbox/toy-1", "198.51.100.1", "tcp/443", False),  # BANP: nothing else
        ("sandbox/toy-1", "monitoring/prometheus-0", "tcp/9090", True),  # BANP: cluster pods
    ],
)
def test_example(src: str, dst: str, service: str, expected: bool) -> None:
    config = load(parse_documents(EXAMPLE.read_text(), str(EXAMPLE)))
    assert allowed(config, src, dst, service) is expected
