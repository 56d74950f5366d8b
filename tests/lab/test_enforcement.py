"""Real packets obey the policy: for each policy below, ``lab probe`` with nftables agents
gives exactly the matrix of ``tagwall reach`` (the reference evaluator), service by service.

Two labs, each built once for the module and reconfigured per test through its controller
(one revision per test: a draft that stages the test's objects and deletes the previous
test's), waiting until every agent has acknowledged it:

- *native*: three-tier's twelve workloads and payment API, the guard rails' DNS servers and
  monitoring service, and a service workload ``fw`` of instance ``fw-1``, a plain in-network
  forwarder (17 workloads, 6 hosts, 2 externals);
- *kubernetes*: examples/kubernetes/shop.yaml's namespaces and pods plus one UDP pod (6 pods
  on 2 nodes).

Each test also states a few verdicts it is about (``claims``), so that it checks the case it
names and not merely that two answers agree; every compared answer has allowed and denied
pairs.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli.support import EXAMPLES, run_tagwall

from tagwall._netns import entered
from tagwall.evaluator import make_flow, trace
from tagwall.lab import probe, read_state
from tagwall.model import Action, Document, load, parse_flow_service

from .enforcement_support import (
    Matrix,
    RunningLab,
    differences,
    documents,
    expected,
    running_lab,
    yaml_documents,
)
from .support import privileged, rx_packets, unique_lab

pytestmark = privileged

THREE_TIER = EXAMPLES / "three-tier"
GUARDRAILS = EXAMPLES / "guardrails"
SHOP = EXAMPLES / "kubernetes" / "shop.yaml"

Claim = tuple[str, str, str, bool]  # service, from, to, allowed


def _check_claims(answers: dict[str, Matrix], claims: Sequence[Claim]) -> None:
    wrong = [c for c in claims if answers[c[0]][c[1]][c[2]] is not c[3]]
    assert wrong == [], f"verdicts other than the case states: {wrong}"


# -- the native lab -----------------------------------------------------------------------------

SERVICE_WORKLOAD = """\
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw}
spec:
  kind: vm
  host: host-1
  interfaces:
  - {name: left, ips: [10.9.0.1], role: left}
  - {name: right, ips: [10.9.1.1], role: right}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: l7}
