"""Kubernetes import, what a rule matches: label selectors, peers and ports.

Every function reads one Kubernetes shape through a ``Scope`` (reporting problems there) and
returns the native form: selector requirements (joined with ``,`` into a ``tags`` selector),
rule endpoints (``{tags: ...}``, ``{cidr: ..., except: [...]}``, ``{any: true}``) or service
strings (``tcp/80``, ``udp/53-60``, ``tcp/http``, ``http``; None = any service).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping

from ._k8s_scope import NS_NAME_TYPE, Scope, at
from ._manifest import Json
from ._tags import PROJECT_PSEUDO_TAG, valid_tag_type, valid_tag_value

__all__ = [
    "admin_peers",
    "admin_services",
    "anchored",
    "any_endpoint",
    "cnp_services",
    "label_type",
    "label_value",
    "np_peer",
    "np_services",
    "ns_type",
    "pod_type",
    "pods_terms",
    "selector_terms",
    "tags",
]


def any_endpoint() -> dict[str, Json]:
    """A fresh ``{any: true}`` (fresh, so YAML output never shows anchors)."""
    return {"any": True}


_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_DNS_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_PORT_NAME_RE = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def pod_type(key: str) -> str:
    """A pod label key as a tag type; ``project`` is tagwall's pseudo-tag, so it moves aside."""
    return "k8s:project" if key == PROJECT_PSEUDO_TAG else key


def ns_type(key: str) -> str:
    """A namespace label key as a (project) tag type, in its own ``ns:`` space."""
    return "ns:" + key


def tags(terms: list[str]) -> dict[str, Json]:
    return {"tags": ",".join(terms)}


def _valid_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_RE.match(prefix)):
        return False
    return bool(_KEY_NAME_RE.match(name))


def label_type(s: Scope, key: str, path: str, to_type: Callable[[str], str]) -> str | None:
    """Check a Kubernetes label key and return (and record) its tag type."""
    tag_type = to_type(key)
    if not _valid_key(key):
        s.problem(path, "is not a valid Kubernetes label key", key)
    elif not valid_tag_type(tag_type):
        s.problem(path, f"tag type {tag_type!r} would be longer than 253 characters", key)
    else:
        return s.use_type(tag_type)
    return None


def label_value(s: Scope, value: Json, path: str) -> str | None:
    if isinstance(value, str) and valid_tag_value(value):
        return value
    s.problem(path, "is not a valid Kubernetes label value (a string of ≤ 63 characters)", value)
    return None


def selector_terms(s: Scope, selector: Json, path: str, to_type: Callable[[str], str]) -> list[str]:
    """A LabelSelector as selector requirements; ``[]`` for the empty selector (everything)."""
    if selector is None:
        return []
    if not isinstance(selector, dict):
        s.problem(path, "must be a label selector mapping", selector)
        return []
    s.known(selector, ("matchLabels", "matchExpressions"), path)
    terms: list[str] = []
    labels = s.mapping(selector, "matchLabels", path)
    for key in sorted(labels):
        tag_type = label_type(s, key, at(at(path, "matchLabels"), key), to_type)
        value = label_value(s, labels[key], at(at(path, "matchLabels"), key))
        if tag_type is not None and value is not None:
            terms.append(f"{tag_type}={value}")
    for i, expr in enumerate(s.listing(selector, "matchExpressions", path)):
        term = _expression(s, expr, at(at(path, "matchExpressions"), i), to_type)
        if term is not None:
            terms.append(term)
    return terms


def _expression(s: Scope, expr: Json, path: str, to_type: Callable[[str], str]) -> str | None:
    if not isinstance(expr, dict):
        s.problem(path, "must be a mapping with key, operator and values", expr)
        return None
    s.known(expr, ("key", "operator", "values"), path)
    key = s.text(expr, "key", path, required=True)
    op = s.text(expr, "operator", path, required=True)
    tag_type = None if key is None else label_type(s, key, at(path, "key"), to_type)
    raw = s.listing(expr, "values", path)
    checked = [label_value(s, v, at(at(path, "values"), i)) for i, v in enumerate(raw)]
    if tag_type is None or op is None or None in checked:
        return None
    values = sorted({v for v in checked if v is not None})
    if op in ("Exists", "DoesNotExist"):
        if raw:
            s.problem(at(path, "values"), f"must be empty for operator {op}", raw)
            return None
        return tag_type if op == "Exists" else f"!{tag_type}"
    if op not in ("In", "NotIn"):
        s.problem(
            at(path, "operator"), "unknown operator", op, ("In", "NotIn", "Exists", "DoesNotExist")
        )
        return None
    if not values:
        s.problem(at(path, "values"), f"must not be empty for operator {op}", raw)
        return None
    if len(values) == 1:
        return f"{tag_type}={values[0]}" if op == "In" else f"{tag_type}!={values[0]}"
    if "" in values:
        s.problem(at(path, "values"), "an empty value in a list of several is not supported", raw)
        return None
    return f"{tag_type} {'in' if op == 'In' else 'notin'} ({','.join(values)})"


