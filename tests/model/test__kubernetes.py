"""Kubernetes import, translation level: each construct → the native manifests it becomes.

What these manifests *mean* is tested from the Kubernetes documentation in
``test_kubernetes_semantics.py``; here the shapes, names, defaults and problems are pinned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from tagwall.errors import Problem, ValidationError
from tagwall.model import KUBERNETES_KINDS, Document, load, parse_documents, translate

EXAMPLE = Path(__file__).parents[2] / "examples" / "kubernetes" / "shop.yaml"
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")


def run(text: str) -> list[Document]:
    return translate(parse_documents(text, "k8s.yaml"))


def bodies(text: str, kind: str | None = None) -> list[Mapping[str, object]]:
    return [d.body for d in run(text) if kind is None or d.kind == kind]


def by_name(text: str, kind: str) -> dict[str, Mapping[str, object]]:
    return {d.name: d.body for d in run(text) if d.kind == kind}


def problems(text: str) -> list[Problem]:
    with pytest.raises(ValidationError) as info:
        run(text)
    return list(info.value.problems)


def paths(text: str) -> list[str]:
    return [p.path for p in problems(text)]


def np(spec: str, name: str = "p", namespace: str = "app") -> str:
    return (
        f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )


def anp(spec: str, name: str = "guard", kind: str = "AdminNetworkPolicy") -> str:
    return (
        f"apiVersion: policy.networking.k8s.io/v1alpha1\nkind: {kind}\n"
        f"metadata: {{name: {name}}}\nspec:\n{spec}"
    )


def cnp(spec: str, name: str = "guard") -> str:
    return (
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n"
        f"metadata: {{name: {name}}}\nspec:\n{spec}"
    )


def dig(body: Mapping[str, object], *keys: str) -> object:
    """``body[k1][k2]...`` for manifests typed as plain objects."""
    value: object = body
    for key in keys:
        assert isinstance(value, dict)
        value = value[key]
    return value


def set_spec(text: str, name: str) -> dict[str, object]:
    """The spec of the generated ApplicationPolicySet ``name``."""
    spec = dig(by_name(text, "ApplicationPolicySet")[name], "spec")
    assert isinstance(spec, dict)
    return spec


def rules(text: str, policy: str) -> list[Mapping[str, object]]:
    spec = by_name(text, "FirewallPolicy")[policy]["spec"]
    assert isinstance(spec, dict)
    found = spec["rules"]
    assert isinstance(found, list)
    return found


# -- kinds, pass-through, bookkeeping -------------------------------------------------------


def test_accepted_kinds() -> None:
    assert {
        "Namespace",
        "Pod",
        "NetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
    } == KUBERNETES_KINDS


def test_native_documents_pass_through_untouched_and_in_place() -> None:
    docs = parse_documents(
        "apiVersion: tagwall/v1\nkind: TagType\nmetadata: {name: team}\n---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
        "apiVersion: tagwall/v1\nkind: Project\nmetadata: {name: b}\n",
        "mixed.yaml",
    )
    out = translate(docs)
    assert out[-3] is docs[0] and out[-1] is docs[2]
    assert out[-2].kind == "Project" and out[-2].name == "a"
    assert translate([docs[0], docs[2]]) == [docs[0], docs[2]]


def test_generated_documents_keep_source_and_index_of_their_kubernetes_document() -> None:
    docs = run(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n" + np("  podSelector: {}\n")
    )
    where = {(d.kind, d.name): d.where for d in docs}
    assert where[("Project", "a")] == "k8s.yaml#0"
    assert where[("FirewallPolicy", "np.ingress.p")] == "k8s.yaml#1"
    assert where[("ApplicationPolicySet", "np.ingress.p")] == "k8s.yaml#1"
    assert where[("Project", "app")] == "k8s.yaml#1"  # implied by the policy's namespace


def test_namespace_becomes_project_with_ns_tags_and_its_name_label() -> None:
    text = (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
        "  labels: {team: red, kubernetes.io/metadata.name: shop}\n"
    )
    assert bodies(text, "Project") == [
        {
            "apiVersion": "tagwall/v1",
            "kind": "Project",
            "metadata": {"name": "shop"},
            "spec": {"tags": {"ns:kubernetes.io/metadata.name": "shop", "ns:team": "red"}},
        }
    ]
    assert [b["metadata"] for b in bodies(text, "TagType")] == [
        {"name": "ns:kubernetes.io/metadata.name"},
        {"name": "ns:team"},
    ]


def test_pod_becomes_workload() -> None:
    text = """
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, project: x, label: pci, tier: front}
spec:
  nodeName: node-1
  containers:
  - name: a
    ports: [{name: http, containerPort: 8080}, {containerPort: 9000}]
  - name: b
    ports: [{name: dns, containerPort: 53, protocol: UDP}]