spec: {mode: in-network, function: forwarder}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1}
spec: {template: l7, workloads: [fw]}
"""


@dataclass(frozen=True)
class NativeFiles:
    workloads: list[Document]  # what the lab is built from
    directory: Path


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, NativeFiles]]:
    directory = tmp_path_factory.mktemp("native")
    workloads = [
        *documents(THREE_TIER / "apps.yaml", THREE_TIER / "external.yaml"),
        *documents(GUARDRAILS / "infra.yaml"),
        *yaml_documents(directory, "fw.yaml", SERVICE_WORKLOAD),
    ]
    with running_lab(workloads, unique_lab(), directory / "state") as lab:
        yield lab, NativeFiles(workloads, directory)


def test_three_tier(native: tuple[RunningLab, NativeFiles]) -> None:
    """examples/three-tier's policy: matchTags [application, deployment] across hosts, the
    implicit deny of the application tier, an external workload as destination.  Compared
    once through the CLI, as a user would: ``lab probe -o json`` against ``reach -o json``."""
    lab, files = native
    lab.set_objects([*files.workloads, *documents(THREE_TIER / "policy.yaml")])
    answers = lab.assert_probe_equals_reach(["tcp/8080", "tcp/5432", "tcp/443", "icmp"])
    _check_claims(
        answers,
        [
            ("tcp/8080", "shop-web-prod", "shop-app-prod", True),
            ("tcp/8080", "shop-web-prod", "shop-app-dev", False),
            ("tcp/5432", "crm-app-prod", "crm-db-prod", True),  # host-4 to host-4
            ("tcp/5432", "shop-app-prod", "shop-db-prod", True),  # host-1 to host-2
            ("tcp/443", "shop-app-prod", "payments-api", True),
            ("tcp/443", "shop-web-prod", "payments-api", False),
        ],
    )
    sources = [
        THREE_TIER / "apps.yaml",
        THREE_TIER / "external.yaml",
        GUARDRAILS / "infra.yaml",
        files.directory / "fw.yaml",
        THREE_TIER / "policy.yaml",
    ]
    files_args = [a for s in sources for a in ("-f", str(s))]
    reach_cli = run_tagwall("reach", *files_args, "--service", "tcp/8080", "-o", "json")
    probe_cli = run_tagwall(
        "lab", "probe", "--lab", lab.name, "--state-dir", str(lab.state_dir),
        "--service", "tcp/8080", "-o", "json",
    )  # fmt: skip
    assert reach_cli.returncode == 0, reach_cli.stderr
    assert probe_cli.returncode == 0, probe_cli.stderr
    assert json.loads(probe_cli.stdout) == json.loads(reach_cli.stdout)


def test_guardrails_with_three_tier(native: tuple[RunningLab, NativeFiles]) -> None:
    """examples/guardrails over three-tier: admin deny before the applications, admin allow
    (DNS, monitoring from an external workload), admin ``pass`` to the application tier, a
    baseline allow (ping) and the zero-trust default posture."""
    lab, files = native
    policies = documents(
        THREE_TIER / "policy.yaml", GUARDRAILS / "guardrails.yaml", GUARDRAILS / "baseline.yaml"
    )
    lab.set_objects([*files.workloads, *policies])
    answers = lab.assert_probe_equals_reach(
        ["tcp/8080", "tcp/443", "udp/53", "tcp/9100", "icmp", "tcp/80"]
    )
    _check_claims(
        answers,
        [
            ("tcp/443", "shop-web-dev", "shop-web-prod", False),  # deny-dev-to-prod
            ("tcp/443", "shop-web-prod", "shop-web-dev", True),  # any-to-web
            ("tcp/9100", "metrics-collector", "shop-app-prod", True),  # allow-monitoring
            ("udp/53", "shop-app-prod", "dns-1", True),  # allow-dns, both ends
            ("tcp/8080", "shop-web-prod", "shop-app-prod", True),  # pass, then web-to-app
            ("icmp", "dns-1", "dns-2", True),  # baseline allow-ping
            ("tcp/80", "dns-1", "dns-2", False),  # default posture deny
        ],
    )


MATCH_TAGS = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: same-tags}
spec:
  rules:
  - name: web-to-app-same-application
    sequence: 10
    from: {tags: tier=web}
    to: {tags: tier=app}
    services: [tcp/8080]
    matchTags: [application]
  - name: app-to-db-same-deployment
    sequence: 20
    from: {tags: tier=app}
    to: {tags: tier=db}
    services: [tcp/5432]
    matchTags: [deployment]
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: same-tags}
spec:
  tier: application
  priority: 10
  selector: tier
  directions: [ingress, egress]
  policies: [same-tags]
"""


def test_match_tags_across_hosts(native: tuple[RunningLab, NativeFiles]) -> None:
    """matchTags compares the two ends' values, wherever they run: the source's value is
    looked up on the source's host, the destination's on the destination's."""
    lab, files = native
    lab.set_objects([*files.workloads, *yaml_documents(files.directory, "mt.yaml", MATCH_TAGS)])
    answers = lab.assert_probe_equals_reach(["tcp/8080", "tcp/5432"])
    _check_claims(
        answers,
        [
            ("tcp/8080", "shop-web-prod", "shop-app-dev", True),  # host-1 → host-3, shop = shop
            ("tcp/8080", "shop-web-prod", "crm-app-prod", False),  # host-1 → host-4, shop ≠ crm
            ("tcp/5432", "shop-app-prod", "crm-db-prod", True),  # host-1 → host-4, prod = prod
            ("tcp/5432", "shop-app-prod", "shop-db-dev", False),  # host-1 → host-3, prod ≠ dev
        ],
    )


REJECT_AND_DENY = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: refuse-db}
spec:
  rules:
  - {name: web-dropped, sequence: 10, from: {tags: tier=web}, to: {tags: tier=db}, action: deny}
  - {name: app-rejected, sequence: 20, from: {tags: tier=app}, to: {tags: tier=db},
     action: reject}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: refuse-db}
