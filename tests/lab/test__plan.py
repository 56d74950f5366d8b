"""Planning a lab from a Config (``tagwall.lab._plan``): pure, no root.

Besides examples, one hypothesis property walks the planned routes hop by hop: in every
plan, a packet from any workload to any other's address of the same family arrives.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml
from cli.support import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from tagwall.errors import ValidationError
from tagwall.lab import FABRIC_IPV4, GATEWAY_IPV4, Namespace, Role, Route, Topology, plan
from tagwall.model import Config, Document, load, parse_documents


def _config(*manifests: dict[str, Any]) -> Config:
    return load([Document(m, "test.yaml", i) for i, m in enumerate(manifests)])


def _workload(name: str, ips: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if "project" in spec:
        metadata["project"] = spec.pop("project")
    if ips is not None:
        spec.setdefault("interfaces", [{"name": "eth0", "ips": ips}])
    return {"apiVersion": "tagwall/v1", "kind": "Workload", "metadata": metadata, "spec": spec}


def _project(name: str) -> dict[str, Any]:
    return {"apiVersion": "tagwall/v1", "kind": "Project", "metadata": {"name": name}, "spec": {}}


def _example(*paths: str) -> Config:
    docs: list[Document] = []
    for path in paths:
        docs += parse_documents((EXAMPLES / path).read_text(), path)
    return load(docs)


def _namespace(topology: Topology, name: str) -> Namespace:
    return next(ns for ns in topology.namespaces if ns.name == name)


def _route(topology: Topology, namespace: str, destination: str) -> Route:
    ns = _namespace(topology, namespace)
    net = ipaddress.ip_network(destination)
    return next(r for r in ns.routes if r.destination == net)


THREE_TIER = ("three-tier/apps.yaml", "three-tier/external.yaml", "three-tier/policy.yaml")


def test_three_tier_namespaces_hosts_and_fabric_addresses() -> None:
    topology = plan(_example(*THREE_TIER), "twlab")
    names = [ns.name for ns in topology.namespaces]
    assert names[0] == "twlab-fabric"
    assert names[1:5] == [f"twlab-h-host-{n}" for n in range(1, 5)]
    assert len(names) == 1 + 4 + 13 and len(set(names)) == len(names)
    assert [(h.name, str(h.fabric_ipv4), h.fabric_ipv6) for h in topology.hosts] == [
        (f"host-{n}", f"169.254.64.{n}", None) for n in range(1, 5)
    ]
    assert topology.hosts[0].workloads == ("shop-app-prod", "shop-web-prod")
    assert [w.name for w in topology.workloads] == sorted(w.name for w in topology.workloads)
    assert not topology.ipv6


def test_three_tier_routes_local_remote_and_external() -> None:
    topology = plan(_example(*THREE_TIER), "twlab")
    web = next(w for w in topology.workloads if w.name == "shop-web-prod")
    assert (web.host, web.interfaces[0].name) == ("host-1", "eth0")
    # host-1: its own workload straight to its tw-* interface, a remote one via its host.
    local = _route(topology, "twlab-h-host-1", "10.1.1.11/32")
    assert (local.interface, local.gateway) == (web.interfaces[0].peer, None)
    remote = _route(topology, "twlab-h-host-1", "10.1.1.31/32")  # shop-db-prod on host-2
    assert (remote.interface, str(remote.gateway)) == ("fabric", "169.254.64.2")
    # The external payment API sits on the fabric itself.
    external = _route(topology, "twlab-h-host-1", "192.0.2.80/32")
    assert (external.interface, external.gateway) == ("fabric", None)
    # A workload's only route: default via the gateway on its link.
    default = _route(topology, "twlab-w-shop-web-prod", "0.0.0.0/0")
    assert (default.interface, default.gateway, default.onlink) == ("eth0", GATEWAY_IPV4, True)
    ns = _namespace(topology, "twlab-h-host-1")
    assert ("net/ipv4/ip_forward", "1") in ns.sysctls
    assert not any("ipv6" in key for key, _ in ns.sysctls)


def test_external_workloads_get_a_fabric_port_and_no_host() -> None:
    topology = plan(_example(*THREE_TIER), "twlab")
    api = next(w for w in topology.workloads if w.name == "payments-api")
    assert api.host is None
    assert _namespace(topology, api.namespace).role is Role.EXTERNAL
    assert api.interfaces[0].name == "ext"  # the manifest's interface name
    fabric = _namespace(topology, "twlab-fabric")
    assert api.interfaces[0].peer in fabric.bridge_ports
    to_db = _route(topology, api.namespace, "10.1.1.31/32")
    assert (str(to_db.gateway), to_db.onlink) == ("169.254.64.2", True)
    assert all(h.name != "payments-api" for h in topology.hosts)


def test_every_workload_interface_on_a_host_matches_the_agents_glob() -> None:
    topology = plan(_example(*THREE_TIER), "twlab")
    for veth in topology.veths:
        if veth.peer_namespace.startswith("twlab-w-") and veth.namespace.startswith("twlab-h-"):
            assert veth.name.startswith("tw-") and len(veth.name) <= 15
        else:
            assert not veth.name.startswith("tw-")


def test_workloads_without_a_host_get_one_host_per_project_or_global() -> None:
    topology = plan(
        _config(
            _project("shop"),
            _workload("a", ["10.0.0.1"], project="shop"),
            _workload("b", ["10.0.0.2"], project="shop"),
            _workload("c", ["10.0.0.3"]),
            _workload("d", ["10.0.0.4"], host="node-9"),
        ),
        "twlab",
    )
    assert {h.name: h.workloads for h in topology.hosts} == {
        "global": ("c",),
        "node-9": ("d",),
        "shop": ("a", "b"),
    }


def test_declared_hosts_without_workloads_are_built_too() -> None:
    host = {"apiVersion": "tagwall/v1", "kind": "Host", "metadata": {"name": "spare"}, "spec": {}}
    topology = plan(_config(host, _workload("a", ["10.0.0.1"], host="h1")), "twlab")
    assert [h.name for h in topology.hosts] == ["h1", "spare"]
    assert "twlab-h-spare" in {ns.name for ns in topology.namespaces}


def test_kubernetes_pods_keep_their_names_and_get_per_namespace_hosts() -> None:
    pods = yaml.safe_dump_all(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "shop"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"podIP": "10.244.0.5"},
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "api-1", "namespace": "shop"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
                "status": {"podIP": "10.244.1.5"},
            },
        ]
    )
    topology = plan(load(parse_documents(pods, "pods.yaml")), "twlab")
    assert {w.name: (w.host, w.namespace) for w in topology.workloads} == {
        "shop/web-1": ("shop", "twlab-w-shop_web-1"),
        "shop/api-1": ("node-1", "twlab-w-shop_api-1"),
    }


def test_kubernetes_example_plans() -> None:
    topology = plan(_example("kubernetes/shop.yaml"), "twlab")
    assert [h.name for h in topology.hosts] == ["node-1", "node-2"]
    assert "shop/web-1" in {w.name for w in topology.workloads}


def test_addresses_the_lab_reserves_or_cannot_route_are_refused_all_at_once() -> None:
    config = _config(
        _workload("gw", ["169.254.1.1"]),
        _workload("fab", ["10.0.0.1", "169.254.100.7"]),
        _workload("ll", ["fe80::5"]),
        _workload("lo", ["127.0.0.5"]),
        _workload("ok", ["169.254.169.254"]),  # link-local, but outside the lab's ranges
    )
    with pytest.raises(ValidationError) as caught:
        plan(config, "twlab")
    found = {(p.name, p.path, p.value): p.reason for p in caught.value.problems}
    assert set(found) == {
        ("gw", "spec.interfaces[0].ips[0]", "169.254.1.1"),
        ("fab", "spec.interfaces[0].ips[1]", "169.254.100.7"),
        ("ll", "spec.interfaces[0].ips[0]", "fe80::5"),
        ("lo", "spec.interfaces[0].ips[0]", "127.0.0.5"),
    }
    assert "gateway" in found[("gw", "spec.interfaces[0].ips[0]", "169.254.1.1")]
    assert str(FABRIC_IPV4) in found[("fab", "spec.interfaces[0].ips[1]", "169.254.100.7")]


def test_a_bad_lab_name_is_refused() -> None:
    with pytest.raises(ValueError, match="twlab"):
        plan(_config(_workload("a", ["10.0.0.1"])), "lab")


def test_ipv6_turns_on_forwarding_and_a_v6_fabric() -> None:
    topology = plan(
        _config(
            _workload("a", ["2001:db8::a", "10.0.0.1"], host="h1"),
            _workload("b", ["2001:db8::b"], host="h2"),
        ),
        "twlab",
    )
    assert topology.ipv6
    assert [str(h.fabric_ipv6) for h in topology.hosts] == ["fe80::a9fe:4001", "fe80::a9fe:4002"]
    host = _namespace(topology, "twlab-h-h1")
    assert ("net/ipv6/conf/all/forwarding", "1") in host.sysctls
    assert ("net/ipv6/conf/default/accept_dad", "0") in host.sysctls
    remote = _route(topology, "twlab-h-h1", "2001:db8::b/128")
    assert str(remote.gateway) == "fe80::a9fe:4002"
    a = _namespace(topology, "twlab-w-a")
    assert str(_route(topology, "twlab-w-a", "::/0").gateway) == "fe80::1"
    assert {str(address) for _, address in a.addresses} == {"2001:db8::a/128", "10.0.0.1/32"}


def test_interfaces_without_addresses_get_no_link_and_a_bare_workload_an_empty_namespace() -> None:
    topology = plan(
        _config(
            _workload(
                "fw",
                host="h1",
                interfaces=[
                    {"name": "mgmt"},
                    {"name": "left", "ips": ["10.0.1.1"]},
                    {"name": "right", "ips": ["10.0.2.1"]},
                ],
            ),
            _workload("bare", host="h1"),
        ),
        "twlab",
    )
    fw = next(w for w in topology.workloads if w.name == "fw")
    assert [(i.name, [str(ip) for ip in i.ips]) for i in fw.interfaces] == [
        ("left", ["10.0.1.1"]),
        ("right", ["10.0.2.1"]),
    ]
    assert len({i.peer for i in fw.interfaces}) == 2
    assert _route(topology, "twlab-w-fw", "0.0.0.0/0").interface == "left"
    assert _route(topology, "twlab-h-h1", "10.0.2.1/32").interface == fw.interfaces[1].peer
    bare = _namespace(topology, "twlab-w-bare")
    assert (bare.addresses, bare.routes) == ((), ())
    assert not any(v.peer_namespace == "twlab-w-bare" for v in topology.veths)


# -- property: the planned routes deliver -----------------------------------------------------


@st.composite
def _configs(draw: st.DrawFn) -> Config:
    """Workloads with pod-like and long names, hosts, projects, externals, IPv4 and IPv6."""
    addresses = iter(
        draw(
            st.permutations(
                [f"10.0.{i}.1" for i in range(8)] + [f"2001:db8::{i}" for i in range(8)]
            )
        )
    )
    manifests = [_project("p1")]
    names = draw(
        st.lists(
            st.sampled_from(["a", "b", "ns/pod-1", "ns/pod-2", "x" * 40, "web", "db", "ext"]),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    for name in names:
        kind = draw(st.sampled_from(["vm", "vm", "container", "external"]))
        interfaces = [
            {"name": f"if{i}", "ips": [next(addresses) for _ in range(draw(st.integers(0, 2)))]}
            for i in range(draw(st.integers(0, 2)))
        ]
        spec: dict[str, Any] = {"kind": kind, "interfaces": interfaces}
        host = draw(st.sampled_from(["h1", "h2", "a-rather-long-host-name", None]))
        if host and kind != "external":
            spec["host"] = host
        project = draw(st.sampled_from(["p1", None]))
        manifests.append(
            _workload(name, project=project, **spec) if project else _workload(name, **spec)
        )
    return _config(*manifests)


def _deliver(topology: Topology, src: str, dst_ip: Any) -> str | None:
    """Follow the planned routes from namespace ``src`` to ``dst_ip``: the namespace that
    holds it, or None if a hop has no route or no neighbour answers."""
    segments: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for veth in topology.veths:
        a, b = (veth.namespace, veth.name), (veth.peer_namespace, veth.peer_name)
        segments.setdefault(a, set()).add(b)
        segments.setdefault(b, set()).add(a)
    fabric = next(ns for ns in topology.namespaces if ns.role is Role.FABRIC)
    on_fabric = {peer for port in fabric.bridge_ports for peer in segments[(fabric.name, port)]}
    for end in on_fabric:
        segments[end] = on_fabric - {end}
    local = {ns.name: {(itf, a) for itf, a in ns.addresses} for ns in topology.namespaces}
    here = src
    for _ in range(6):
        if any(a.ip == dst_ip for _, a in local[here]):
            return here
        ns = next(n for n in topology.namespaces if n.name == here)
        candidates = [r for r in ns.routes if dst_ip in r.destination]
        candidates += [
            Route(a.network, itf)
            for itf, a in local[here]
            if a.network.prefixlen < a.max_prefixlen and dst_ip in a.network
        ]
        if not candidates:
            return None
        route = max(candidates, key=lambda r: r.destination.prefixlen)
        hop = route.gateway or dst_ip
        neighbours = segments.get((here, route.interface), set())
        owner = [n for n, itf in neighbours if any(a.ip == hop and i == itf for i, a in local[n])]
        if len(owner) != 1:
            return None
        here = owner[0]
    return None


@settings(max_examples=150, deadline=None)
@given(_configs())
def test_planned_routes_deliver_between_every_pair_of_addresses(config: Config) -> None:
    topology = plan(config, "twlab")
    names = [ns.name for ns in topology.namespaces]
    assert len(set(names)) == len(names) and all(n.startswith("twlab-") for n in names)
    for veth in topology.veths:
        assert len(veth.name) <= 15 and len(veth.peer_name) <= 15
    for src in topology.workloads:
        for dst in topology.workloads:
            if src.name == dst.name:
                continue
            for src_ip in src.ips:
                for dst_ip in dst.ips:
                    if src_ip.version == dst_ip.version:
                        assert _deliver(topology, src.namespace, dst_ip) == dst.namespace, (
                            f"{src.name} → {dst.name} ({dst_ip})"
                        )


def _service(name: str, template: str, mode: str, workload: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "tagwall/v1",
            "kind": "ServiceTemplate",
            "metadata": {"name": template},
            "spec": {"mode": mode, "function": "l7-firewall"},
        },
        {
            "apiVersion": "tagwall/v1",
            "kind": "ServiceInstance",
            "metadata": {"name": name},
            "spec": {"template": template, "workloads": [workload]},
        },
    ]


def _sides(ips: tuple[list[str], list[str]]) -> list[dict[str, Any]]:
    return [
        {"name": "left", "ips": ips[0], "role": "left"},
        {"name": "right", "ips": ips[1], "role": "right"},
    ]


def test_service_workloads_are_wired_by_their_template_mode() -> None:
    """In-network: left and right keep their addresses, the namespace forwards and sends what
    came in on one side out of the other.  Transparent: left and right get links although
    they have no addresses, and a bridge joins them; the host gives their ports no gateway.
    Every host-side port carries the alias the agent finds service ports by."""
    topology = plan(
        _config(
            _workload("fw", host="h1", interfaces=_sides((["10.9.0.1"], ["10.9.1.1"]))),
            _workload("tp", host="h1", interfaces=_sides(([], []))),
            *_service("fw-1", "routed", "in-network", "fw"),
            *_service("tp-1", "bump", "transparent", "tp"),
        ),
        "twlab",
    )
    by_name = {w.name: w for w in topology.workloads}
    assert by_name["fw"].service is not None and by_name["tp"].service is not None
    assert (by_name["fw"].service.mode, by_name["fw"].service.bridge) == ("in-network", None)
    assert by_name["tp"].service.as_dict() == {
        "mode": "transparent",
        "function": "l7-firewall",
        "left": "left",
        "right": "right",
        "bridge": "br-svc",
    }
    fw = _namespace(topology, "twlab-w-fw")
    assert ("net/ipv4/ip_forward", "1") in fw.sysctls
    assert [(r.interface, r.table) for r in fw.rules] == [("left", 101), ("right", 102)]
    out = {r.table: (r.interface, str(r.gateway)) for r in fw.routes if r.table is not None}
    assert out == {101: ("right", str(GATEWAY_IPV4)), 102: ("left", str(GATEWAY_IPV4))}
    tp = _namespace(topology, "twlab-w-tp")
    assert (tp.bridge, tp.bridge_ports, tp.addresses, tp.rules) == (
        "br-svc",
        ("left", "right"),
        (),
        (),
    )
    ports = {v.name: v.alias for v in topology.veths if v.peer_namespace == "twlab-w-tp"}
    assert sorted(str(alias) for alias in ports.values()) == ["tagwall:tp/left", "tagwall:tp/right"]
    host = _namespace(topology, "twlab-h-h1")
    assert {itf for itf, _ in host.addresses} & set(ports) == set()


def test_service_interfaces_that_do_not_fit_the_mode_are_refused() -> None:
    config = _config(
        _workload("fw", host="h1", interfaces=_sides((["10.9.0.1"], ["fd00::1"]))),
        _workload("tp", host="h1", interfaces=_sides((["10.9.2.1"], []))),
        *_service("fw-1", "routed", "in-network", "fw"),
        *_service("tp-1", "bump", "transparent", "tp"),
    )
    with pytest.raises(ValidationError) as caught:
        plan(config, "twlab")
    found = {(p.name, p.path): p.reason for p in caught.value.problems}
    assert set(found) == {("fw", "spec.interfaces[1].ips"), ("tp", "spec.interfaces[0].ips")}
    assert "needs an IPv4 address" in found[("fw", "spec.interfaces[1].ips")]
    assert "no addresses" in found[("tp", "spec.interfaces[0].ips")]