status:
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]
"""
    (workload,) = bodies(text, "Workload")
    assert workload == {
        "apiVersion": "tagwall/v1",
        "kind": "Workload",
        "metadata": {"name": "shop/web-1", "project": "shop"},
        "spec": {
            "kind": "container",
            "host": "node-1",
            "interfaces": [{"name": "eth0", "ips": ["10.0.0.1", "fd00::1"]}],
            "ports": [
                {"name": "http", "port": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
            "tags": {"app": "web", "k8s:project": "x", "label": ["pci"], "tier": "front"},
        },
    }
    # built-in types (label, tier) need no declaration; the pod's namespace gets a project
    assert {dig(b, "metadata", "name") for b in bodies(text, "TagType")} == {
        "app",
        "k8s:project",
        "ns:kubernetes.io/metadata.name",
    }
    assert by_name(text, "Project")["shop"]["spec"] == {
        "tags": {"ns:kubernetes.io/metadata.name": "shop"}
    }


def test_pod_defaults_to_namespace_default_and_single_pod_ip() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.9}\n"
    (workload,) = bodies(text, "Workload")
    assert workload["metadata"] == {"name": "default/p", "project": "default"}
    assert workload["spec"] == {
        "kind": "container",
        "interfaces": [{"name": "eth0", "ips": ["10.0.0.9"]}],
    }


@pytest.mark.parametrize(
    "extra", ["spec: {hostNetwork: true}", "status: {podIP: 10.0.0.9, phase: Succeeded}"]
)
def test_host_network_and_finished_pods_hold_no_address(extra: str) -> None:
    text = f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n{extra}\n"
    assert bodies(text, "Workload")[0]["spec"] == {"kind": "container"}


def test_native_declarations_suppress_generated_ones() -> None:
    text = (
        "apiVersion: tagwall/v1\nkind: TagType\nmetadata: {name: app}\n---\n"
        "apiVersion: tagwall/v1\nkind: Project\nmetadata: {name: default}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: a}}\n"
    )
    kinds = [(d.kind, d.name, d.body["apiVersion"]) for d in run(text)]
    assert kinds == [
        ("TagType", "app", "tagwall/v1"),
        ("Project", "default", "tagwall/v1"),
        ("Workload", "default/p", "tagwall/v1"),
    ]


# -- NetworkPolicy --------------------------------------------------------------------------


def test_network_policy_manifests() -> None:
    text = np(
        """  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    - namespaceSelector: {matchLabels: {team: ops}}
    - namespaceSelector: {matchLabels: {team: ops}}
      podSelector: {matchLabels: {app: prom}}
    - ipBlock: {cidr: 10.1.0.0/16, except: [10.1.2.0/24]}
    ports: [{port: 5432}, {protocol: UDP, port: dns}, {port: 30000, endPort: 30100},
            {protocol: SCTP}]
