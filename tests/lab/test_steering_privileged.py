"""Service chains on real packets (DESIGN §2 "Service chains"; docs/steering.md): ``lab up``
builds the service workloads of ServiceInstance manifests and starts the reference L7
firewall in them; the nftables agent steers the flows of ``redirect`` rules through it, in
both directions, and nothing else.

One lab for the module (a unique name, so it runs beside other labs), one host::

    web 10.1.0.11 ─┐                 ┌─ left 10.9.0.1 [fw: in-network L7 firewall] 10.9.1.1 right
    app 10.1.0.21 ─┼── host-1 ───────┤
    db  10.1.0.31 ─┘                 └─ left [tp: transparent L7 firewall, bridge] right

web → app tcp/80 is redirected via fw-1 (in-network), web → db tcp/80 via tp-1
(transparent); everything else is allowed.  app and db serve HTTP on 80 and 8080 from
threads of this process.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tagwall.lab import read_state
from tagwall.model import Document

from .enforcement_support import running_lab, wait_until, yaml_documents
from .steering_support import ServiceLab, http_servers
from .support import privileged, unique_lab

pytestmark = privileged

LAB = """\
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.1.0.11]}], tags: {tier: web}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: app}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.1.0.21]}], tags: {tier: app}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: db}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.1.0.31]}], tags: {tier: db}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw}
spec:
  host: host-1
  interfaces:
  - {name: left, ips: [10.9.0.1], role: left}
  - {name: right, ips: [10.9.1.1], role: right}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: tp}
spec:
  host: host-1
  interfaces: [{name: left, role: left}, {name: right, role: right}]
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: routed-l7}
spec: {mode: in-network, function: l7-firewall}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: bump-l7}
spec: {mode: transparent, function: l7-firewall}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1}
spec: {template: routed-l7, workloads: [fw]}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: tp-1}
spec: {template: bump-l7, workloads: [tp]}
"""

STEER = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: steer}
spec:
  rules:
  - {name: web-to-app, from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80],
     action: redirect, via: [fw-1]}
  - {name: web-to-db, from: {tags: tier=web}, to: {tags: tier=db}, services: [tcp/80],
     action: redirect, via: [tp-1]}
  - {name: rest, from: {any: true}, to: {any: true}, action: allow}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: steer}
spec: {tier: admin, all: true, directions: [egress], policies: [{name: steer, sequence: 1}]}
"""

ALLOW_ALL = """\
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: steer}
spec:
  rules: [{name: rest, from: {any: true}, to: {any: true}, action: allow}]
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: steer}
spec: {tier: admin, all: true, directions: [egress], policies: [{name: steer, sequence: 1}]}
"""

# mode → (the destination its flows are steered to, the service workload in the path)
MODES = {"in-network": ("app", "fw"), "transparent": ("db", "tp")}
ADDRESS = {"web": "10.1.0.11", "app": "10.1.0.21", "db": "10.1.0.31"}


@dataclass
class Steered(ServiceLab):
    base: list[Document] = field(default_factory=list)  # workloads and services, no policy


@pytest.fixture(scope="module")
def steered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Steered]:
    directory = tmp_path_factory.mktemp("steering")
    lab = unique_lab()
    docs = yaml_documents(directory, "lab.yaml", LAB)
    with running_lab(docs, lab, directory / "state", controllers=1) as running:
        running.set_objects([*docs, *yaml_documents(directory, "steer.yaml", STEER)])
        result = Steered(running, ADDRESS, base=docs)
        with http_servers(result, ("app", "db"), (80, 8080)):
            yield result


