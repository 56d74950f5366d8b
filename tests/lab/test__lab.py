"""``tagwall.lab._lab``'s pure part: the manifests ``up`` registers (no root)."""

from __future__ import annotations

from tagwall.lab import plan
from tagwall.lab._lab import with_underlay
from tagwall.model import load, parse_documents

MANIFESTS = """\
apiVersion: tagwall/v1
kind: Host
metadata: {name: host-2}
spec: {address: 192.0.2.7, tags: {site: ams}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: a}
spec: {host: host-1, interfaces: [{name: eth0, ips: [10.1.0.1]}]}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: b}
spec: {host: host-2, interfaces: [{name: eth0, ips: [10.1.0.2]}]}
"""


def test_every_host_is_registered_at_its_fabric_address() -> None:
    """A declared Host keeps its place and tags, its address becomes the fabric's; an
    undeclared one is added; the workloads are unchanged."""
    documents = parse_documents(MANIFESTS, "lab.yaml")
    topology = plan(load(documents), "twlab")
    registered = with_underlay(documents, topology)
    assert registered[1:3] == documents[1:3]
    config = load(registered)
    fabric = {h.name: h.fabric_ipv4 for h in topology.hosts}
    assert {name: h.address for name, h in config.hosts.items()} == fabric
    assert registered[0].body["spec"] == {"address": str(fabric["host-2"]), "tags": {"site": "ams"}}
    assert (registered[0].source, registered[0].index) == ("lab.yaml", 0)