spec: {tier: admin, priority: 10, all: true, directions: [ingress], policies: [refuse-db]}
"""


def _connect(namespace: str, address: str, port: int, timeout_s: float) -> str:
    """What a TCP client in ``namespace`` sees: connected, refused or timeout."""
    with entered(namespace):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with client:
        client.settimeout(timeout_s)
        try:
            client.connect((address, port))
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        return "connected"


def test_reject_and_deny_both_deny_but_reject_answers(
    native: tuple[RunningLab, NativeFiles],
) -> None:
    """Both ``deny`` and ``reject`` are false in the probe; a TCP client tells them apart:
    a reject resets at once (even with a server listening), a deny leaves it waiting."""
    lab, files = native
    policies = yaml_documents(files.directory, "reject.yaml", REJECT_AND_DENY)
    lab.set_objects([*files.workloads, *policies])
    answers = lab.assert_probe_equals_reach(["tcp/5432", "udp/53", "icmp"])
    claims = [
        (service, src, "shop-db-prod", ok)
        for service in answers
        for src, ok in (("shop-web-prod", False), ("shop-app-prod", False), ("dns-1", True))
    ]
    _check_claims(answers, claims)

    db = f"{lab.name}-w-shop-db-prod"
    with entered(db):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", 5432))
        server.listen(8)
        seen = {
            src: _connect(f"{lab.name}-w-{src}", "10.1.1.31", 5432, timeout_s=1.0)
            for src in ("dns-1", "shop-app-prod", "shop-web-prod")
        }
    assert seen == {"dns-1": "connected", "shop-app-prod": "refused", "shop-web-prod": "timeout"}


AUDIT = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: lockdown}
spec:
  mode: audit
  rules:
  - {name: deny-everything, from: {any: true}, to: {any: true}, action: deny}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: isolate-web}
spec: {mode: audit, rules: []}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: db-from-app}
spec:
  rules:
  - {name: app-to-db, from: {tags: tier=app}, to: {tags: tier=db}, services: [tcp/5432]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: lockdown}
spec: {tier: admin, priority: 1, all: true, directions: [ingress, egress], policies: [lockdown]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: web}
spec: {tier: application, priority: 10, selector: tier=web, directions: [ingress],
       policies: [isolate-web]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: db}
spec: {tier: application, priority: 10, selector: tier=db, directions: [ingress],
       policies: [db-from-app]}
"""


def test_audit_mode_is_not_enforced(native: tuple[RunningLab, NativeFiles]) -> None:
    """An audit policy denying everything (admin tier) and an empty audit policy (which would
    isolate web) change no packet; the enforced policy next to them (db) does.  The shadow
    verdicts show that the audit policies would have mattered."""
    lab, files = native
    docs = [*files.workloads, *yaml_documents(files.directory, "audit.yaml", AUDIT)]
    lab.set_objects(docs)
    answers = lab.assert_probe_equals_reach(["tcp/5432", "icmp"])
    _check_claims(
        answers,
        [
            ("tcp/5432", "shop-web-prod", "shop-db-prod", False),  # db isolated, enforced
            ("tcp/5432", "crm-app-dev", "shop-db-prod", True),
            ("tcp/5432", "shop-db-prod", "shop-web-prod", True),  # web's audit isolation
            ("icmp", "dns-1", "dns-2", True),  # the audit lockdown
        ],
    )
    config = load(docs)
    for src, dst, service in (("shop-db-prod", "shop-web-prod", "tcp/5432"),):
        verdict = trace(config, make_flow(config, src, dst, service))
        assert verdict.allowed
        assert verdict.egress.shadow.action is Action.DENY  # lockdown would deny


REDIRECT = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: steer}
spec:
  rules:
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/8080],
     action: redirect, via: [fw-1]}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: steer}
spec: {tier: application, priority: 1, selector: tier=app, directions: [ingress],
       policies: [steer]}
