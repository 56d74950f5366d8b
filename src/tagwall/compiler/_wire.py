"""Lossless JSON form of ``Program`` and ``ProgramDelta``: what the controller streams to
agents and what an agent persists as its last good program.

``program_to_wire(p)`` / ``delta_to_wire(d)`` give plain JSON values (dicts, lists, strings,
numbers, booleans, null); ``program_from_wire`` / ``delta_from_wire`` turn them back into equal
objects, or raise ``ValidationError`` naming the path of the first field that is malformed.
The shape is versioned by ``WIRE_VERSION``; a reader refuses another version.

Encodings: addresses and prefixes as strings; a chain key as ``"<direction>/<tier>"``; a
reference as ``"name"`` or ``"project/name"``; a port element as ``[address, protocol,
port]``; a tag-map entry as ``[address, [values…]]``; ``services`` (service instances
steered through on the host), ``remoteServices`` (``[{instance, host, address}]``) and
``peers`` (``{host: address}``) only when there are some, so programs without any encode as
they did before service chains.  Lists are sorted so the same program
always encodes to the same text (agents compare digests of it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import TypeVar

from ..errors import Problem, ValidationError
from ..model import (
    Action,
    HealthCheck,
    HealthCheckType,
    IPAddress,
    IPNetwork,
    Json,
    Posture,
    Protocol,
    Ref,
    ServiceTemplateMode,
    Tier,
    TrafficDirection,
    WhenAllDown,
)
from ._program import (
    AddressSet,
    Block,
    ChainKey,
    CompiledRule,
    CompiledService,
    LocalInterface,
    LocalService,
    Peer,
    PortElement,
    Program,
    ProgramDelta,
    RemoteService,
    SetDelta,
)

__all__ = [
    "WIRE_VERSION",
    "delta_from_wire",
    "delta_to_wire",
    "program_from_wire",
    "program_to_wire",
]

WIRE_VERSION = 1

T = TypeVar("T")


# -- encoding ---------------------------------------------------------------------------------


def _addresses(items: frozenset[IPAddress]) -> list[Json]:
    return [str(a) for a in sorted(items, key=lambda a: (a.version, a))]


def _address_set(s: AddressSet) -> dict[str, Json]:
    return {"addresses": _addresses(s.addresses), "prefixes": [str(p) for p in s.prefixes]}


def _ports(items: frozenset[PortElement]) -> list[Json]:
    ordered = sorted(items, key=lambda e: (e[0].version, e[0], e[1].value, e[2]))
    return [[str(a), p.value, n] for a, p, n in ordered]


def _tag_map(m: Mapping[IPAddress, tuple[str, ...]]) -> list[Json]:
    ordered = sorted(m.items(), key=lambda kv: (kv[0].version, kv[0]))
    return [[str(a), list(values)] for a, values in ordered]


def _chain_key(key: ChainKey) -> str:
    return f"{key[0].value}/{key[1].value}"


def _service(s: CompiledService) -> dict[str, Json]:
    out: dict[str, Json] = {}
    if s.protocol is not None:
        out["protocol"] = s.protocol.value
    if s.ports is not None:
        out["ports"] = [s.ports[0], s.ports[1]]
    if s.icmp_type is not None:
        out["icmpType"] = s.icmp_type
    if s.named is not None:
        out["named"] = s.named
    return out


def _rule(r: CompiledRule) -> dict[str, Json]:
    return {
        "policy": str(r.policy),
        "rule": r.rule,
        "action": r.action.value,
        "src": r.src,
        "dst": r.dst,
        "services": None if r.services is None else [_service(s) for s in r.services],
        "matchTags": r.match_tags,
        "audit": r.audit,
        "log": r.log,
        "via": [str(v) for v in r.via],
    }


def _blocks(blocks: tuple[Block, ...]) -> list[Json]:
    return [
        {
            "policySet": str(b.policy_set),
            "appliesTo": b.applies_to,
            "rules": [_rule(r) for r in b.rules],
        }
        for b in blocks
    ]


def _interfaces(items: tuple[LocalInterface, ...]) -> list[Json]:
    return [
        {
            "workload": i.workload,
            "interface": i.interface,
            "addresses": [str(a) for a in i.addresses],
        }
        for i in items
    ]


def _services(items: tuple[LocalService, ...]) -> list[Json]:
    return [
        {
            "instance": str(s.instance),
            "mode": s.mode.value,
            "workload": s.workload,
            "left": _interfaces((s.left,))[0],
            "right": _interfaces((s.right,))[0],
            "whenAllDown": s.when_all_down.value,
            **({"healthCheck": _health_check(s.health_check)} if s.health_check else {}),
        }
        for s in items
    ]


def _remote_services(items: tuple[RemoteService, ...]) -> list[Json]:
    return [{"instance": str(r.instance), "host": r.host, "address": str(r.address)} for r in items]


def _peers(items: tuple[Peer, ...]) -> dict[str, Json]:
    return {p.host: str(p.address) for p in items}


def _health_check(c: HealthCheck) -> Json:
    return {
        "type": c.type.value,
        "path": c.path,
        "port": c.port,
        "intervalS": c.interval_s,
        "timeoutS": c.timeout_s,
        "failures": c.failures,
    }


def _directions(m: Mapping[TrafficDirection, str]) -> dict[str, Json]:
    return {d.value: m[d] for d in sorted(m, key=lambda d: d.value)}


def _chains(m: Mapping[ChainKey, tuple[Block, ...]]) -> dict[str, Json]:
    return {_chain_key(k): _blocks(m[k]) for k in sorted(m, key=_chain_key)}


def program_to_wire(p: Program) -> dict[str, Json]:
    return {
        "version": WIRE_VERSION,
        "host": p.host,
        "interfaces": _interfaces(p.interfaces),
        "sets": {name: _address_set(p.sets[name]) for name in sorted(p.sets)},
        "portSets": {name: _ports(p.port_sets[name]) for name in sorted(p.port_sets)},
        "tagMaps": {name: _tag_map(p.tag_maps[name]) for name in sorted(p.tag_maps)},
        "chains": _chains(p.chains),
        "isolated": _directions(p.isolated),
        "isolatedShadow": _directions(p.isolated_shadow),
        "defaultPosture": p.default_posture.value,
        **({"services": _services(p.services)} if p.services else {}),
        **({"remoteServices": _remote_services(p.remote_services)} if p.remote_services else {}),
        **({"peers": _peers(p.peers)} if p.peers else {}),
    }


def delta_to_wire(d: ProgramDelta) -> dict[str, Json]:
    out: dict[str, Json] = {"version": WIRE_VERSION, "host": d.host}
    if d.new_sets:
        out["newSets"] = {n: _address_set(d.new_sets[n]) for n in sorted(d.new_sets)}
    if d.set_deltas:
        out["setDeltas"] = [
            {"name": s.name, "added": _address_set(s.added), "removed": _address_set(s.removed)}
            for s in d.set_deltas
        ]
    if d.new_port_sets:
        out["newPortSets"] = {n: _ports(d.new_port_sets[n]) for n in sorted(d.new_port_sets)}
    if d.port_set_deltas:
        out["portSetDeltas"] = {
            n: {"added": _ports(a), "removed": _ports(r)}
            for n, (a, r) in sorted(d.port_set_deltas.items())
        }
    if d.new_tag_maps:
        out["newTagMaps"] = {n: _tag_map(d.new_tag_maps[n]) for n in sorted(d.new_tag_maps)}
    if d.tag_map_deltas:
        out["tagMapDeltas"] = {
            n: {"set": _tag_map(changed), "removed": _addresses(removed)}
            for n, (changed, removed) in sorted(d.tag_map_deltas.items())
        }
    if d.chains:
        out["chains"] = _chains(d.chains)
    if d.interfaces is not None:
        out["interfaces"] = _interfaces(d.interfaces)
    if d.isolated is not None:
        out["isolated"] = _directions(d.isolated)
    if d.isolated_shadow is not None:
        out["isolatedShadow"] = _directions(d.isolated_shadow)
    if d.default_posture is not None:
        out["defaultPosture"] = d.default_posture.value
    if d.services is not None:
        out["services"] = _services(d.services)
    if d.remote_services is not None:
        out["remoteServices"] = _remote_services(d.remote_services)
    if d.peers is not None:
        out["peers"] = _peers(d.peers)
    for key, names in (
        ("droppedSets", d.dropped_sets),
        ("droppedPortSets", d.dropped_port_sets),
        ("droppedTagMaps", d.dropped_tag_maps),
    ):
        if names:
            out[key] = list[Json](sorted(names))
    return out


# -- decoding ---------------------------------------------------------------------------------


class _Reader:
    """Typed access to a JSON value that remembers where it is, for error messages."""

    def __init__(self, value: Json, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, reason: str) -> ValidationError:
        return ValidationError([Problem(reason, path=self.path or "(top)", value=self.value)])

    def at(self, key: str | int) -> _Reader:
        if isinstance(key, int):
            items = self.list_()
            if key >= len(items):
                raise self.fail(f"needs at least {key + 1} items")
            return _Reader(items[key], f"{self.path}[{key}]")
        obj = self.dict_()
        if key not in obj:
            raise ValidationError([Problem("is required", path=self._join(key))])
        return _Reader(obj[key], self._join(key))

    def opt(self, key: str) -> _Reader | None:
        obj = self.dict_()
        return _Reader(obj[key], self._join(key)) if obj.get(key) is not None else None

    def _join(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def dict_(self) -> dict[str, Json]:
        if not isinstance(self.value, dict):
            raise self.fail("must be an object")
        return self.value

    def list_(self) -> list[Json]:
        if not isinstance(self.value, list):
            raise self.fail("must be a list")
        return self.value

    def items(self) -> list[_Reader]:
        return [_Reader(v, f"{self.path}[{i}]") for i, v in enumerate(self.list_())]

    def entries(self) -> list[tuple[str, _Reader]]:
        return [(k, _Reader(v, self._join(k))) for k, v in self.dict_().items()]

    def str_(self) -> str:
        if not isinstance(self.value, str):
            raise self.fail("must be a string")
        return self.value

    def int_(self) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise self.fail("must be an integer")
        return self.value

    def number(self) -> float:
        if not isinstance(self.value, int | float) or isinstance(self.value, bool):
            raise self.fail("must be a number")
        return float(self.value)

    def bool_(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail("must be true or false")
        return self.value

    def parse(self, fn: Callable[[str], T], what: str) -> T:
        try:
            return fn(self.str_())
        except ValueError:
            raise self.fail(f"is not {what}") from None


def _ip(r: _Reader) -> IPAddress:
    return r.parse(ipaddress.ip_address, "an IP address")


def _net(r: _Reader) -> IPNetwork:
    return r.parse(ipaddress.ip_network, "a prefix")


def _ref(r: _Reader) -> Ref:
    project, _, name = r.str_().rpartition("/")
    return Ref(name, project or None)


def _read_address_set(r: _Reader) -> AddressSet:
    return AddressSet(
        frozenset(_ip(a) for a in r.at("addresses").items()),
        tuple(_net(p) for p in r.at("prefixes").items()),
    )


def _read_ports(r: _Reader) -> frozenset[PortElement]:
    return frozenset(
        (_ip(e.at(0)), e.at(1).parse(Protocol, "a protocol"), e.at(2).int_()) for e in r.items()
    )


def _read_tag_map(r: _Reader) -> dict[IPAddress, tuple[str, ...]]:
    return {_ip(e.at(0)): tuple(v.str_() for v in e.at(1).items()) for e in r.items()}


def _read_chain_key(text: str, r: _Reader) -> ChainKey:
    direction, _, tier = text.partition("/")
    try:
        return TrafficDirection(direction), Tier(tier)
    except ValueError:
        raise r.fail("is not <ingress|egress>/<admin|application|baseline>") from None


def _read_service(r: _Reader) -> CompiledService:
    protocol, ports, icmp, named = r.opt("protocol"), r.opt("ports"), r.opt("icmpType"), None
    if (n := r.opt("named")) is not None:
        named = n.str_()
    return CompiledService(
        protocol=None if protocol is None else protocol.parse(Protocol, "a protocol"),
        ports=None if ports is None else (ports.at(0).int_(), ports.at(1).int_()),
        icmp_type=None if icmp is None else icmp.int_(),
        named=named,
    )


def _opt_str(r: _Reader, key: str) -> str | None:
    value = r.opt(key)
    return None if value is None else value.str_()


def _read_rule(r: _Reader) -> CompiledRule:
    services = r.opt("services")
    return CompiledRule(
        policy=_ref(r.at("policy")),
        rule=r.at("rule").str_(),
        action=r.at("action").parse(Action, "an action"),
        src=_opt_str(r, "src"),
        dst=_opt_str(r, "dst"),
        services=None if services is None else tuple(_read_service(s) for s in services.items()),
        match_tags=_opt_str(r, "matchTags"),
        audit=r.at("audit").bool_(),
        log=r.at("log").bool_(),
        via=tuple(_ref(v) for v in r.at("via").items()),
    )


def _read_chains(r: _Reader) -> dict[ChainKey, tuple[Block, ...]]:
    return {
        _read_chain_key(key, blocks): tuple(
            Block(
                _ref(b.at("policySet")),
                b.at("appliesTo").str_(),
                tuple(_read_rule(x) for x in b.at("rules").items()),
            )
            for b in blocks.items()
        )
        for key, blocks in r.entries()
    }


def _read_interface(i: _Reader) -> LocalInterface:
    return LocalInterface(
        i.at("workload").str_(),
        i.at("interface").str_(),
        tuple(_ip(a) for a in i.at("addresses").items()),
    )


def _read_interfaces(r: _Reader) -> tuple[LocalInterface, ...]:
    return tuple(_read_interface(i) for i in r.items())


def _read_services(r: _Reader | None) -> tuple[LocalService, ...]:
    return tuple(
        LocalService(
            _ref(s.at("instance")),
            s.at("mode").parse(ServiceTemplateMode, "a service mode"),
            s.at("workload").str_(),
            _read_interface(s.at("left")),
            _read_interface(s.at("right")),
            _read_health_check(s.opt("healthCheck")),
            when.parse(WhenAllDown, "fail-open or fail-closed")
            if (when := s.opt("whenAllDown")) is not None
            else WhenAllDown.FAIL_CLOSED,
        )
        for s in (r.items() if r is not None else ())
    )


def _read_remote_services(r: _Reader | None) -> tuple[RemoteService, ...]:
    return tuple(
        RemoteService(_ref(s.at("instance")), s.at("host").str_(), _ip(s.at("address")))
        for s in (r.items() if r is not None else ())
    )


def _read_peers(r: _Reader | None) -> tuple[Peer, ...]:
    peers = _named(r, _ip)
    return tuple(Peer(host, peers[host]) for host in sorted(peers))


def _read_health_check(r: _Reader | None) -> HealthCheck | None:
    if r is None:
        return None
    port = r.opt("port")
    return HealthCheck(
        r.at("type").parse(HealthCheckType, "icmp, tcp or http"),
        r.at("path").str_(),
        port.int_() if port is not None else None,
        r.at("intervalS").number(),
        r.at("timeoutS").number(),
        r.at("failures").int_(),
    )


def _read_directions(r: _Reader) -> dict[TrafficDirection, str]:
    return {k.parse(TrafficDirection, "a direction"): v.str_() for k, v in _keys(r)}


def _keys(r: _Reader) -> list[tuple[_Reader, _Reader]]:
    return [(_Reader(k, v.path), v) for k, v in r.entries()]


def _check_version(r: _Reader) -> None:
    version = r.at("version")
    if version.int_() != WIRE_VERSION:
        raise version.fail(f"wire version {version.value} is not {WIRE_VERSION}")


def _named(r: _Reader | None, fn: Callable[[_Reader], T]) -> dict[str, T]:
    return {} if r is None else {k: fn(v) for k, v in r.entries()}


def program_from_wire(value: Json) -> Program:
    r = _Reader(value, "")
    _check_version(r)
    return Program(
        host=r.at("host").str_(),
        interfaces=_read_interfaces(r.at("interfaces")),
        sets=_named(r.at("sets"), _read_address_set),
        port_sets=_named(r.at("portSets"), _read_ports),
        tag_maps=_named(r.at("tagMaps"), _read_tag_map),
        chains=_read_chains(r.at("chains")),
        isolated=_read_directions(r.at("isolated")),
        isolated_shadow=_read_directions(r.at("isolatedShadow")),
        default_posture=r.at("defaultPosture").parse(Posture, "a posture"),
        services=_read_services(r.opt("services")),
        remote_services=_read_remote_services(r.opt("remoteServices")),
        peers=_read_peers(r.opt("peers")),
    )


def delta_from_wire(value: Json) -> ProgramDelta:
    r = _Reader(value, "")
    _check_version(r)
    interfaces, isolated = r.opt("interfaces"), r.opt("isolated")
    shadow, posture, chains = r.opt("isolatedShadow"), r.opt("defaultPosture"), r.opt("chains")
    set_deltas, services = r.opt("setDeltas"), r.opt("services")
    remote, peers = r.opt("remoteServices"), r.opt("peers")

    def names(key: str) -> frozenset[str]:
        found = r.opt(key)
        return frozenset() if found is None else frozenset(n.str_() for n in found.items())

    return ProgramDelta(
        host=r.at("host").str_(),
        new_sets=_named(r.opt("newSets"), _read_address_set),
        set_deltas=()
        if set_deltas is None
        else tuple(
            SetDelta(
                s.at("name").str_(),
                _read_address_set(s.at("added")),
                _read_address_set(s.at("removed")),
            )
            for s in set_deltas.items()
        ),
        new_port_sets=_named(r.opt("newPortSets"), _read_ports),
        port_set_deltas=_named(
            r.opt("portSetDeltas"),
            lambda x: (_read_ports(x.at("added")), _read_ports(x.at("removed"))),
        ),
        new_tag_maps=_named(r.opt("newTagMaps"), _read_tag_map),
        tag_map_deltas=_named(
            r.opt("tagMapDeltas"),
            lambda x: (
                _read_tag_map(x.at("set")),
                frozenset(_ip(a) for a in x.at("removed").items()),
            ),
        ),
        chains={} if chains is None else _read_chains(chains),
        interfaces=None if interfaces is None else _read_interfaces(interfaces),
        isolated=None if isolated is None else _read_directions(isolated),
        isolated_shadow=None if shadow is None else _read_directions(shadow),
        default_posture=None if posture is None else posture.parse(Posture, "a posture"),
        services=None if services is None else _read_services(services),
        remote_services=None if remote is None else _read_remote_services(remote),
        peers=None if peers is None else _read_peers(peers),
        dropped_sets=names("droppedSets"),
        dropped_port_sets=names("droppedPortSets"),
        dropped_tag_maps=names("droppedTagMaps"),
    )