@pytest.mark.parametrize("mode", MODES)
def test_a_redirected_flow_passes_the_firewall_in_both_directions(
    steered: Steered, mode: str
) -> None:
    """The server's answer comes back; the firewall logged the request (it came in on its
    left) and received the answer on its right (replies take the same instance)."""
    to, service = MODES[mode]
    target = f"/{mode}/items?id=7"
    left, right = steered.received(service, "left"), steered.received(service, "right")
    assert steered.get(to, target) == (200, "", f"served {target}\n".encode())
    assert target in steered.seen[to]
    lines = [v for v in steered.verdicts(service) if v["path"] == f"/{mode}/items"]
    assert [(v["verdict"], v["server"]) for v in lines] == [("allow", f"{ADDRESS[to]}:80")]
    assert str(lines[0]["client"]).startswith(ADDRESS["web"] + ":")
    # A request and its answer: at least the SYN, the request and the ACKs each way.
    assert steered.received(service, "left") - left >= 3
    assert steered.received(service, "right") - right >= 3


@pytest.mark.parametrize("mode", MODES)
def test_the_firewall_in_the_path_blocks_a_bad_request(steered: Steered, mode: str) -> None:
    """A request the firewall's rules deny gets its 403 and never reaches the server."""
    to, service = MODES[mode]
    target = f"/admin/{mode}"
    status, rule, _ = steered.get(to, target)
    assert (status, rule) == (403, "no-admin")
    assert target not in steered.seen[to]
    lines = [v for v in steered.verdicts(service) if v["path"] == target]
    assert [(v["verdict"], v["rule"]) for v in lines] == [("deny", "no-admin")]


@pytest.mark.parametrize("mode", MODES)
def test_a_flow_no_redirect_rule_matches_does_not_pass_the_firewall(
    steered: Steered, mode: str
) -> None:
    """web → the same server on tcp/8080 (allowed, not redirected) is served directly: the
    firewall neither logs it nor receives its packets (the firewall inspects 8080 too, so it
    would log it if it passed)."""
    to, service = MODES[mode]
    target = f"/direct/{mode}"
    before = steered.received(service, "left") + steered.received(service, "right")
    assert steered.get(to, target, port=8080)[0] == 200
    assert target in steered.seen[to]
    assert [v for v in steered.verdicts(service) if v["path"] == target] == []
    # A few packets of noise (IPv6 neighbour discovery) may arrive; a steered exchange is
    # at least 6 packets.
    assert steered.received(service, "left") + steered.received(service, "right") - before < 3


def test_lab_state_names_the_service_workloads(steered: Steered) -> None:
    """The state file (and so ``lab status``) says which workloads are services and what
    runs in them."""
    state = read_state(steered.lab.state_dir)
    assert state is not None
    services = {w.name: w.service for w in state.workloads if w.service is not None}
    assert {n: (s.mode, s.function) for n, s in services.items()} == {
        "fw": ("in-network", "l7-firewall"),
        "tp": ("transparent", "l7-firewall"),
    }
    assert {p.name for p in state.processes if p.role == "service"} == {"fw", "tp"}


def test_without_redirect_rules_flows_go_direct_and_the_routes_are_gone(steered: Steered) -> None:
    """Replacing the redirect rules by allow: the agent removes its policy routing, and the
    flows that were steered are served directly (the firewalls log nothing more).  Runs
    last: it changes the module's lab."""
    lab = steered.lab
    lab.set_objects([*steered.base, *yaml_documents(lab.state_dir, "allow.yaml", ALLOW_ALL)])
    host = lab.host_namespace("host-1")

    def rules() -> str:
        return subprocess.run(
            ["ip", "-n", host, "rule"], capture_output=True, text=True, check=True
        ).stdout

    wait_until(lambda: "fwmark" not in rules(), 10, "tagwall's policy routing to go")
    for mode, (to, service) in MODES.items():
        before = len(steered.verdicts(service))
        assert steered.get(to, f"/after/{mode}")[0] == 200
        assert steered.get(to, "/admin/after")[0] == 200  # no firewall to refuse it
        assert len(steered.verdicts(service)) == before
    listing = subprocess.run(
        ["ip", "-n", host, "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "169.254.0.116" not in listing and "table 1953955" not in listing