""",
        name="db",
        namespace="shop",
    )
    docs = bodies(text)
    policy, policy_set = (b for b in docs if b["kind"] != "TagType" and b["kind"] != "Project")
    services = ["tcp/5432", "udp/dns", "tcp/30000-30100", "sctp"]
    assert policy == {
        "apiVersion": "tagwall/v1",
        "kind": "FirewallPolicy",
        "metadata": {"name": "np.ingress.db", "project": "shop"},
        "spec": {
            "rules": [
                {
                    "name": f"rule-1.from-{j}",
                    "sequence": 10 * j,
                    "from": peer,
                    "to": {"any": True},
                    "services": services,
                    "action": "allow",
                }
                for j, peer in enumerate(
                    [
                        {"tags": "app=api,project=shop"},
                        {"tags": "ns:team=ops"},
                        {"tags": "ns:team=ops,app=prom"},
                        {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]},
                    ],
                    1,
                )
            ]
        },
    }
    assert policy_set == {
        "apiVersion": "tagwall/v1",
        "kind": "ApplicationPolicySet",
        "metadata": {"name": "np.ingress.db", "project": "shop"},
        "spec": {
            "tier": "application",
            "selector": "app=db,project=shop",
            "directions": ["ingress"],
            "policies": [{"name": "np.ingress.db", "sequence": 10}],
        },
    }


def test_network_policy_egress_rules_put_the_peer_in_to() -> None:
    text = np(
        "  podSelector: {}\n  policyTypes: [Egress]\n"
        "  egress:\n  - to: [{podSelector: {}}]\n  - ports: [{port: 53, protocol: UDP}]\n"
    )
    assert set(by_name(text, "FirewallPolicy")) == {"np.egress.p"}
    assert rules(text, "np.egress.p") == [
        {
            "name": "rule-1",
            "sequence": 10,
            "from": {"any": True},
            "to": {"tags": "project=app"},
            "action": "allow",
        },
        {
            "name": "rule-2",
            "sequence": 20,
            "from": {"any": True},
            "to": {"any": True},
            "services": ["udp/53"],
            "action": "allow",
        },
    ]
    aps = set_spec(text, "np.egress.p")
    assert aps["selector"] == "ns:kubernetes.io/metadata.name"
    assert aps["directions"] == ["egress"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("  podSelector: {}\n", {"np.ingress.p"}),
        ("  podSelector: {}\n  egress: []\n", {"np.ingress.p"}),
        ("  podSelector: {}\n  egress: [{}]\n", {"np.ingress.p", "np.egress.p"}),
        ("  podSelector: {}\n  policyTypes: []\n  egress: [{}]\n", {"np.ingress.p", "np.egress.p"}),
        ("  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n", {"np.egress.p"}),
        ("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n", {"np.ingress.p", "np.egress.p"}),
    ],
)
def test_policy_types_default_as_kubernetes_does(spec: str, expected: set[str]) -> None:
    assert set(by_name(np(spec), "ApplicationPolicySet")) == expected


def test_isolating_policy_has_no_rules() -> None:
    text = np("  podSelector: {}\n  policyTypes: [Ingress]\n")
    assert by_name(text, "FirewallPolicy")["np.ingress.p"]["spec"] == {"rules": []}


def test_empty_rule_allows_everything() -> None:
    text = np("  podSelector: {}\n  ingress: [{}]\n")
    assert rules(text, "np.ingress.p") == [
        {
            "name": "rule-1",
            "sequence": 10,
            "from": {"any": True},
            "to": {"any": True},
            "action": "allow",
        }
    ]


def test_match_expressions_and_empty_selectors() -> None:
    text = np(
        """  podSelector:
    matchLabels: {project: x}
    matchExpressions:
    - {key: tier, operator: In, values: [b, a]}
    - {key: env, operator: NotIn, values: [dev]}
    - {key: env, operator: NotIn, values: [qa, dev]}
    - {key: canary, operator: Exists}
    - {key: legacy, operator: DoesNotExist}
    - {key: one, operator: In, values: [only]}
  ingress:
  - from:
    - namespaceSelector: {}
    - {namespaceSelector: {}, podSelector: {}}
    - podSelector: {}
    - namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}
    - namespaceSelector: {matchExpressions: [{key: env, operator: Exists}]}
      podSelector: {matchExpressions: [{key: x, operator: DoesNotExist}]}
"""
    )
    aps = set_spec(text, "np.ingress.p")
    assert aps["selector"] == (
        "k8s:project=x,tier in (a,b),env!=dev,env notin (dev,qa),canary,!legacy,one=only,"
        "project=app"
    )
    assert [r["from"] for r in rules(text, "np.ingress.p")] == [
        {"tags": "ns:kubernetes.io/metadata.name"},
        {"tags": "ns:kubernetes.io/metadata.name"},
        {"tags": "project=app"},
        {"tags": "ns:env!=dev,ns:kubernetes.io/metadata.name"},  # all-negative: limited to pods
        {"tags": "ns:env,!x"},
    ]


# -- admin-style policies -------------------------------------------------------------------


ANP = anp(
    """  priority: 10
  subject:
    pods:
      namespaceSelector: {matchLabels: {team: red}}
      podSelector: {matchLabels: {app: db}}
  ingress:
  - name: allow-ops
    action: Allow
    from:
    - namespaces: {matchLabels: {team: ops}}
    - pods: {namespaceSelector: {}, podSelector: {}}
    ports: [{portNumber: {protocol: TCP, port: 5432}}, {namedPort: metrics},
            {portRange: {protocol: UDP, start: 100, end: 200}}]
  - action: Pass
    from: [{namespaces: {matchLabels: {team: red}}}]
  - {name: "Deny everyone else", action: Deny, from: [{namespaces: {}}]}
  egress:
  - name: no-metadata
    action: Deny
    to: [{networks: [169.254.169.254/32, "fd00::/8"]}]
