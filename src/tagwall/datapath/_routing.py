"""The kernel side of steering that is not nftables: finding the host ports of service
interfaces, and holding the policy-routing rules, tables and neighbour entries of the hops
(``_steering`` says what they are).  Needs root in the host namespace.

Ownership: every rule with priority ``RULE_PRIORITY`` whose table is in ``ROUTE_TABLE_BASE`` …
``+ 0xffff``, every route in those tables, every neighbour entry of ``TRANSPARENT_NEXT_HOP``
and every VXLAN device named ``TUNNEL_PREFIX…`` (with its neighbour and forwarding entries)
belong to tagwall; ``sync`` makes them exactly the wanted hops and tunnels and touches nothing
else.  A tunnel device is made with its VNI, port ``TUNNEL_PORT``, no learning, MTU
``TUNNEL_MTU``, the host's tunnel MAC, ``rp_filter`` off (packets of any address come out of
it), and one forwarding entry per peer (its tunnel MAC → its underlay address).  A tunnel
encapsulates with the packet's mark, and the mark would route the outer packet back into the
tunnel: while there are tunnels, the rule ``iif lo fwmark STEER_MARK/0xff000000 lookup main``
(priority ``RULE_PRIORITY - 1``) is tagwall's too, so packets the host itself sends with a
steering mark — only encapsulated ones — take the main table to the peer.

pyroute2 is imported by the functions (the agent must not pay for it at import,
tests/test_exports.py).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .._netns import entered
from ..errors import DatapathError
from ._steering import (
    ROUTE_TABLE_BASE,
    RULE_MASK,
    RULE_PRIORITY,
    STEER_MARK,
    TRANSPARENT_NEXT_HOP,
    TUNNEL_MTU,
    TUNNEL_PORT,
    TUNNEL_PREFIX,
    Hop,
    Port,
    Tunnel,
)

__all__ = ["find_ports", "sync"]

_ALIAS_PREFIX = "tagwall:"
_RTNH_F_ONLINK = 0x04
_NUD_PERMANENT = 0x80
_TABLES = range(ROUTE_TABLE_BASE, ROUTE_TABLE_BASE + 0x10000)


@contextmanager
def _ipr(netns: str | None) -> Iterator[Any]:
    from pyroute2 import IPRoute  # type: ignore[import-untyped]  # pyroute2 has no types

    with entered(netns):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def find_ports(netns: str | None) -> dict[tuple[str, str], Port]:
    """(workload, interface) → host port, for every link whose alias is
    ``tagwall:<workload>/<interface>`` (``_steering.interface_alias``)."""
    out: dict[tuple[str, str], Port] = {}
    with _ipr(netns) as ipr:
        for link in ipr.get_links():
            alias = link.get_attr("IFLA_IFALIAS")
            if not alias or not alias.startswith(_ALIAS_PREFIX):
                continue
            workload, sep, interface = alias[len(_ALIAS_PREFIX) :].rpartition("/")
            if sep:
                port = Port(link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS"))
                out[(workload, interface)] = port
    return out


def sync(netns: str | None, hops: Iterable[Hop], tunnels: Iterable[Tunnel] = ()) -> None:
    """Make tagwall's tunnel devices, rules, routes and neighbours in ``netns`` exactly those
    of ``tunnels`` and ``hops`` (a hop may route into a tunnel).  Raises ``DatapathError``
    naming the hop or tunnel the kernel refused (what was done stays: call again with the
    hops and tunnels to go back to)."""
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    wanted = {h.table: h for h in hops}
    with _ipr(netns) as ipr:
        try:
            _sync_tunnels(ipr, netns, list(tunnels))
        except NetlinkError as exc:
            raise DatapathError(f"cannot make steering tunnels: {exc.args[1]}") from exc
        index = {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}
        rules = {
            r.get_attr("FRA_TABLE"): r
            for r in ipr.get_rules(family=socket.AF_INET)
            if r.get_attr("FRA_PRIORITY") == RULE_PRIORITY and r.get_attr("FRA_TABLE") in _TABLES
        }
        for table, rule in rules.items():
            hop = wanted.get(table)
            if hop is None or rule.get_attr("FRA_FWMARK") != hop.mark:
                ipr.rule("del", table=table, priority=RULE_PRIORITY, family=socket.AF_INET)
                _flush(ipr, table)
        for neigh in ipr.get_neighbours(family=socket.AF_INET, dst=str(TRANSPARENT_NEXT_HOP)):
            if not any(
                h.lladdr and index.get(h.device) == neigh["ifindex"] for h in wanted.values()
            ):
                ipr.neigh("del", dst=str(TRANSPARENT_NEXT_HOP), ifindex=neigh["ifindex"])
        tunnel_ifindex = {i for name, i in index.items() if name.startswith(TUNNEL_PREFIX)}
        keep = {(index.get(h.device), str(h.gateway)) for h in wanted.values() if h.lladdr}
        for neigh in ipr.get_neighbours(family=socket.AF_INET):
            key = (neigh["ifindex"], neigh.get_attr("NDA_DST"))
            if neigh["ifindex"] in tunnel_ifindex and key not in keep:
                ipr.neigh("del", dst=key[1], ifindex=key[0])
        for hop in wanted.values():
            try:
                _install(ipr, hop, index, hop.table in rules and hop.mark == _mark(rules, hop))
            except (NetlinkError, KeyError) as exc:
                reason = exc.args[1] if isinstance(exc, NetlinkError) else "no such interface"
                raise DatapathError(
                    f"cannot route steering hop {hop.id} (via {hop.gateway} dev {hop.device}): "
                    f"{reason}"
                ) from exc


def _mark(rules: dict[int, Any], hop: Hop) -> int | None:
    mark: int | None = rules[hop.table].get_attr("FRA_FWMARK")
    return mark


def _install(ipr: Any, hop: Hop, index: dict[str, int], has_rule: bool) -> None:
    device = index[hop.device]
    if hop.lladdr is not None:
        ipr.neigh(
            "replace", dst=str(hop.gateway), lladdr=hop.lladdr, ifindex=device, state=_NUD_PERMANENT
        )
    ipr.route(
        "replace",
        dst="0.0.0.0/0",
        table=hop.table,
        oif=device,
        gateway=str(hop.gateway),
        flags=_RTNH_F_ONLINK,
    )
    if not has_rule:
        ipr.rule(
            "add",
            family=socket.AF_INET,
            priority=RULE_PRIORITY,
            fwmark=hop.mark,
            fwmask=RULE_MASK,
            table=hop.table,
        )


def _flush(ipr: Any, table: int) -> None:
    for route in ipr.get_routes(family=socket.AF_INET, table=table):
        ipr.route("del", table=table, dst="0.0.0.0/0", oif=route.get_attr("RTA_OIF"))


_VXLAN_KIND = "vxlan"
_UNDERLAY_PRIORITY = RULE_PRIORITY - 1
_MAIN_TABLE = 254
_STEER_MASK = 0xFF000000


def _sync_tunnels(ipr: Any, netns: str | None, tunnels: list[Tunnel]) -> None:
    """Make the ``TUNNEL_PREFIX`` VXLAN devices exactly ``tunnels``: a device whose VNI or
    MAC differs is made again; forwarding entries follow each tunnel's peers.  With tunnels,
    also the rule that routes the encapsulated packets by the main table (module
    docstring)."""
    rules = [
        r
        for r in ipr.get_rules(family=socket.AF_INET)
        if r.get_attr("FRA_PRIORITY") == _UNDERLAY_PRIORITY
        and r.get_attr("FRA_TABLE") == _MAIN_TABLE
    ]
    if tunnels and not rules:
        ipr.rule(
            "add",
            family=socket.AF_INET,
            priority=_UNDERLAY_PRIORITY,
            iifname="lo",
            fwmark=STEER_MARK,
            fwmask=_STEER_MASK,
            table=_MAIN_TABLE,
        )
    elif not tunnels and rules:
        ipr.rule("del", family=socket.AF_INET, priority=_UNDERLAY_PRIORITY, table=_MAIN_TABLE)
    wanted = {t.device: t for t in tunnels}
    have: dict[str, Any] = {}
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        info = link.get_attr("IFLA_LINKINFO")
        if not name.startswith(TUNNEL_PREFIX) or info is None:
            continue
        if info.get_attr("IFLA_INFO_KIND") != _VXLAN_KIND:
            continue
        t = wanted.get(name)
        vni = info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VXLAN_ID")
        if t is None or vni != t.vni or link.get_attr("IFLA_ADDRESS") != t.mac:
            ipr.link("del", index=link["index"])
        else:
            have[name] = link["index"]
    for t in tunnels:
        if t.device not in have:
            ipr.link(
                "add",
                ifname=t.device,
                kind=_VXLAN_KIND,
                vxlan_id=t.vni,
                vxlan_port=TUNNEL_PORT,
                vxlan_learning=0,
                address=t.mac,
                mtu=TUNNEL_MTU,
            )
            (have[t.device],) = ipr.link_lookup(ifname=t.device)
            _rp_filter_off(netns, t.device)
            ipr.link("set", index=have[t.device], state="up")
        device = have[t.device]
        peers = set(t.peers)
        for entry in ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=device):
            mac, dst = entry.get_attr("NDA_LLADDR"), entry.get_attr("NDA_DST")
            if dst is not None and (mac, dst) not in peers:
                ipr.fdb("del", ifindex=device, lladdr=mac, dst=dst)
            peers.discard((mac, dst))
        for mac, dst in sorted(peers):
            ipr.fdb("append", ifindex=device, lladdr=mac, dst=dst)


def _rp_filter_off(netns: str | None, device: str) -> None:
    """Packets of every address come out of a tunnel; strict reverse-path filtering would
    drop them.  (``/proc/sys/net`` shows the namespace of the thread that opens it.)"""
    with entered(netns), open(f"/proc/sys/net/ipv4/conf/{device}/rp_filter", "w") as f:
        f.write("0")