def anchored(s: Scope, terms: list[str]) -> list[str]:
    """``terms``, limited to pods: Kubernetes selectors never pick a bare address.

    An empty or all-negative selector (``!k``, ``k!=v``, ``notin``) would also hold for a bare
    address that a labelled AddressGroup tags, so it gets ``ns:kubernetes.io/metadata.name``,
    the project tag every imported pod carries and no bare address does.
    """
    if any(not t.startswith("!") and "!=" not in t and " notin (" not in t for t in terms):
        return terms
    return [*terms, s.use_type(NS_NAME_TYPE)]


def pods_terms(s: Scope, spec: Mapping[str, Json], path: str) -> list[str]:
    """``{namespaceSelector, podSelector}`` (both optional, AND-ed) as requirements."""
    terms = selector_terms(s, spec.get("namespaceSelector"), at(path, "namespaceSelector"), ns_type)
    terms += selector_terms(s, spec.get("podSelector"), at(path, "podSelector"), pod_type)
    return anchored(s, terms)


def _cidr(s: Scope, value: Json, path: str) -> Network | None:
    try:
        return ipaddress.ip_network(str(value), strict=False) if isinstance(value, str) else None
    except ValueError:
        pass
    s.problem(path, "is not a CIDR such as 10.0.0.0/8 or fd00::/8", value)
    return None