"""
)


def test_admin_network_policy_manifests() -> None:
    sets = by_name(ANP, "ApplicationPolicySet")
    assert sets == {
        f"anp.{d}.guard": {
            "apiVersion": "tagwall/v1",
            "kind": "ApplicationPolicySet",
            "metadata": {"name": f"anp.{d}.guard"},
            "spec": {
                "tier": "admin",
                "priority": 10,
                "selector": "ns:team=red,app=db",
                "directions": [d],
                "policies": [{"name": f"anp.{d}.guard", "sequence": 10}],
            },
        }
        for d in ("ingress", "egress")
    }
    assert rules(ANP, "anp.ingress.guard") == [
        {
            "name": f"allow-ops.from-{j}",
            "sequence": 10 * j,
            "from": peer,
            "to": {"any": True},
            "services": ["tcp/5432", "metrics", "udp/100-200"],
            "action": "allow",
        }
        for j, peer in enumerate(
            [{"tags": "ns:team=ops"}, {"tags": "ns:kubernetes.io/metadata.name"}], 1
        )
    ] + [
        {
            "name": "rule-2",
            "sequence": 30,
            "from": {"tags": "ns:team=red"},
            "to": {"any": True},
            "action": "pass",
        },
        {  # a Kubernetes rule name that is not a valid native name falls back to rule-<i>
            "name": "rule-3",
            "sequence": 40,
            "from": {"tags": "ns:kubernetes.io/metadata.name"},
            "to": {"any": True},
            "action": "deny",
        },
    ]
    assert [(r["name"], r["to"], r["action"]) for r in rules(ANP, "anp.egress.guard")] == [
        ("no-metadata.to-1", {"cidr": "169.254.169.254/32"}, "deny"),
        ("no-metadata.to-2", {"cidr": "fd00::/8"}, "deny"),
    ]


def test_a_direction_without_rules_gets_no_set() -> None:
    text = anp(
        "  priority: 1\n  subject: {namespaces: {}}\n  egress:\n"
        "  - {action: Allow, to: [{namespaces: {}}]}\n"
    )
    assert set(by_name(text, "ApplicationPolicySet")) == {"anp.egress.guard"}
    spec = set_spec(text, "anp.egress.guard")
    assert spec["selector"] == "ns:kubernetes.io/metadata.name"


def test_baseline_admin_network_policy_is_the_baseline_tier_at_priority_1000() -> None:
    text = anp(
        "  subject: {namespaces: {matchLabels: {team: red}}}\n"
        "  ingress:\n  - {action: Deny, from: [{namespaces: {}}]}\n",
        name="default",
        kind="BaselineAdminNetworkPolicy",
    )
    spec = set_spec(text, "banp.ingress.default")
    assert (spec["tier"], spec["priority"]) == ("baseline", 1000)
    assert [r["action"] for r in rules(text, "banp.ingress.default")] == ["deny"]


@pytest.mark.parametrize(("tier", "native"), [("Admin", "admin"), ("Baseline", "baseline")])
def test_cluster_network_policy_manifests(tier: str, native: str) -> None:
    text = cnp(
        f"""  tier: {tier}
  priority: 7
  subject: {{namespaces: {{}}}}
  egress:
  - name: dns
    action: Accept
    to: [{{pods: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: kube-system}}}},
                   podSelector: {{matchLabels: {{k8s-app: kube-dns}}}}}}}}]
    protocols:
    - udp: {{destinationPort: {{number: 53}}}}
    - tcp: {{destinationPort: {{range: {{start: 53, end: 54}}}}}}
    - sctp: {{}}
    - destinationNamedPort: dns
  - {{action: Pass, to: [{{networks: [10.0.0.0/8]}}]}}
  - {{action: Deny, to: [{{namespaces: {{}}}}]}}