"""


def test_redirect_through_a_forwarder_allows_like_allow(
    native: tuple[RunningLab, NativeFiles],
) -> None:
    """A redirect rule decides like allow: flows into host-1's app workloads are steered
    through fw-1, a plain forwarder on host-1 (docs/steering.md), and arrive as reach says;
    the forwarder's right interface saw them."""
    lab, files = native
    fw = f"{lab.name}-w-fw"
    before = rx_packets(fw, "right")
    lab.set_objects([*files.workloads, *yaml_documents(files.directory, "rd.yaml", REDIRECT)])
    answers = lab.assert_probe_equals_reach(["tcp/8080"])
    assert rx_packets(fw, "right") > before
    _check_claims(
        answers,
        [
            ("tcp/8080", "shop-web-prod", "crm-app-dev", True),
            ("tcp/8080", "dns-1", "shop-app-prod", False),
        ],
    )


REDIRECT_IN_TIERS = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: guard}
spec:
  rules:
  - {name: no-dev-to-prod, from: {tags: deployment=dev}, to: {tags: deployment=prod},
     services: [tcp/8080], action: deny}
  - {name: db-via-fw, from: {tags: tier=db}, to: {tags: tier=app}, services: [tcp/8080],
     action: redirect, via: [fw-1]}
  - {name: hand-over, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/8080],
     action: pass}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: guard}
spec: {tier: admin, priority: 1, all: true, directions: [egress, ingress], policies: [guard]}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: apps}
spec:
  rules:
  - {name: web-via-fw, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/8080],
     action: redirect, via: [fw-1]}
  - {name: nothing-else, from: {any: true}, to: {tags: tier=app}, services: [tcp/8080],
     action: deny}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: apps}
spec: {tier: application, priority: 1, selector: tier=app, directions: [ingress],
       policies: [apps]}
"""

COUNT_8080 = """\
table inet tiertest {
  chain c { type filter hook forward priority 0; policy accept; tcp dport 8080 counter; }
}
"""


def _forwarded_8080(namespace: str) -> int:
    """Packets to tcp/8080 that ``namespace`` (the forwarder) has forwarded so far."""
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-j", "list", "table", "inet", "tiertest"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    items = json.loads(out)["nftables"]
    return sum(
        e["counter"]["packets"]
        for i in items
        if "rule" in i
        for e in i["rule"]["expr"]
        if "counter" in e
    )


def test_redirect_decides_in_its_tier_like_allow(
    native: tuple[RunningLab, NativeFiles],
) -> None:
    """DESIGN §2: a redirect is a verdict of its tier like allow.  An admin deny beats an
    application redirect; an admin redirect beats an application deny; an admin ``pass``
    hands the flow to the application tier, whose redirect steers it.  Real packets equal
    reach, and one connection per case shows which flows the forwarder carried."""
    lab, files = native
    policies = yaml_documents(files.directory, "tiers.yaml", REDIRECT_IN_TIERS)
    lab.set_objects([*files.workloads, *policies])
    answers = lab.assert_probe_equals_reach(["tcp/8080"])
    cases = {  # (from, to): (allowed, through fw-1)
        ("shop-web-prod", "shop-app-prod"): (True, True),  # admin pass → application redirect
        ("shop-web-dev", "shop-app-prod"): (False, False),  # admin deny beats the redirect
        ("shop-db-prod", "shop-app-prod"): (True, True),  # admin redirect beats the deny
        ("shop-db-dev", "shop-app-dev"): (True, True),  # the same, steered to another host
        ("dns-1", "shop-app-prod"): (False, False),  # the application tier's deny
    }
    _check_claims(answers, [("tcp/8080", s, d, ok) for (s, d), (ok, _) in cases.items()])

    fw = f"{lab.name}-w-fw"
    state = read_state(lab.state_dir)
    assert state is not None
    addresses = {w.name: str(w.ips[0]) for w in state.workloads if w.ips}
    subprocess.run(
        ["ip", "netns", "exec", fw, "nft", "-f", "-"], input=COUNT_8080, text=True, check=True
    )
    try:
        seen: dict[tuple[str, str], tuple[bool, bool]] = {}
        for src, dst in cases:
            with entered(f"{lab.name}-w-{dst}"):
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind((addresses[dst], 8080))
                server.listen(8)
                before = _forwarded_8080(fw)
                result = _connect(f"{lab.name}-w-{src}", addresses[dst], 8080, timeout_s=1.0)
                seen[(src, dst)] = (result == "connected", _forwarded_8080(fw) > before)
    finally:
        subprocess.run(["ip", "netns", "exec", fw, "nft", "delete", "table", "inet", "tiertest"])
    assert seen == cases


# -- the Kubernetes lab -------------------------------------------------------------------------

UDP_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: dns-1, namespace: sandbox, labels: {app: dns}}
spec:
  nodeName: node-2
  containers:
  - name: dns
    image: coredns
    ports: [{name: dns, containerPort: 53, protocol: UDP}]
status: {podIP: 10.244.2.30}
"""

