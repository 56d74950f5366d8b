"""The kernel side of steering that is not nftables: finding the host ports of service
interfaces, and holding the policy-routing rules, tables and neighbour entries of the hops
(``_steering`` says what they are).  Needs root in the host namespace.

Ownership: every rule with priority ``RULE_PRIORITY`` whose table is in ``ROUTE_TABLE_BASE`` …
``+ 0xffff``, every route in those tables and every neighbour entry of
``TRANSPARENT_NEXT_HOP`` belong to tagwall; ``sync`` makes them exactly the wanted hops and
touches nothing else.  pyroute2 is imported by the functions (the agent must not pay for it
at import, tests/test_exports.py).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .._netns import entered
from ..errors import DatapathError
from ._steering import ROUTE_TABLE_BASE, RULE_MASK, RULE_PRIORITY, TRANSPARENT_NEXT_HOP, Hop, Port

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


def sync(netns: str | None, hops: Iterable[Hop]) -> None:
    """Make tagwall's rules, routes and neighbours in ``netns`` exactly those of ``hops``.
    Raises ``DatapathError`` naming the hop the kernel refused (what was done stays: call
    again with the hops to go back to)."""
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    wanted = {h.table: h for h in hops}
    with _ipr(netns) as ipr:
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