"""
    )
    spec = set_spec(text, "cnp.egress.guard")
    assert (spec["tier"], spec["priority"]) == (native, 7)
    assert [
        (r["name"], r["to"], r.get("services"), r["action"])
        for r in rules(text, "cnp.egress.guard")
    ] == [
        (
            "dns",
            {"tags": "ns:kubernetes.io/metadata.name=kube-system,k8s-app=kube-dns"},
            ["udp/53", "tcp/53-54", "sctp", "dns"],
            "allow",
        ),
        ("rule-2", {"cidr": "10.0.0.0/8"}, None, "pass"),
        ("rule-3", {"tags": "ns:kubernetes.io/metadata.name"}, None, "deny"),
    ]


def test_equal_priorities_run_by_kubernetes_name() -> None:
    """Set names put the direction first, so their order is the Kubernetes names' order."""
    spec = (
        "  priority: 5\n  subject: {namespaces: {}}\n"
        "  ingress: [{action: Deny, from: [{namespaces: {}}]}]\n"
    )
    config = load(parse_documents(anp(spec, "a-b") + "\n---\n" + anp(spec, "a"), "k8s.yaml"))
    ordered = [s.name for s in config.policy_sets_of(next(iter(config.policy_sets.values())).tier)]
    assert ordered == ["anp.ingress.a", "anp.ingress.a-b"]


# -- names and output -----------------------------------------------------------------------


def test_long_names_are_shortened_stably_and_stay_valid() -> None:
    long = "x" * 250
    text = np("  podSelector: {}\n", name=long, namespace="n" * 63)
    names = [d.name for d in run(text) if d.kind != "TagType"]
    assert all(NAME_RE.match(n) for n in names)
    assert names == [d.name for d in run(text) if d.kind != "TagType"]
    pod = f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {long}, namespace: {'n' * 63}}}\n"
    (workload,) = [d.name for d in run(pod) if d.kind == "Workload"]
    assert NAME_RE.match(workload) and workload.startswith("n" * 63 + "/x")


def test_yaml_output_has_no_anchors() -> None:
    text = yaml.safe_dump_all([dict(d.body) for d in run(EXAMPLE.read_text())], sort_keys=False)
    assert "&id" not in text and "*id" not in text


def test_example_translates_and_validates() -> None:
    config = load(parse_documents(EXAMPLE.read_text(), str(EXAMPLE)))
    assert set(config.workloads) == {
        "shop/web-1",
        "shop/api-1",
        "shop/db-1",
        "monitoring/prometheus-0",
        "sandbox/toy-1",
    }
    assert {str(ref) for ref in config.policy_sets} == {
        "shop/np.ingress.default-deny-ingress",
        "shop/np.ingress.allow-web",
        "shop/np.ingress.allow-api-from-web",
        "shop/np.ingress.db",
        "shop/np.egress.db",
        "anp.ingress.shop-guardrails",
        "banp.egress.default",
    }


def test_every_construct_validates() -> None:
    """Everything the tests above generate is accepted by the validator as one config."""
    pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: app, labels: {app: x}}\n"
    text = "\n---\n".join([pods, ANP, np("  podSelector: {}\n  egress: [{}]\n")])
    load(parse_documents(text, "k8s.yaml"))


# -- problems -------------------------------------------------------------------------------


def test_problems_name_source_kind_name_path_and_value() -> None:
    text = np(
        "  podSelector: {}\n  ingress:\n  - ports: [{port: HTTP}, {port: http, endPort: 90}]\n",
        name="bad",
        namespace="shop",
    )
    first, second = problems(text)
    assert (first.source, first.kind, first.name, first.path, first.value) == (
        "k8s.yaml#0",
        "NetworkPolicy",
        "shop/bad",
        "spec.ingress[0].ports[0].port",
        "HTTP",
    )
    assert (second.path, second.value) == ("spec.ingress[0].ports[1].endPort", 90)


