"""Kubernetes import: namespaces, pods and network policies → native tagwall manifests.

``translate`` replaces every Kubernetes document by native ``tagwall/v1`` documents that keep
its ``source`` and ``index`` (so validation errors point at the user's file) and passes native
documents through untouched.  It is pure.  Problems in the Kubernetes input (wrong shapes,
unknown values, unsupported fields) are all collected into one ``ValidationError``.  The
result evaluates exactly as Kubernetes would (DESIGN §2, docs/semantics.md):

Accepted kinds
    ``v1`` Namespace and Pod; ``networking.k8s.io/v1`` NetworkPolicy;
    ``policy.networking.k8s.io/v1alpha1`` AdminNetworkPolicy and BaselineAdminNetworkPolicy;
    ``policy.networking.k8s.io/v1alpha2`` ClusterNetworkPolicy.

Namespace ``N`` → Project ``N``
    Its labels become project tags (inherited by its workloads) of type ``ns:<key>``, a type
    space of their own, so namespace and pod labels never collide.  ``ns:kubernetes.io/
    metadata.name: N`` is always added, as Kubernetes does.  A namespace that pods or policies
    use without a Namespace document gets a Project with only that tag.

Pod ``P`` in namespace ``N`` (default ``default``) → Workload ``N/P``
    Project ``N``, kind ``container``, ``host`` = ``spec.nodeName``, one interface ``eth0``
    holding ``status.podIPs`` (or ``status.podIP``), the named container ports, and the labels as
    tags of the same type and value.  Two exceptions: label ``project`` becomes ``k8s:project``
    (``project`` is tagwall's pseudo-tag), and label ``label`` is the built-in many-valued type
    (``label=x`` still holds exactly when the value is ``x``).  Pods with ``hostNetwork`` or in
    phase Succeeded/Failed get no interface: their address is the node's, or no longer theirs.

Selectors
    matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist) become tagwall selectors
    (``k=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``), AND-ed.  Namespace selectors
    test the ``ns:`` types.  An empty selector picks every pod: ``ns:kubernetes.io/
    metadata.name`` (present on every imported pod, never on a bare address); an all-negative
    one (``!k``, ``notin``) gets it too, so that it cannot pick an address that a labelled
    AddressGroup tags.  A peer limited to the policy's own namespace adds ``project=N``.
    Every custom tag type used gets a ``TagType`` document, unless the input declares it.

NetworkPolicy → application tier
    For each effective policy type (given, else Ingress plus Egress iff there are egress rules,
    as Kubernetes defaults them) one ApplicationPolicySet in project ``N`` for that direction
    only, picking ``spec.podSelector`` plus ``project=N``, with one FirewallPolicy of allow
    rules: one per peer of each Kubernetes rule (ingress: ``from`` = peer, egress: ``to`` =
    peer; no peers = any), services from ``ports`` (TCP default; a named port such as
    ``tcp/http`` is resolved on the destination; ``endPort`` gives a range; no port = every port
    of the protocol).  No rules means a policy with no rules: the pods are isolated in that
    direction.  Several NetworkPolicies are several sets; first match over allow-only rules is
    their union, and no match denies, as in Kubernetes.

AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy → admin / baseline tier
    Global sets per direction that has rules, picking ``spec.subject``; rules in written order,
    Allow/Accept → allow, Deny → deny, Pass → pass (to the next tier).  ANP: admin tier, set
    priority = ``spec.priority``.  BANP: baseline tier, priority 1000.  ClusterNetworkPolicy:
    tier from ``spec.tier``, priority from ``spec.priority``.  Upstream leaves policies of equal
    priority unordered; here they run by name (prefix ``anp.`` before ``banp.`` before
    ``cnp.``, then the Kubernetes name).  Egress ``networks`` become CIDR endpoints; ``nodes``
    and ``domainNames`` peers are rejected.

Settings are never emitted: Kubernetes allows by default, which is tagwall's default posture.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

from ..errors import ValidationError
from ._k8s_match import label_type, label_value, ns_type, pod_type
from ._k8s_policies import admin_policy, network_policy
from ._k8s_scope import API_VERSION, NS_NAME_TYPE, Import, Scope, at
from ._manifest import Document, Json
from ._tags import BUILTIN_MULTI_TYPES, BUILTIN_SINGLE_TYPES

__all__ = ["KUBERNETES_KINDS", "translate"]

_API_VERSIONS: Mapping[str, str] = {
    "Namespace": "v1",
    "Pod": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "AdminNetworkPolicy": "policy.networking.k8s.io/v1alpha1",
    "BaselineAdminNetworkPolicy": "policy.networking.k8s.io/v1alpha1",
    "ClusterNetworkPolicy": "policy.networking.k8s.io/v1alpha2",
}
KUBERNETES_KINDS: frozenset[str] = frozenset(_API_VERSIONS)
_NAMESPACED = frozenset({"Pod", "NetworkPolicy"})
_BUILTIN_TYPES = frozenset((*BUILTIN_SINGLE_TYPES, *BUILTIN_MULTI_TYPES))


def _is_kubernetes(doc: Document) -> bool:
    return doc.kind in KUBERNETES_KINDS and doc.body.get("apiVersion") != API_VERSION


def translate(documents: list[Document]) -> list[Document]:
    """Native documents for ``documents``: TagTypes, implied Projects, then each in order."""
    imp = Import()
    declared = {d.name for d in documents if d.kind == "Namespace" and _is_kubernetes(d)}
    native = {(d.kind, d.name) for d in documents if not _is_kubernetes(d)}
    translated: list[Document] = []
    for doc in documents:
        translated += _translate_one(imp, doc) if _is_kubernetes(doc) else [doc]
    if imp.problems:
        raise ValidationError(imp.problems)
    projects = [
        _project(Scope(imp, imp.namespaces[ns], ""), ns, {})
        for ns in sorted(imp.namespaces)
        if ns not in declared and ("Project", ns) not in native
    ]
    types = [
        Scope(imp, imp.tag_types[name], "").emit("TagType", name, {})
        for name in sorted(imp.tag_types)
        if name not in _BUILTIN_TYPES and ("TagType", name) not in native
    ]
    return types + projects + translated


def _translate_one(imp: Import, doc: Document) -> list[Document]:
    meta = doc.body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name")
    namespace = meta.get("namespace", "default")
    namespaced = doc.kind in _NAMESPACED
    shown = str(name) if isinstance(name, str) else ""
    shown = f"{namespace}/{shown}" if namespaced else shown
    s = Scope(imp, doc, shown)
    if doc.body.get("apiVersion") != _API_VERSIONS[doc.kind]:
        s.problem(
            "apiVersion",
            f"unsupported for {doc.kind}",
            doc.body.get("apiVersion"),
            (_API_VERSIONS[doc.kind],),
        )
        return []
    if not isinstance(name, str) or not name:
        s.problem("metadata.name", "is required")
        return []
    if not namespaced:
        if doc.kind == "Namespace":
            return [_project(s, name, s.mapping(meta, "labels", "metadata"))]
        return admin_policy(s, name, doc.body)
    if not isinstance(namespace, str) or not namespace:
        s.problem("metadata.namespace", "must be a non-empty string", namespace)
        return []
    s.use_namespace(namespace)
    if doc.kind == "Pod":
        return _pod(s, name, namespace, meta)
    return network_policy(s, name, namespace, doc.body)


def _tags(
    s: Scope, labels: Mapping[str, Json], path: str, to_type: Callable[[str], str]
) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for key in sorted(labels):
        tag_type = label_type(s, key, at(path, key), to_type)
        value = label_value(s, labels[key], at(path, key))
        if tag_type is not None and value is not None:
            out[tag_type] = [value] if tag_type in BUILTIN_MULTI_TYPES else value
    return out


def _project(s: Scope, name: str, labels: Mapping[str, Json]) -> Document:
    tags = _tags(s, labels, "metadata.labels", ns_type)
    tags[s.use_type(NS_NAME_TYPE)] = name  # Kubernetes keeps this label equal to the name
    return s.emit("Project", name, {"tags": tags})


def _pod(s: Scope, name: str, namespace: str, meta: Mapping[str, Json]) -> list[Document]:
    spec = s.mapping(s.doc.body, "spec", "")
    status = s.mapping(s.doc.body, "status", "")
    out: dict[str, Json] = {"kind": "container"}
    host = s.text(spec, "nodeName", "spec")
    if host:
        out["host"] = host
    ips: list[Json] = []
    entries = [
        (at(at("status.podIPs", i), "ip"), entry.get("ip") if isinstance(entry, dict) else entry)
        for i, entry in enumerate(s.listing(status, "podIPs", "status"))
    ] or [("status.podIP", status.get("podIP"))]
    for where, raw in entries:
        if raw is None:
            continue
        try:
            ip = str(ipaddress.ip_address(raw)) if isinstance(raw, str) else None
        except ValueError:
            ip = None
        if ip is None:
            s.problem(where, "is not an IP address", raw)
        elif ip not in ips:
            ips.append(ip)
    inactive = spec.get("hostNetwork") is True or status.get("phase") in ("Succeeded", "Failed")
    if ips and not inactive:
        out["interfaces"] = [{"name": "eth0", "ips": ips}]
    ports: list[Json] = []
    for i, container in enumerate(s.listing(spec, "containers", "spec")):
        where = at("spec.containers", i)
        if not isinstance(container, dict):
            s.problem(where, "must be a mapping", container)
            continue
        for j, port in enumerate(s.listing(container, "ports", where)):
            if isinstance(port, dict) and isinstance(port.get("name"), str):
                ports.append(_named_port(s, port, at(at(where, "ports"), j)))
    if ports:
        out["ports"] = ports
    tags = _tags(s, s.mapping(meta, "labels", "metadata"), "metadata.labels", pod_type)
    if tags:
        out["tags"] = tags
    return [s.emit("Workload", f"{namespace}/{name}", out, namespace)]


def _named_port(s: Scope, port: Mapping[str, Json], path: str) -> Json:
    number = s.number(port, "containerPort", path, 1, 65535)
    out: dict[str, Json] = {"name": port["name"], "port": number}
    protocol = port.get("protocol", "TCP")
    if protocol not in ("TCP", "UDP", "SCTP"):
        s.problem(at(path, "protocol"), "unknown protocol", protocol, ("TCP", "UDP", "SCTP"))
    elif protocol != "TCP":
        out["protocol"] = protocol
    return out
