"""Realizing a lab plan in the kernel with pyroute2, and removing a lab's namespaces.

One process builds the whole lab without forking per call: every netlink socket is opened
inside its namespace (``tagwall._netns.entered``; a socket keeps the namespace it was made in),
and sysctls are written through ``/proc/sys`` from inside the namespace (the kernel resolves
``/proc/sys/net`` against the writing thread's namespace).  Veth peers are created directly in
their target namespace, so no lab link ever exists in the root namespace: deleting a lab's
namespaces deletes every link it made.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).  Kernel refusals become ``LabError`` naming the
namespace, the object and the kernel's reason.  pyroute2 (~90 ms to import) is imported by the
functions that use it, so that ``import tagwall.lab`` (and every ``tagwall`` command) does
not pay for it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from .._netns import NETNS_DIR, entered
from ._errors import LabError
from ._names import namespace_prefix
from ._topology import Namespace, Route, Topology

__all__ = ["create", "lab_namespaces", "remove_namespaces"]

_IFA_F_NODAD = 0x02  # linux/if_addr.h: the address is usable at once, without DAD
_RTNH_F_ONLINK = 0x04  # linux/rtnetlink.h: the gateway is on the link, whatever the subnets
_RT_SCOPE_LINK = 253


def lab_namespaces(lab: str) -> list[str]:
    """Every namespace whose name starts with the lab's prefix, sorted."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    prefix = namespace_prefix(lab)
    return sorted(name for name in names if name.startswith(prefix))


def remove_namespaces(names: list[str]) -> None:
    """Delete namespaces by name (their links go with them); a missing one is not an error."""
    from pyroute2 import netns  # type: ignore[import-untyped]  # pyroute2 has no types

    for name in names:
        try:
            netns.remove(name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise LabError(f"cannot delete namespace {name}: {exc.strerror or exc}") from exc


def create(topology: Topology, progress: Callable[[str], None]) -> None:
    """Make every namespace, link, address and route of ``topology``.

    The caller guarantees that none of the namespaces exists; on failure what was made stays
    for the caller to remove (``remove_namespaces``), which ``lab down`` does.
    """
    from pyroute2 import netns

    progress(f"creating {len(topology.namespaces)} network namespaces")
    for ns in topology.namespaces:
        try:
            netns.create(ns.name)
        except OSError as exc:
            raise LabError(f"cannot create namespace {ns.name}: {exc.strerror or exc}") from exc
    with ExitStack() as stack:
        links: dict[str, Any] = {}
        for ns in topology.namespaces:
            links[ns.name] = stack.enter_context(_configured(ns))
        progress(f"wiring {len(topology.veths)} veth pairs")
        for ns in topology.namespaces:
            if ns.bridge is not None:
                # Multicast snooping off: without an MLD querier it can starve IPv6 neighbour
                # discovery.  STP off: ports forward at once.
                with _kernel(ns.name, f"create bridge {ns.bridge}"):
                    links[ns.name].link(
                        "add", ifname=ns.bridge, kind="bridge", br_mcast_snooping=0, br_stp_state=0
                    )
        for veth in topology.veths:
            what = f"create veth {veth.name} (peer {veth.peer_name} in {veth.peer_namespace})"
            with _kernel(veth.namespace, what):
                links[veth.namespace].link(
                    "add",
                    ifname=veth.name,
                    kind="veth",
                    peer={"ifname": veth.peer_name, "net_ns_fd": veth.peer_namespace},
                )
            if veth.alias is not None:
                with _kernel(veth.namespace, f"set the alias of {veth.name}"):
                    ipr = links[veth.namespace]
                    ipr.link("set", index=_index(ipr, veth.name), ifalias=veth.alias)
        ends: dict[str, list[str]] = {ns.name: [] for ns in topology.namespaces}
        for veth in topology.veths:
            ends[veth.namespace].append(veth.name)
            ends[veth.peer_namespace].append(veth.peer_name)
        progress("addressing and routing")
        for ns in topology.namespaces:
            _wire(links[ns.name], ns, ends[ns.name])


@contextmanager
def _configured(ns: Namespace) -> Iterator[Any]:
    """An IPRoute socket inside ``ns`` after its sysctls are written and ``lo`` is up."""
    from pyroute2 import IPRoute

    with entered(ns.name):
        for key, value in ns.sysctls:
            try:
                with open(f"/proc/sys/{key}", "w", encoding="ascii") as f:
                    f.write(value)
            except OSError as exc:
                hint = " (is IPv6 disabled in this kernel?)" if "ipv6" in key else ""
                raise LabError(
                    f"namespace {ns.name}: cannot set {key.replace('/', '.')}={value}: "
                    f"{exc.strerror or exc}{hint}"
                ) from exc
        ipr = IPRoute()
    try:
        with _kernel(ns.name, "bring lo up"):
            ipr.link("set", index=_index(ipr, "lo"), state="up")
        yield ipr
    finally:
        ipr.close()


def _wire(ipr: Any, ns: Namespace, interfaces: list[str]) -> None:
    """Bridge ports, then every interface up, then addresses, then routes (a route needs its
    interface up)."""
    if ns.bridge is not None:
        with _kernel(ns.name, f"bring {ns.bridge} up"):
            bridge = _index(ipr, ns.bridge)
            ipr.link("set", index=bridge, state="up")
        for port in ns.bridge_ports:
            with _kernel(ns.name, f"attach {port} to {ns.bridge}"):
                ipr.link("set", index=_index(ipr, port), master=bridge)
    for name in interfaces:
        with _kernel(ns.name, f"bring {name} up"):
            ipr.link("set", index=_index(ipr, name), state="up")
    for itf, address in ns.addresses:
        with _kernel(ns.name, f"add address {address} to {itf}"):
            ipr.addr(
                "add",
                index=_index(ipr, itf),
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                flags=_IFA_F_NODAD if address.version == 6 else 0,
            )
    for route in ns.routes:
        with _kernel(ns.name, f"add route {_describe(route)}"):
            _add_route(ipr, route)
    for rule in ns.rules:
        with _kernel(ns.name, f"add rule iif {rule.interface} lookup {rule.table}"):
            ipr.rule("add", family=socket.AF_INET, iifname=rule.interface, table=rule.table)


def _add_route(ipr: Any, route: Route) -> None:
    spec: dict[str, Any] = {"dst": str(route.destination), "oif": _index(ipr, route.interface)}
    if route.table is not None:
        spec["table"] = route.table
    if route.gateway is None:
        if route.destination.version == 4:
            spec["scope"] = _RT_SCOPE_LINK
    else:
        spec["gateway"] = str(route.gateway)
        if route.onlink:
            spec["flags"] = _RTNH_F_ONLINK
    ipr.route("add", **spec)


def _describe(route: Route) -> str:
    via = f" via {route.gateway}" if route.gateway is not None else ""
    onlink = " onlink" if route.onlink else ""
    table = f" table {route.table}" if route.table is not None else ""
    return f"{route.destination}{via} dev {route.interface}{onlink}{table}"


def _index(ipr: Any, name: str) -> int:
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetlinkError(19, f"no interface {name}")  # ENODEV
    index: int = found[0]
    return index


@contextmanager
def _kernel(namespace: str, what: str) -> Iterator[None]:
    """Turn a kernel refusal inside the block into a LabError naming namespace and object."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        reason = exc.args[1] if len(exc.args) > 1 else os.strerror(exc.code)
        raise LabError(f"namespace {namespace}: cannot {what}: {reason}") from exc