WEB, API, DB = "shop/web-1", "shop/api-1", "shop/db-1"
PROM, TOY, DNS = "monitoring/prometheus-0", "sandbox/toy-1", "sandbox/dns-1"


@dataclass(frozen=True)
class K8sFiles:
    cluster: list[Document]  # namespaces and pods: what the lab is built from
    policies: list[Document]  # shop.yaml's policies
    directory: Path


@pytest.fixture(scope="module")
def kubernetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, K8sFiles]]:
    directory = tmp_path_factory.mktemp("k8s")
    shop = documents(SHOP)
    cluster = [
        *(d for d in shop if d.kind in ("Namespace", "Pod")),
        *yaml_documents(directory, "dns.yaml", UDP_POD),
    ]
    policies = [d for d in shop if d.kind not in ("Namespace", "Pod")]
    with running_lab([*cluster, *policies], unique_lab(), directory / "state") as lab:
        yield lab, K8sFiles(cluster, policies, directory)


def test_kubernetes_shop(kubernetes: tuple[RunningLab, K8sFiles]) -> None:
    """examples/kubernetes/shop.yaml: default-deny ingress, named port ``http``, ``egress:
    []``, an AdminNetworkPolicy (allow, pass, deny) and a BaselineAdminNetworkPolicy."""
    lab, files = kubernetes
    lab.set_objects([*files.cluster, *files.policies])
    answers = lab.assert_probe_equals_reach(["tcp/80", "tcp/8080", "tcp/5432", "tcp/9090", "icmp"])
    _check_claims(
        answers,
        [
            ("tcp/80", TOY, WEB, False),  # the ANP denies other namespaces
            ("tcp/8080", WEB, API, True),  # http is 8080 on api-1
            ("tcp/5432", API, DB, True),
            ("tcp/5432", WEB, DB, False),
            ("tcp/9090", PROM, API, True),  # the ANP allows monitoring
            ("tcp/80", DB, WEB, False),  # db's egress: []
        ],
    )


@dataclass(frozen=True)
class Case:
    name: str
    manifests: str
    services: tuple[str, ...]
    claims: tuple[Claim, ...]


NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
ANP = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
BANP = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n"

