"""Service chains in the nftables data path: which flows go through which service workload,
and the marks, labels and routes that take them there (DESIGN §2 "Service chains", §4
"Redirect"; docs/steering.md is the user's view).  Pure: ``_nft_render`` writes the nft side,
``_routing`` applies the routes.

A **path** is the ``via`` of an enforced ``redirect`` rule of this host's program whose every
instance has a workload on this host (``Program.services``) or is served to it by another host
(``Program.remote_services``: *remote*, below); a redirect rule naming an instance that no
host with an underlay address serves to this one (compiler ``_distill``: each serves the 16
hosts after it) allows without steering.  A **member** is one (instance,
workload) of an instance on this host; an instance with several is scaled out.

``ct label`` (128 bits; ``ct mark`` holds the decision ids, ``_nft_decisions``) pins a flow,
both directions, for its life.  Bits are only ever set: nft cannot clear one (``ct label set``
ORs), so every field below is written once per flow:

* bit ``b`` (0 ≤ b < ``MAX_PATHS`` = 32): the flow's path;
* bits ``32 + 2s`` (*pinned*) and ``33 + 2s`` (*left*) for member slot ``s`` (0 ≤ s <
  ``MAX_MEMBERS`` = 48): the flow runs through member s while pinned is set and left is not.
  A flow whose member goes down gets its left bit and a new pin; it never goes back.

Worked example: a flow of path bit 0 through fw-1 pinned to slot 2 has label bits {0, 36}; when
slot 2 goes down its next packet sets bit 37 and, say, pins slot 0: {0, 32, 36, 37}.

The new pin is a symmetric hash of the 5-tuple over the instance's healthy members (nft
``symhash``: the kernel's symmetric flow hash, which orders the two addresses and the two
ports before hashing, so a packet and its reply hash alike).  It matters when the pin is made
by whichever direction's packet comes first after a member went down, possibly both at once
on two CPUs: both land on the same member.

A **hop** is one way into a member: (member, side entered).  Hop ``n`` is the packet mark
``STEER_MARK | n``, the policy-routing rule ``fwmark STEER_MARK|n/RULE_MASK lookup
ROUTE_TABLE_BASE + n`` (priority ``RULE_PRIORITY``) and that table's one route::

    in-network:   default via <the service interface's IPv4 address> dev <its host port> onlink
    transparent:  default via TRANSPARENT_NEXT_HOP dev <its host port> onlink, with the permanent
                  neighbour TRANSPARENT_NEXT_HOP → the MAC of the member's *other* host port

so a transparent service, which has no address, gets frames addressed to the host's own port
on the far side of its bridge: they cross it and come back to the host, and the service stays
invisible at L3.  Worked example: hop 2 = mark ``0x73000002``, table ``0x74770002``.

Marks are set in the prerouting hook (chain ``steer``, before routing) and live only in this
namespace (a veth crossing namespaces clears them).  Chains (``chains``), for a path of bit b
through instances I0…Ik-1:

* ``svc_i<n>_l`` / ``_r`` (instance n entered by its left / right): for each member, pinned →
  ``svc_keep_<s>_<side>``; then the pin of a flow that has no live one: ``symhash mod H`` over
  the H healthy members → ``svc_pin_<s>_<side>``; with none healthy, the template's
  ``whenAllDown``: fail-open returns (the caller goes on to the next instance: the instance
  is bypassed), fail-closed drops;
* ``svc_keep_<s>_<side>``: left set → return; member healthy → its hop; member down → set left
  and return (the instance chain pins anew);
* ``svc_pin_<s>_<side>``: set pinned, count a flow, its hop;
* ``svc_p<b>_o<j>`` / ``svc_p<b>_r<j>``: the original (reply) direction from instance j on
  (down to 0): the base mark, each instance chain in order, and ``accept`` — deliver, when
  every instance left was bypassed.  The base mark is 0 where the packet enters the path
  (the forward chains evaluate it) and ``STEER_MARK | BACK_FLAG`` where it comes back from a
  service (they accept it: it was evaluated on its way in); a hop ORs its id into it.

``steer`` says, in order: back from a service, original direction on a right port of Ij: on to
``svc_p<b>_o<j+1>`` (j = k-1: deliver); reply direction on a left port of Ij: on to
``svc_p<b>_r<j-1>`` (j = 0: deliver); any other packet of the path on one of its ports:
deliver; entering anywhere else: ``svc_p<b>_o0``, replies ``svc_p<b>_r<k-1>`` (symmetric:
replies take the instances in reverse order); a new flow without a label: ``classify``, the
policy walk of the forward chains again with other verdicts (``_nft_render``): the first rule
that decides at the source's egress decides, and if it is not a steered redirect, the
destination's ingress walk; a steered redirect sets the path bit and goes to ``svc_p<b>_o0``.
So a flow is steered by the rule that decides it, exactly as the forward chains decide it
(redirect decides like allow), IPv4 only.

**Remote instances and transit** (cross-host steering).  The host that decides a flow (S)
anchors it: every packet of a steered flow, both directions, passes S before and after each
remote instance, so the destination's host needs to know nothing, wherever it is (S itself,
the instance's host, a third host, outside the estate).  Between S and the instance's host H
the packet travels in a VXLAN tunnel (the only encapsulation this kernel offers; packet marks
do not cross hosts): one device per instance on every host that uses it, ``twv`` + the VNI
``tunnel_key(instance)`` (24 bits of a hash of its name: the same on every host, stable
across revisions, no allocation), NBMA (no fixed remote: a forwarding entry per peer, the
peer's ``tunnel_mac`` → its underlay address), port ``TUNNEL_PORT``, MTU ``TUNNEL_MTU``.

* At S a remote instance j is one hop: ``default via <H's underlay address> dev twv…
  onlink`` with the permanent neighbour ``<H's address>`` → ``tunnel_mac(H)``.  Its "ports"
  (``_ports``) are the tunnel device: what comes back out of it continues the path exactly
  as from a local instance's right (original) or left (reply) port; H decides health, so S
  has no chain for it (``_enter``).
* At H every local instance accepts transit from every peer (``Program.peers``: all other
  hosts with an underlay address).  A peer P gets a ``ct label`` bit from the path bits'
  range (``peers``): ``steer`` matches ``iifname twv… ether saddr tunnel_mac(P)``, sets P's
  bit and enters ``svc_x<n>_<bit>_o`` (``_r`` for replies): mark 0 (the forward chains
  evaluate it, which matters when the destination is H's), the instance chain by its left
  (right), and, if it returns (fail-open bypass), back into the tunnel to P.  Out of the
  instance's right (original) or left (reply) port a packet with P's bit goes back into the
  tunnel to P (``BACK_FLAG``: evaluated already).  Fail-closed drops at H.
* A flow two hosts steer (the source's egress, then the destination's ingress, through the
  same instance) reaches H twice: the second time its label already holds the first peer's
  bit, or the bit of H's own path through the instance when H is the source's host, and H
  sends it straight back (``ct label <bit> … accept`` before the entry), so each packet
  crosses the instance once.  A flow carrying a peer's bit is never
  classified at H (``ct label <bit> accept``): when its destination is on H, the delivered
  packet is still ``new`` there.
* Encapsulation keeps the packet's mark, which would route the outer packet back into the
  tunnel: ``_routing`` adds ``iif lo fwmark 0x73000000/0xff000000 lookup main`` before the
  hop rules.  TCP SYNs into a tunnel get their MSS clamped to its route's MTU (chain
  ``tunnel_mss``, ``_nft_render``), so full-sized segments fit after encapsulation.

Worked example (tests/lab/test_steering_remote_privileged.py): web on host-1 → app on host-2
tcp/80 via fw-1 on host-3.  SYN: host-1 classifies it (path bit 0), hop into ``twv…`` →
host-3 pins it to fw (peer bit of host-1) → fw → host-3 sends it back into ``twv…`` → host-1
delivers it (main table) to host-2, whose ingress also redirects it via fw-1 → host-3 sees
host-1's bit and returns it to host-2 untouched → app.  SYN-ACK: host-2 → host-1 (main
table) → reply of path 0: hop into ``twv…`` → host-3, fw by its right → host-1 → web.  Limits:
IPv4 underlay and flows; an instance is served to other hosts by one host (the first by name
with a workload of it and an address; ``RemoteService``), so a scale-out across hosts
balances only each host's own flows; at most 32 paths and peers together on a host (label
bits); the destination's host steering through a *local* member of an instance the source
already steered through remotely would cross it twice (not detected).

Counters: per member slot the named counters ``svc_<s>_packets`` (packets sent into it: hops of
``svc_keep`` and ``svc_pin``) and ``svc_<s>_flows`` (pins made); named, so a health change,
which rewrites rules, keeps them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ..compiler import LocalService, Program, RemoteService
from ..errors import DatapathError
from ..model import Action, InterfaceRole, Ref, ServiceTemplateMode, WhenAllDown

__all__ = [
    "BACK_FLAG",
    "MAX_MEMBERS",
    "MAX_PATHS",
    "ROUTE_TABLE_BASE",
    "RULE_MASK",
    "RULE_PRIORITY",
    "STEER_MARK",
    "TRANSPARENT_NEXT_HOP",
    "TUNNEL_MTU",
    "TUNNEL_PORT",
    "TUNNEL_PREFIX",
    "Hop",
    "Member",
    "Port",
    "ServiceStatus",
    "Steering",
    "Tunnel",
    "interface_alias",
    "steered_paths",
    "steering_for",
    "tunnel_key",
    "tunnel_mac",
]

STEER_MARK = 0x73000000  # "s"; hop n = STEER_MARK | n.  Disjoint from matchTags' 0x74……
BACK_FLAG = 0x00800000  # with STEER_MARK: back from a service, already evaluated
RULE_MASK = 0xFF7FFFFF  # policy routing ignores BACK_FLAG
_MAX_HOP = 0x007FFFFF
ROUTE_TABLE_BASE = 0x74770000  # "tw": table of hop n = ROUTE_TABLE_BASE + n
RULE_PRIORITY = 0x7477  # before the main table's 32766
TRANSPARENT_NEXT_HOP = ipaddress.IPv4Address("169.254.0.116")
MAX_PATHS = 32  # ct label bits 0-31
MAX_MEMBERS = 48  # ct label bits 32-127, two per member
_PIN_BASE = MAX_PATHS
TUNNEL_PREFIX = "twv"  # tunnel devices: "twv" + the VNI in 6 hex digits; never "tw-*"
TUNNEL_PORT = 4789  # VXLAN's IANA port
TUNNEL_MTU = 1450  # a 1500-byte underlay less VXLAN's 50 bytes (outer IPv4, UDP, VXLAN, Ethernet)
_SIDE = {InterfaceRole.LEFT: "l", InterfaceRole.RIGHT: "r"}

Path = tuple[Ref, ...]
Member = tuple[Ref, str]  # (instance, workload)
HopKey = tuple[Member, InterfaceRole]  # (member, the side a packet enters it by)
TunnelKey = tuple[str, Ref]  # (peer host, instance): the way to a peer for one instance
K = TypeVar("K", Path, Member, HopKey, TunnelKey, str)


def tunnel_key(instance: Ref) -> int:
    """The VXLAN network identifier of ``instance`` on every host: the first 24 bits of the
    SHA-256 of its name (0 is avoided), so it needs no coordination and never changes while
    the instance keeps its name.  Worked example: ``tunnel_key(Ref("fw-1"))`` is the same
    number on the source's host and on the instance's."""
    n = int.from_bytes(hashlib.sha256(str(instance).encode()).digest()[:3], "big")
    return n or 1


def tunnel_mac(host: str) -> str:
    """The MAC address of ``host``'s tunnel devices: ``02:74`` (locally administered) and 32
    bits of the SHA-256 of its name, so a peer can address frames to it without asking."""
    digest = hashlib.sha256(host.encode()).digest()[:4]
    return "02:74:" + ":".join(f"{b:02x}" for b in digest)


def _tunnel_device(instance: Ref) -> str:
    return f"{TUNNEL_PREFIX}{tunnel_key(instance):06x}"


@dataclass(frozen=True, slots=True)
class Tunnel:
    """One VXLAN device of the host (``_routing.sync`` makes them): ``device`` carries the
    flows of one instance, VNI ``vni``, between this host (its frames come from ``mac``) and
    each of ``peers``: (the peer's tunnel MAC, its underlay address), its forwarding entries."""

    device: str
    vni: int
    mac: str
    peers: tuple[tuple[str, str], ...]


def interface_alias(workload: str, interface: str) -> str:
    """The alias (``ip link set … alias``) that names the host side of a workload's interface:
    how the data path finds a service's ports.  Whoever wires workloads (the lab, a CNI
    plugin) sets it; ``"tagwall:fw-a/left"``."""
    return f"tagwall:{workload}/{interface}"


@dataclass(frozen=True, slots=True)
class Port:
    """The host side of one service interface."""

    name: str  # the host's device
    mac: str  # its MAC address, ``aa:bb:…``


@dataclass(frozen=True, slots=True)
class Hop:
    """One route into a service (the module docstring): packets marked ``STEER_MARK | id``
    leave by ``device`` towards ``gateway``; ``lladdr`` (transparent) is the permanent
    neighbour entry that resolves ``gateway``."""

    id: int
    device: str
    gateway: ipaddress.IPv4Address
    lladdr: str | None = None

    @property
    def mark(self) -> int:
        return STEER_MARK | self.id

    @property
    def table(self) -> int:
        return ROUTE_TABLE_BASE + self.id


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service workload of an instance on this host, as ``NftDatapath.service_status``
    reads it: its health as last set, and its counters since its slot was made (a member
    that leaves the program and comes back starts again from 0)."""

    instance: str  # the instance's Ref, as str: "shop/fw-1", "fw-1"
    workload: str
    healthy: bool
    packets: int  # packets steered into it, both directions, both sides
    flows: int  # flows pinned to it (a flow that moved here from a failed member counts)


def pinned_bit(slot: int) -> int:
    return _PIN_BASE + 2 * slot


def left_bit(slot: int) -> int:
    return _PIN_BASE + 2 * slot + 1


def counter_names(slot: int) -> tuple[str, str]:
    """The named counters of member ``slot``: (packets sent into it, flows pinned to it)."""
    return f"svc_{slot}_packets", f"svc_{slot}_flows"


@dataclass(frozen=True)
class Steering:
    """What a host steers through.  Invariant: every instance of every path has members in
    ``services``, each with both ports and both hops; ids and slots are unique; ``down``
    holds only workloads of members."""

    paths: Mapping[Path, int] = field(default_factory=dict)  # → ct label bit
    slots: Mapping[Member, int] = field(default_factory=dict)  # → member slot
    hop_ids: Mapping[HopKey, int] = field(default_factory=dict)
    ports: Mapping[HopKey, Port] = field(default_factory=dict)
    services: Mapping[Member, LocalService] = field(default_factory=dict)
    down: frozenset[str] = frozenset()  # workloads whose health checks fail
    host: str = ""  # this host (its tunnel MAC)
    remotes: Mapping[Ref, RemoteService] = field(default_factory=dict)  # instances of paths
    peers: Mapping[str, int] = field(default_factory=dict)  # transit: peer host → ct label bit
    addresses: Mapping[str, ipaddress.IPv4Address] = field(default_factory=dict)  # peer hosts
    transit: frozenset[Ref] = frozenset()  # local instances that carry peers' flows
    tunnel_hops: Mapping[TunnelKey, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Is there anything to render: a path, or transit to carry?"""
        return bool(self.paths or self.transit)

    # -- reading ----------------------------------------------------------------------------

    def instances(self) -> list[Ref]:
        """The steered instances; an instance's chains are named by its index here."""
        return sorted({m[0] for m in self.slots}, key=str)

    def members(self, instance: Ref) -> list[Member]:
        """The members of ``instance``, in slot order (the order of the hash's buckets)."""
        return sorted((m for m in self.slots if m[0] == instance), key=self.slots.__getitem__)

    def healthy(self, member: Member) -> bool:
        return member[1] not in self.down

    def carriers(self, labels: int) -> tuple[str, ...]:
        """The members a flow whose ``ct label`` is ``labels`` runs through, in its path's
        order, as ``"<instance>/<workload>"``; () for a flow this host does not steer.
        Worked example (the module docstring's): bits {0, 32, 36, 37} → slot 0's member."""
        path = next((p for p, bit in self.paths.items() if labels >> bit & 1), None)
        if path is None:
            return ()
        pinned = {
            m: s
            for m, s in self.slots.items()
            if labels >> pinned_bit(s) & 1 and not labels >> left_bit(s) & 1
        }
        out: list[str] = []
        for instance in path:
            remote = self.remotes.get(instance)
            if remote is not None:  # the member is the serving host's choice
                out.append(f"{instance}@{remote.host}")
            else:
                out += [f"{instance}/{m[1]}" for m in pinned if m[0] == instance]
        return tuple(out)

    def with_down(self, down: Collection[str]) -> Steering:
        """This steering with the workloads of ``down`` down (others are ignored)."""
        return replace(self, down=frozenset(down) & {w for _, w in self.slots})

    def hops(self) -> list[Hop]:
        """Every route this steering needs, by id."""
        out = []
        for (member, side), n in sorted(self.hop_ids.items(), key=lambda kv: kv[1]):
            service = self.services[member]
            port = self.ports[(member, side)]
            if service.mode is ServiceTemplateMode.TRANSPARENT:
                other = InterfaceRole.RIGHT if side is InterfaceRole.LEFT else InterfaceRole.LEFT
                far = self.ports[(member, other)].mac
                out.append(Hop(n, port.name, TRANSPARENT_NEXT_HOP, far))
            else:
                out.append(Hop(n, port.name, _address(service, side)))
        for (peer, instance), n in sorted(self.tunnel_hops.items(), key=lambda kv: kv[1]):
            device = _tunnel_device(instance)
            out.append(Hop(n, device, self.addresses[peer], tunnel_mac(peer)))
        return sorted(out, key=lambda h: h.id)

    def tunnels(self) -> list[Tunnel]:
        """The VXLAN devices this steering needs: one per remote instance of a path (to the
        host serving it) and per transit instance (to every peer)."""
        peers: dict[Ref, set[str]] = {}
        for peer, instance in self.tunnel_hops:
            peers.setdefault(instance, set()).add(peer)
        return [
            Tunnel(
                _tunnel_device(instance),
                tunnel_key(instance),
                tunnel_mac(self.host),
                tuple(sorted((tunnel_mac(p), str(self.addresses[p])) for p in hosts)),
            )
            for instance, hosts in sorted(peers.items(), key=lambda kv: str(kv[0]))
        ]

    # -- nft text ---------------------------------------------------------------------------

    def counters(self) -> list[str]:
        """The names of every named counter, by slot."""
        return [n for s in sorted(self.slots.values()) for n in counter_names(s)]

    def lines(self) -> list[str]:
        """The rules of chain ``steer`` before ``ct state new jump classify`` (the module
        docstring)."""
        back, entry = self._transit_lines()
        deliver = f"meta mark set {STEER_MARK | BACK_FLAG:#010x} accept"
        for path, bit in sorted(self.paths.items(), key=lambda kv: kv[1]):
            label = f"ct label {bit}"
            last = len(path) - 1
            for j, instance in enumerate(path):
                rights = _ifnames(self._ports(instance, InterfaceRole.RIGHT))
                lefts = _ifnames(self._ports(instance, InterfaceRole.LEFT))
                onward = f"goto svc_p{bit}_o{j + 1}" if j < last else deliver
                backward = f"goto svc_p{bit}_r{j - 1}" if j > 0 else deliver
                back.append(f"iifname {rights} {label} ct direction original {onward}")
                back.append(f"iifname {lefts} {label} ct direction reply {backward}")
            ports = [p for i in path for side in InterfaceRole for p in self._ports(i, side)]
            back.append(f"iifname {_ifnames(ports)} {label} {deliver}")
            entry.append(f"{label} ct direction original goto svc_p{bit}_o0")
            entry.append(f"{label} ct direction reply goto svc_p{bit}_r{last}")
        # Nothing else comes in by a tunnel: transit from a peer was matched above.
        strays = [f'iifname "{TUNNEL_PREFIX}*" drop'] if self.tunnel_hops else []
        # A flow carried for a peer that is also delivered here (its destination is local)
        # or answered from here: steered already, never classified again.
        carried = [f"ct label {bit} accept" for bit in sorted(self.peers.values())]
        return back + entry + strays + carried

    def _transit_lines(self) -> tuple[list[str], list[str]]:
        """The ``steer`` rules of transit: back from a local member to the peer's tunnel,
        and a peer's packet entering its instance (the module docstring)."""
        back, entry = [], []
        index = {i: n for n, i in enumerate(self.instances())}
        for (peer, instance), n in sorted(self.tunnel_hops.items(), key=lambda kv: kv[1]):
            if instance not in self.transit:
                continue
            label = f"ct label {self.peers[peer]}"
            to = f"meta mark set {STEER_MARK | BACK_FLAG | n:#010x} accept"
            rights = _ifnames(self._ports(instance, InterfaceRole.RIGHT))
            lefts = _ifnames(self._ports(instance, InterfaceRole.LEFT))
            back.append(f"iifname {rights} {label} ct direction original {to}")
            back.append(f"iifname {lefts} {label} ct direction reply {to}")
            source = f'iifname "{_tunnel_device(instance)}" ether saddr {tunnel_mac(peer)}'
            chain = f"svc_x{index[instance]}_{self.peers[peer]}"
            # Carried already — for another peer, or by a path of this host through the
            # instance (the source's host steered it, then the destination's did too): back
            # to this peer, not through the instance again.
            done = [bit for other, bit in self.peers.items() if other != peer]
            done += [bit for path, bit in self.paths.items() if instance in path]
            for bit in sorted(done):
                entry.append(f"{source} ct label {bit} meta mark set {STEER_MARK | n:#010x} accept")
            for direction, end in (("original", "o"), ("reply", "r")):
                entry.append(
                    f"{source} ct direction {direction} ct label set {self.peers[peer]} "
                    f"goto {chain}_{end}"
                )
        return back, entry

    def verdict(self, path: Path) -> str:
        """The classify verdict of a redirect rule through ``path`` (steered)."""
        bit = self.paths[path]
        return f"ct label set {bit} goto svc_p{bit}_o0"

    def chains(self) -> list[tuple[str, list[str]]]:
        """Every chain the ``steer`` rules reach, each before any chain that names it."""
        out: list[tuple[str, list[str]]] = []
        for member, slot in sorted(self.slots.items(), key=lambda kv: kv[1]):
            for side in InterfaceRole:
                out.append(self._pin_chain(member, slot, side))
        out += self.instance_chains(self.instances())
        index = {i: n for n, i in enumerate(self.instances())}
        for path, bit in sorted(self.paths.items(), key=lambda kv: kv[1]):
            last = len(path) - 1
            for j in range(len(path)):
                base = 0 if j == 0 else STEER_MARK | BACK_FLAG
                jumps = self._enter(path[j:], InterfaceRole.LEFT, index)
                out.append((f"svc_p{bit}_o{j}", [f"meta mark set {base:#010x}", *jumps]))
            for j in range(len(path)):
                base = 0 if j == last else STEER_MARK | BACK_FLAG
                jumps = self._enter(path[j::-1], InterfaceRole.RIGHT, index)
                out.append((f"svc_p{bit}_r{j}", [f"meta mark set {base:#010x}", *jumps]))
        for (peer, instance), n in sorted(self.tunnel_hops.items(), key=lambda kv: kv[1]):
            if instance not in self.transit:
                continue
            chain = f"svc_x{index[instance]}_{self.peers[peer]}"
            bypass = f"meta mark set meta mark or {STEER_MARK | n:#010x} accept"
            for side, end in ((InterfaceRole.LEFT, "o"), (InterfaceRole.RIGHT, "r")):
                jump = f"jump svc_i{index[instance]}_{_SIDE[side]}"
                out.append((f"{chain}_{end}", ["meta mark set 0x00000000", jump, bypass]))
        return out

    def _enter(
        self, instances: Iterable[Ref], side: InterfaceRole, index: Mapping[Ref, int]
    ) -> list[str]:
        """The rules that take a packet into ``instances`` in turn by ``side``: a local
        instance's chain (which returns when it is bypassed), or a remote one's tunnel hop
        (the serving host decides health); ``accept`` (deliver) after the last."""
        out = []
        for i in instances:
            remote = self.remotes.get(i)
            if remote is None:
                out.append(f"jump svc_i{index[i]}_{_SIDE[side]}")
                continue
            hop = STEER_MARK | self.tunnel_hops[(remote.host, i)]
            out.append(f"meta mark set meta mark or {hop:#010x} accept")
            return out
        return [*out, "accept"]

    def instance_chains(self, instances: Iterable[Ref]) -> list[tuple[str, list[str]]]:
        """The chains that health decides: the keep chains of the members of ``instances``,
        then the instance chains (which name them)."""
        index = {i: n for n, i in enumerate(self.instances())}
        keeps: list[tuple[str, list[str]]] = []
        heads: list[tuple[str, list[str]]] = []
        for instance in instances:
            members = self.members(instance)
            healthy = [m for m in members if self.healthy(m)]
            when = self.services[members[0]].when_all_down
            for side in InterfaceRole:
                lines = []
                for m in members:
                    keep = f"svc_keep_{self.slots[m]}_{_SIDE[side]}"
                    keeps.append((keep, self._keep_lines(m, side)))
                    lines.append(f"ct label {pinned_bit(self.slots[m])} jump {keep}")
                if healthy:
                    buckets = ", ".join(
                        f"{n} : goto svc_pin_{self.slots[m]}_{_SIDE[side]}"
                        for n, m in enumerate(healthy)
                    )
                    lines.append(f"symhash mod {len(healthy)} vmap {{ {buckets} }}")
                elif when is WhenAllDown.FAIL_CLOSED:
                    lines.append("drop")
                # fail-open: the end of the chain returns, and the caller skips the instance
                heads.append((f"svc_i{index[instance]}_{_SIDE[side]}", lines))
        return keeps + heads

    def _keep_lines(self, member: Member, side: InterfaceRole) -> list[str]:
        slot = self.slots[member]
        packets, _ = counter_names(slot)
        out = [f"ct label {left_bit(slot)} return"]
        if self.healthy(member):
            out.append(f'counter name "{packets}" {self._to(member, side)}')
        else:
            out.append(f"ct label set {left_bit(slot)}")
        return out

    def _pin_chain(self, member: Member, slot: int, side: InterfaceRole) -> tuple[str, list[str]]:
        packets, flows = counter_names(slot)
        to = self._to(member, side)
        return (
            f"svc_pin_{slot}_{_SIDE[side]}",
            [
                # Pinned already: the flow left this member once and the hash picked it again
                # (the flow follows the hash until a member it has not left is picked).
                f'ct label {pinned_bit(slot)} counter name "{packets}" {to}',
                f'ct label set {pinned_bit(slot)} counter name "{flows}" '
                f'counter name "{packets}" {to}',
            ],
        )

    def _to(self, member: Member, side: InterfaceRole) -> str:
        hop = STEER_MARK | self.hop_ids[(member, side)]
        return f"meta mark set meta mark or {hop:#010x} accept"

    def _ports(self, instance: Ref, side: InterfaceRole) -> list[str]:
        if instance in self.remotes:
            return [_tunnel_device(instance)]
        return [self.ports[(m, side)].name for m in self.members(instance)]


def _ifnames(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    if len(unique) == 1:
        return f'"{unique[0]}"'
    return "{ " + ", ".join(f'"{n}"' for n in unique) + " }"


def _address(service: LocalService, side: InterfaceRole) -> ipaddress.IPv4Address:
    itf = service.left if side is InterfaceRole.LEFT else service.right
    for ip in itf.addresses:
        if isinstance(ip, ipaddress.IPv4Address):
            return ip
    raise DatapathError(
        f"in-network service instance {service.instance} cannot be steered through: "
        f"workload {service.workload!r} has no IPv4 address on its {side.value} interface "
        f"{itf.interface!r}"
    )


def steered_paths(program: Program) -> set[Path]:
    """The ``via`` of every enforced redirect rule whose instances each run on this host or
    are served to it by another (``Program.remote_services``) over an IPv4 underlay."""
    local = {s.instance for s in program.services}
    remote = {r.instance for r in program.remote_services if r.address.version == 4}
    return {
        r.via
        for blocks in program.chains.values()
        for b in blocks
        for r in b.rules
        if r.action is Action.REDIRECT and not r.audit and r.via and set(r.via) <= local | remote
    }


def _allocate(
    previous: Mapping[K, int],
    wanted: Iterable[K],
    first: int,
    last: int,
    what: str,
    taken: Iterable[int] = (),
) -> dict[K, int]:
    """Ids for ``wanted``: those of ``previous`` kept (unless in ``taken``), the lowest free
    ones for the rest; none of ``taken``."""
    keys = set(wanted)
    busy = set(taken)
    ids = {k: n for k, n in previous.items() if k in keys and n not in busy}
    taken = set(ids.values()) | busy
    free = (n for n in range(first, last + 1) if n not in taken)
    for key in sorted(keys - ids.keys(), key=repr):
        n = next(free, None)
        if n is None:
            raise DatapathError(f"a host steers through at most {last - first + 1} {what}")
        ids[key] = n
    return ids


def steering_for(
    program: Program,
    ports: Mapping[tuple[str, str], Port],
    previous: Steering | None,
    down: Collection[str] = (),
) -> Steering:
    """The steering of ``program`` with the workloads of ``down`` down; ``ports`` maps
    (workload, interface) to its host port (``_routing.find_ports``).  Ids and slots of
    ``previous`` are kept for what stays, so that flows already pinned keep their bits.
    Raises ``DatapathError`` when a member's port is missing, an in-network member has no
    IPv4 address on a side, or the label runs out of bits."""
    paths = steered_paths(program)
    local = {s.instance for s in program.services}
    addresses = {
        p.host: p.address for p in program.peers if isinstance(p.address, ipaddress.IPv4Address)
    }
    transit = frozenset(local) if addresses else frozenset()
    if not paths and not transit:
        return Steering()
    used = {i for p in paths for i in p}
    remotes = {r.instance: r for r in program.remote_services if r.instance in used - local}
    for r in remotes.values():
        assert isinstance(r.address, ipaddress.IPv4Address)  # steered_paths: IPv4 only
        addresses.setdefault(r.host, r.address)
    services = {
        (s.instance, s.workload): s for s in program.services if s.instance in used | transit
    }
    keys = [(m, side) for m in sorted(services, key=str) for side in InterfaceRole]
    found: dict[HopKey, Port] = {}
    for member, side in keys:
        s = services[member]
        itf = s.left if side is InterfaceRole.LEFT else s.right
        port = ports.get((s.workload, itf.interface))
        if port is None:
            raise DatapathError(
                f"service instance {member[0]}: no interface of this host is the {side.value} "
                f"interface {itf.interface!r} of workload {s.workload!r} (alias "
                f"{interface_alias(s.workload, itf.interface)!r})"
            )
        found[(member, side)] = port
    before = previous or Steering()
    bits = _allocate(before.paths, paths, 0, MAX_PATHS - 1, "paths")
    slots = _allocate(before.slots, services, 0, MAX_MEMBERS - 1, "service workloads")
    hop_ids = _allocate(before.hop_ids, keys, 1, _MAX_HOP, "hops")
    tunnel_keys = [(r.host, r.instance) for r in remotes.values()]
    tunnel_keys += [(peer, i) for i in transit for peer in addresses if peer != program.host]
    tunnel_hops = _allocate(before.tunnel_hops, tunnel_keys, 1, _MAX_HOP, "hops", hop_ids.values())
    peers = {peer for peer, i in tunnel_keys if i in transit}
    peer_bits = _allocate(before.peers, peers, 0, MAX_PATHS - 1, "paths and peers", bits.values())
    devices = [_tunnel_device(i) for i in {i for _, i in tunnel_keys}]
    if len(set(devices)) != len(devices):
        raise DatapathError("two steered service instances share a tunnel key (VNI)")
    steering = Steering(
        bits,
        slots,
        hop_ids,
        found,
        services,
        host=program.host,
        remotes=remotes,
        peers=peer_bits,
        addresses=addresses,
        transit=transit,
        tunnel_hops=tunnel_hops,
    ).with_down(down)
    steering.hops()  # raises for an in-network side without an IPv4 address
    return steering