def _strict_subnet(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner != outer and inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner != outer and inner.subnet_of(outer)
    return False


# -- NetworkPolicy --------------------------------------------------------------------------


def np_peer(s: Scope, peer: Json, path: str, namespace: str) -> dict[str, Json] | None:
    """A NetworkPolicyPeer: pods by pod and/or namespace selector, or an ipBlock."""
    if not isinstance(peer, dict):
        s.problem(path, "must be a mapping", peer)
        return None
    s.known(peer, ("podSelector", "namespaceSelector", "ipBlock"), path)
    if "ipBlock" in peer:
        if "podSelector" in peer or "namespaceSelector" in peer:
            s.problem(path, "ipBlock cannot be combined with a selector", dict(peer))
            return None
        block = s.mapping(peer, "ipBlock", path)
        s.known(block, ("cidr", "except"), at(path, "ipBlock"))
        cidr = _cidr(s, block.get("cidr"), at(at(path, "ipBlock"), "cidr"))
        excepts: list[Json] = []
        for i, raw in enumerate(s.listing(block, "except", at(path, "ipBlock"))):
            where = at(at(at(path, "ipBlock"), "except"), i)
            net = _cidr(s, raw, where)
            if net is not None and cidr is not None:
                if not _strict_subnet(net, cidr):
                    s.problem(where, f"must be a strict subnet of the cidr {cidr}", raw)
                excepts.append(str(net))
        if cidr is None:
            return None
        return {"cidr": str(cidr), "except": excepts} if excepts else {"cidr": str(cidr)}
    if "namespaceSelector" in peer:
        terms = selector_terms(s, peer["namespaceSelector"], at(path, "namespaceSelector"), ns_type)
        terms += selector_terms(s, peer.get("podSelector"), at(path, "podSelector"), pod_type)
        return tags(anchored(s, terms))
    if "podSelector" in peer:
        terms = selector_terms(s, peer["podSelector"], at(path, "podSelector"), pod_type)
        return tags([*terms, f"{PROJECT_PSEUDO_TAG}={namespace}"])
    s.problem(path, "a peer needs podSelector, namespaceSelector or ipBlock", dict(peer))
    return None


def _protocol(s: Scope, parent: Mapping[str, Json], path: str) -> str:
    raw = parent.get("protocol", "TCP")
    if isinstance(raw, str) and raw in _PROTOCOLS:
        return _PROTOCOLS[raw]
    s.problem(at(path, "protocol"), "unknown protocol", raw, tuple(_PROTOCOLS))
    return "tcp"


def _port_name(s: Scope, value: Json, path: str) -> str | None:
    if isinstance(value, str) and _PORT_NAME_RE.match(value):
        return value
    s.problem(path, "is not a port name (≤ 15 of a-z, 0-9, '-', with a letter)", value)
    return None


def np_services(s: Scope, rule: Mapping[str, Json], path: str) -> list[Json] | None:
    """NetworkPolicyPorts as services; None (any) when ``ports`` is absent or empty."""
    out: list[Json] = []
    for i, port in enumerate(s.listing(rule, "ports", path)):
        where = at(at(path, "ports"), i)
        if not isinstance(port, dict):
            s.problem(where, "must be a mapping", port)
            continue
        s.known(port, ("protocol", "port", "endPort"), where)
        proto = _protocol(s, port, where)
        number, end = port.get("port"), port.get("endPort")
        if number is None:
            if end is not None:
                s.problem(at(where, "endPort"), "needs a numeric port", end)
            out.append(proto)
        elif isinstance(number, str):
            name = _port_name(s, number, at(where, "port"))
            if end is not None:
                s.problem(at(where, "endPort"), "cannot be used with a named port", end)
            elif name is not None:
                out.append(f"{proto}/{name}")
        else:
            first = s.number(port, "port", where, 1, 65535)
            last = first if end is None else s.number(port, "endPort", where, first or 1, 65535)
            if first is not None and last is not None:
                out.append(f"{proto}/{first}" if first == last else f"{proto}/{first}-{last}")
    return out or None


# -- AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy -------------------

_UNSUPPORTED_PEERS = {
    "nodes": "node peers are not supported: tagwall imports no Kubernetes nodes",
    "domainNames": "domain-name peers are not supported",
}


def admin_peers(s: Scope, peers: list[Json], path: str, *, egress: bool) -> list[dict[str, Json]]:
    """Admin-style peers (``namespaces``, ``pods``, egress ``networks``) as endpoints."""
    allowed = ("namespaces", "pods", "networks") if egress else ("namespaces", "pods")
    out: list[dict[str, Json]] = []
    for i, peer in enumerate(peers):
        where = at(path, i)
        if not isinstance(peer, dict):
            s.problem(where, "must be a mapping", peer)
            continue
        if not s.known(peer, allowed, where, _UNSUPPORTED_PEERS):
            continue
        kind = s.one_of(peer, allowed, where)
        if kind == "namespaces":
            terms = selector_terms(s, peer[kind], at(where, kind), ns_type)
            out.append(tags(anchored(s, terms)))
        elif kind == "pods":
            out.append(tags(pods_terms(s, s.mapping(peer, kind, where), at(where, kind))))
        elif kind == "networks":
            for j, raw in enumerate(s.listing(peer, kind, where)):
                net = _cidr(s, raw, at(at(where, kind), j))
                if net is not None:
                    out.append({"cidr": str(net)})
    return out


def admin_services(s: Scope, rule: Mapping[str, Json], path: str) -> list[Json] | None:
    """ANP/BANP v1alpha1 ``ports``: portNumber, namedPort or portRange each."""
    out: list[Json] = []
    for i, port in enumerate(s.listing(rule, "ports", path)):
        where = at(at(path, "ports"), i)
        if not isinstance(port, dict):
            s.problem(where, "must be a mapping", port)
            continue
        kinds = ("portNumber", "namedPort", "portRange")
        kind = s.one_of(port, kinds, where) if s.known(port, kinds, where) else None
        if kind == "namedPort":
            name = _port_name(s, port[kind], at(where, kind))
            if name is not None:
                out.append(name)
        elif kind is not None:
            spec, sub = s.mapping(port, kind, where), at(where, kind)
            keys = ("protocol", "port") if kind == "portNumber" else ("protocol", "start", "end")
            s.known(spec, keys, sub)
            proto = _protocol(s, spec, sub)
            if kind == "portNumber":
                number = s.number(spec, "port", sub, 1, 65535)
                if number is not None:
                    out.append(f"{proto}/{number}")
            else:
                _range(s, spec, sub, proto, out)
    return out or None


def _range(s: Scope, spec: Mapping[str, Json], path: str, proto: str, out: list[Json]) -> None:
    first = s.number(spec, "start", path, 1, 65535)
    last = s.number(spec, "end", path, 1, 65535)
    if first is not None and last is not None:
        if first > last:
            s.problem(at(path, "end"), f"must not be below start ({first})", last)
        else:
            out.append(f"{proto}/{first}-{last}")


def cnp_services(s: Scope, rule: Mapping[str, Json], path: str) -> list[Json] | None:
    """ClusterNetworkPolicy v1alpha2 ``protocols``: tcp/udp/sctp destinationPort or a name."""
    out: list[Json] = []
    kinds = ("tcp", "udp", "sctp", "destinationNamedPort")
    for i, entry in enumerate(s.listing(rule, "protocols", path)):
        where = at(at(path, "protocols"), i)
        if not isinstance(entry, dict):
            s.problem(where, "must be a mapping", entry)
            continue
        kind = s.one_of(entry, kinds, where) if s.known(entry, kinds, where) else None
        if kind == "destinationNamedPort":
            name = _port_name(s, entry[kind], at(where, kind))
            if name is not None:
                out.append(name)
        elif kind is not None:
            spec, sub = s.mapping(entry, kind, where), at(where, kind)
            s.known(spec, ("destinationPort",), sub)
            if spec.get("destinationPort") is None:
                out.append(kind)  # every port of the protocol
                continue
            port, sub = s.mapping(spec, "destinationPort", sub), at(sub, "destinationPort")
            which = (
                s.one_of(port, ("number", "range"), sub)
                if s.known(port, ("number", "range"), sub)
                else None
            )
            if which == "number":
                number = s.number(port, "number", sub, 1, 65535)
                if number is not None:
                    out.append(f"{kind}/{number}")
            elif which == "range":
                rng = s.mapping(port, "range", sub)
                s.known(rng, ("start", "end"), at(sub, "range"))
                _range(s, rng, at(sub, "range"), kind, out)
    return out or None