def test_all_problems_are_collected_across_documents() -> None:
    text = "\n---\n".join(
        [
            np(
                "  podSelector: {matchExpressions: [{key: a, operator: Like, values: [x]}]}\n"
                "  policyTypes: [Both]\n  ingress:\n"
                "  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}, {}]\n"
                "    ports: [{protocol: ICMP}, {port: 0}, {port: 90, endPort: 80}]\n"
                "  bogus: 1\n"
            ),
            anp(
                "  priority: 2000\n  subject: {namespaces: {}, pods: {podSelector: {}}}\n"
                "  egress:\n  - {action: Drop, to: [{nodes: {}}]}\n  - {action: Allow, to: []}\n"
                "  ingress:\n  - {action: Allow, from: [{networks: [10.0.0.0/8]}],"
                " ports: [{portNumber: {port: 80}, namedPort: x}]}\n"
            ),
            cnp(
                "  tier: Middle\n  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n"
                "  - {action: Accept, from: [{namespaces: {}}], ports: [{portNumber: {port: 1}}]}\n"
                "  - action: Accept\n    from: [{namespaces: {}}]\n"
                "    protocols: [{icmp: {}}, {tcp: {destinationPort: {number: 1, range: {}}}}]\n"
            ),
            anp("  subject: {namespaces: {}}\n", name="other", kind="BaselineAdminNetworkPolicy"),
            "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {namespace: a}\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {'bad key!': x, k: 5}\n"
            "spec: {containers: [{ports: [{name: web, containerPort: 0, protocol: ICMP}]}]}\n"
            "status: {podIPs: [{ip: 10.0.0.300}]}\n",
        ]
    )
    found = {(p.source, p.path) for p in problems(text)}
    assert found == {
        ("k8s.yaml#0", "spec.podSelector.matchExpressions[0].operator"),
        ("k8s.yaml#0", "spec.policyTypes[0]"),
        ("k8s.yaml#0", "spec.ingress[0].from[0].ipBlock.except[0]"),
        ("k8s.yaml#0", "spec.ingress[0].from[1]"),
        ("k8s.yaml#0", "spec.ingress[0].ports[0].protocol"),
        ("k8s.yaml#0", "spec.ingress[0].ports[1].port"),
        ("k8s.yaml#0", "spec.ingress[0].ports[2].endPort"),
        ("k8s.yaml#0", "spec.bogus"),
        ("k8s.yaml#1", "spec.priority"),
        ("k8s.yaml#1", "spec.subject"),
        ("k8s.yaml#1", "spec.egress[0].action"),
        ("k8s.yaml#1", "spec.egress[0].to[0].nodes"),
        ("k8s.yaml#1", "spec.egress[1].to"),
        ("k8s.yaml#1", "spec.ingress[0].from[0].networks"),
        ("k8s.yaml#1", "spec.ingress[0].ports[0]"),
        ("k8s.yaml#2", "spec.tier"),
        ("k8s.yaml#2", "spec.ingress[0].ports"),
        ("k8s.yaml#2", "spec.ingress[1].protocols[0].icmp"),
        ("k8s.yaml#2", "spec.ingress[1].protocols[1].tcp.destinationPort"),
        ("k8s.yaml#3", "metadata.name"),
        ("k8s.yaml#4", "apiVersion"),
        ("k8s.yaml#5", "metadata.name"),
        ("k8s.yaml#6", "metadata.labels.bad key!"),
        ("k8s.yaml#6", "metadata.labels.k"),
        ("k8s.yaml#6", "spec.containers[0].ports[0].containerPort"),
        ("k8s.yaml#6", "spec.containers[0].ports[0].protocol"),
        ("k8s.yaml#6", "status.podIPs[0].ip"),
    }


def test_unsupported_peers_say_why() -> None:
    text = anp(
        "  priority: 1\n  subject: {namespaces: {}}\n  egress:\n"
        "  - {action: Deny, to: [{nodes: {matchLabels: {role: control}}}]}\n"
    )
    (nodes,) = [p for p in problems(text) if p.path.endswith(".nodes")]
    assert "node" in nodes.reason and nodes.allowed == ("namespaces", "pods", "networks")


def test_converted_output_loads_as_the_same_configuration() -> None:
    """What ``tagwall convert`` prints is a native file meaning exactly the same."""
    original = parse_documents(EXAMPLE.read_text(), "shop.yaml")
    printed = yaml.safe_dump_all([dict(d.body) for d in translate(original)], sort_keys=False)
    assert load(parse_documents(printed, "converted.yaml")) == load(original)