CASES = [
    Case(
        "ingress-isolation-by-pod-selector",
        NP
        + """\
metadata: {name: db-from-api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{protocol: TCP, port: 5432}]
""",
        ("tcp/5432", "icmp"),
        (
            ("tcp/5432", API, DB, True),
            ("tcp/5432", WEB, DB, False),
            ("tcp/5432", PROM, DB, False),  # a podSelector alone: the policy's namespace
            ("icmp", API, DB, False),
            ("tcp/5432", DB, WEB, True),  # only ingress is isolated
        ),
    ),
    Case(
        "egress-isolation-by-empty-egress",
        NP
        + """\
metadata: {name: toy-no-egress, namespace: sandbox}
spec:
  podSelector: {matchLabels: {app: toy}}
  policyTypes: [Egress]
  egress: []
""",
        ("tcp/80", "udp/53", "icmp"),
        (
            ("tcp/80", TOY, WEB, False),
            ("udp/53", TOY, DNS, False),
            ("icmp", TOY, PROM, False),
            ("tcp/80", WEB, TOY, True),
        ),
    ),
    Case(
        "namespace-selector",
        NP
        + """\
metadata: {name: db-from-namespaces, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: ops}}
    - namespaceSelector: {matchLabels: {team: sandbox}}
      podSelector: {matchLabels: {app: dns}}
""",
        ("tcp/5432",),
        (
            ("tcp/5432", PROM, DB, True),
            ("tcp/5432", DNS, DB, True),  # namespace and pod selector: both must hold
            ("tcp/5432", TOY, DB, False),
            ("tcp/5432", API, DB, False),
        ),
    ),
    Case(
        "named-ports-resolved-on-the-destination",
        NP
        + """\
metadata: {name: http-only, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}]
---
"""
        + NP
        + """\
metadata: {name: dns-only, namespace: sandbox}
spec:
  podSelector: {matchLabels: {app: dns}}
  ingress:
  - ports: [{protocol: UDP, port: dns}]
""",
        ("tcp/80", "tcp/8080", "udp/53"),
        (
            ("tcp/80", TOY, WEB, True),  # http is 80 on web-1
            ("tcp/80", TOY, API, False),
            ("tcp/8080", TOY, API, True),  # and 8080 on api-1
            ("tcp/8080", TOY, WEB, False),
            ("tcp/80", TOY, DB, False),  # db-1 has no port named http
            ("udp/53", TOY, DNS, True),
        ),
    ),
    Case(
        "port-range-with-end-port",
        NP
        + """\
metadata: {name: api-range, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - ports: [{protocol: TCP, port: 8000, endPort: 8100}]
""",
        ("tcp/7999", "tcp/8000", "tcp/8100", "tcp/8101"),
        (
            ("tcp/7999", WEB, API, False),
            ("tcp/8000", WEB, API, True),
            ("tcp/8100", WEB, API, True),  # endPort is inclusive
            ("tcp/8101", WEB, API, False),
        ),
    ),
    Case(
        "udp",
        NP
        + """\
metadata: {name: prometheus-udp, namespace: monitoring}
spec:
  podSelector: {}
  ingress:
  - ports: [{protocol: UDP, port: 53}]
""",
        ("udp/53", "tcp/53", "udp/54"),
        (
            ("udp/53", WEB, PROM, True),
            ("tcp/53", WEB, PROM, False),
            ("udp/54", WEB, PROM, False),
        ),
    ),
    Case(
        "ip-block-with-except",
        NP
        + """\
metadata: {name: db-ipblock, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24]}}]
---
"""
        + NP
        + """\
metadata: {name: toy-ipblock, namespace: sandbox}
spec:
  podSelector: {matchLabels: {app: toy}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.30/32]}}]
""",
        ("tcp/5432", "icmp"),
        (
            ("tcp/5432", PROM, DB, True),  # 10.244.2.20: in the block
            ("tcp/5432", WEB, DB, False),  # 10.244.1.10: in the exception
            ("icmp", TOY, PROM, True),
            ("icmp", TOY, DNS, False),  # 10.244.2.30: in the exception
            ("icmp", TOY, WEB, False),  # outside the block
        ),
    ),
    Case(
        "admin-network-policy-deny-and-pass-by-priority",
        NP
        + """\
metadata: {name: allow-all-ingress, namespace: shop}
spec:
  podSelector: {}
  ingress: [{}]
---
"""
        + ANP
        + """\
metadata: {name: first}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {team: shop}}}
  ingress:
  - {name: deny-sandbox, action: Deny, from: [{namespaces: {matchLabels: {team: sandbox}}}]}
  - {name: pass-ops, action: Pass, from: [{namespaces: {matchLabels: {team: ops}}}]}
---
"""
        + ANP
        + """\
metadata: {name: second}
spec:
  priority: 50
  subject: {namespaces: {matchLabels: {team: shop}}}
  ingress:
  - {name: allow-sandbox, action: Allow, from: [{namespaces: {matchLabels: {team: sandbox}}}]}
  - {name: deny-ops, action: Deny, from: [{namespaces: {matchLabels: {team: ops}}}]}
  - {name: deny-shop, action: Deny, from: [{namespaces: {matchLabels: {team: shop}}}]}
""",
        ("tcp/80", "icmp"),
        (
            ("tcp/80", TOY, WEB, False),  # priority 5 denies before 50 allows, NP allows
            ("tcp/80", PROM, WEB, True),  # passed at 5: 50's deny is skipped, the NP allows
            ("tcp/80", WEB, API, False),  # an ANP deny beats the NetworkPolicy's allow
            ("tcp/80", WEB, TOY, True),  # sandbox is no subject
        ),
    ),
    Case(
        "baseline-admin-network-policy-default-deny",
        BANP
        + """\
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
---
"""
        + NP
        + """\
metadata: {name: api-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
""",
        ("tcp/8080", "icmp"),
        (
            ("tcp/8080", WEB, API, True),  # a NetworkPolicy decides before the baseline
            ("tcp/8080", TOY, API, False),  # isolated by the NetworkPolicy
            ("tcp/8080", WEB, DB, False),  # the baseline's deny
            ("icmp", API, WEB, False),
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kubernetes_network_policies(kubernetes: tuple[RunningLab, K8sFiles], case: Case) -> None:
    """Each case's Kubernetes policies (converted by tagwall on load, enforced by the agents)
    give the probe exactly reach's matrix, and the verdicts the case is about."""
    lab, files = kubernetes
    policies = yaml_documents(files.directory, f"{case.name}.yaml", case.manifests)
    lab.set_objects([*files.cluster, *policies])
    answers = lab.assert_probe_equals_reach(case.services)
    _check_claims(answers, case.claims)


# -- the probe and conntrack --------------------------------------------------------------------

DENY_DNS_1_TO_DNS_2 = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: cut}
spec:
  rules:
  - {name: dns-1-to-dns-2, from: {workload: dns-1}, to: {workload: dns-2}, services: [udp/53],
     action: deny}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: cut}
spec: {tier: admin, priority: 1, all: true, directions: [egress], policies: [cut]}
"""


def _sysctl(namespace: str, setting: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-n", setting],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().replace("\t", " ")


def _set_sysctl(namespace: str, setting: str, value: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-qw", f"{setting}={value}"], check=True
    )


def _udp_exchanges(lab: str, src_ports: range) -> None:
    """One request and its answer from each dns-1:port to dns-2:53 (flows conntrack then
    holds as established), with a server of our own on dns-2."""
    with entered(f"{lab}-w-dns-2"):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server:
        server.bind(("10.0.0.54", 53))
        server.settimeout(2)
        for port in src_ports:
            with entered(f"{lab}-w-dns-1"):
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with client:
                client.bind(("10.0.0.53", port))
                client.settimeout(2)
                client.sendto(b"ping", ("10.0.0.54", 53))
                data, peer = server.recvfrom(64)
                server.sendto(data, peer)
                assert client.recv(64) == b"ping"


def test_a_probe_never_rides_on_an_earlier_flow(native: tuple[RunningLab, NativeFiles]) -> None:
    """docs/lab.md: "every TCP/UDP attempt a fresh source port, so no attempt rides on an
    earlier probe's conntrack entry".  Made deterministic: dns-1's namespace gets 64
    ephemeral ports, and a flow from each of them to dns-2:53 was answered while allowed;
    then a policy denies udp/53 from dns-1 to dns-2.  ``lab probe`` must still say false."""
    lab, files = native
    ns = f"{lab.name}-w-dns-1"
    ports = range(40000, 40064)
    lab.set_objects(files.workloads)
    lab.forget_flows()
    saved = _sysctl(ns, "net.ipv4.ip_local_port_range")
    _set_sysctl(ns, "net.ipv4.ip_local_port_range", f"{ports[0]} {ports[-1]}")
    try:
        _udp_exchanges(lab.name, ports)
        cut = yaml_documents(files.directory, "cut.yaml", DENY_DNS_1_TO_DNS_2)
        lab.set_objects([*files.workloads, *cut])
        probed = probe(parse_flow_service("udp/53"), lab=lab.name, state_dir=lab.state_dir)
    finally:
        _set_sysctl(ns, "net.ipv4.ip_local_port_range", saved)
        lab.forget_flows()
    want = expected(lab.objects, "udp/53")
    assert want["dns-1"]["dns-2"] is False
    assert probed.matrix == want, "; ".join(differences(probed.matrix, want))
