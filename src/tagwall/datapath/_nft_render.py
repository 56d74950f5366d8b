"""Rendering a ``Program`` as nftables script text.  Pure: no I/O; ``_nft.py`` applies it.

One table ``inet <table>`` holds everything (DESIGN §4).  Its layout — the evaluation order
is docs/semantics.md "Evaluation at one end" and the ``Program`` docstring — one base chain,
then for each direction ``d`` in (egress, ingress) the same skeleton::

    chain forward      hook forward, priority 0, policy accept:
                         ct state established,related accept      (replies of allowed flows)
                         local source → goto egress_eval
                         goto ingress
    chain ingress      local destination → goto ingress_eval; accept
    chain d_eval       clear a stray scratch mark; jump d_admin; jump d_application;
                         jump d_baseline; default posture (accept | drop)
    chain d_<tier>     meta l4proto . th dport vmap { tcp . 80 : goto d_<tier>_0, … }
                         (service dispatch, below); then, in order, every rule that can match
                         a packet no key covers; each nft rule also matches the block's
                         ``applies_to`` set on the local address, so ``pass`` is a plain
                         ``return`` to d_eval; d_application ends with isolated[d] → drop,
                         which only a packet that matched no rule reaches (``pass`` skips it)
    chain d_<tier>_<n> in order, every rule of the tier that can match the keys that go here;
                         reached by goto, so its end and its ``return`` go back to d_eval
                         like the tier chain's; d_application_<n> ends with the same drop
    chain refuse       reject: TCP → RST; anything else → ICMP/ICMPv6 "administratively
                         prohibited" (clients see EHOSTUNREACH rather than a silent drop)
    chain mt_*         one per tag map and family: the map lookup of matchTags (below)

An egress allow is ``goto ingress``, not ``accept``: the packet still meets the ingress walk,
so a flow between two workloads of one host is checked at both ends.  One base chain rather
than one per direction: every forwarded packet, established ones included, passes one hook's
chain, not two (bench/steering.py cannot tell the saving from its noise: docs/benchmarks.md).
The skeleton is fixed (all six tier chains exist, empty or not), so only rules and dispatched
chains move on updates: a tier chain is rewritten together with its dispatched chains.

Order of matches in a rule: the service (protocol, port, ICMP type: two compares; a named
port's set lookup), then the local ``applies_to`` set, the source, the destination, and the
matchTags lookup last.  nft stops at the first match that fails, and only a new flow's first
packet walks the rules at all (the rest take ``ct state established``), so that walk is the
whole cost of the rules: measured below.

Service dispatch (``_plan``; the cases are the comment at ``_footprint``): per tier chain,
the ports of each port protocol are cut at every range end of the tier's rules into disjoint
pieces; each piece is a key of one anonymous verdict map whose chain holds, in order, the
rules whose ranges cover it plus every rule that can match any port (no services, any
protocol, a named port — its ports are port-set elements, so port changes stay element
commands).  Rules for ICMP, and for a whole protocol, stay in the tier chain, which is where
a packet no key covers continues.  So a packet meets the same rules in the same order minus
rules that cannot match it.  A tier chain whose chains would hold more than
``MAX_DISPATCH_COPIES`` copies per rule (+ 256) is not dispatched.

Verdicts: allow, redirect → accept (a redirect decides like allow; which flows it steers
through service instances, and how, is ``_steering``: with a steered path the table also
holds a prerouting chain ``steer``, the ``svc_`` chains and named counters of the service
workloads, ``c_``-prefixed classify copies of the tier chains (only with a path of its own: a
host that only carries other hosts' flows has none), an accept of packets back from a
service early in the forward chain, and with tunnels (remote instances, transit) a forward
chain ``tunnel_mss`` at priority -5 that clamps the MSS of TCP SYNs into them;
``render_health`` rewrites the ``svc_`` chains that a health change touches); deny → drop; reject →
goto refuse; pass → return.  Each allow/deny/reject (and the isolation drop and the default
posture) also reports which rule decided: ``ct mark`` for allowed flows, NFLOG for dropped
packets (``_nft_decisions.py``; ``Layout.decisions`` holds the ids).  Audit rules are not
rendered at all: the enforced verdict ignores them, and a counter on a verdict-less copy
would count packets that an earlier rule decided, which reads as a would-match it is not.
``log`` adds nothing: every flow is recorded with its decision already.

Families: a packet is evaluated only when one end is a local address, so rules are rendered
for the address families of the local interfaces (``Layout.families``) and nothing else; a
change of those families re-renders the whole table in the same transaction.

Sets — what nft 1.0.6 charges (measured here, kernel 6.18; every element command first
refreshes nft's cache of the table, since each transaction changes the generation):

* one element add/delete: 0.2 ms into a 10,000-element hash set in a table without rules;
* a *named interval set* makes it load every element of the set: 15.9 ms with 10,000
  prefixes (0.2 ms with 100) — FIELD-NOTES' trap.  Every element command of the table pays
  it, whichever set it changes: ~1.05 µs per range stored and ~6 µs per interval set
  (in-process library, 2026-11-26: one hash-set element with 20 interval sets of 700
  ranges, 16 ms; with 200 sets of 10, 3.4 ms; with none, 0.05 ms);
* an *anonymous* interval set (prefixes inline in a rule) costs ~8 µs per set and command,
  whatever its size: 100 of them +0.65 ms, 300 +2.5 ms — one per rule that names prefixes,
  so inline prefixes do not escape the trap, they trade it for one that grows with rules;
* a named hash set costs ~1 µs per set and command.

So: every program set becomes per family a named hash set ``s_<12 hex of sha1(name)>_<4|6>``
of its single addresses (comment: the readable name), or, where its addresses form few runs
of consecutive addresses and the host's budget allows (``compiler/_ranges.py``: a set saving
at least what it costs, at most ~2 ms per update in all), a named interval set
``s_…_<4|6>_r`` of the runs; a member coming or going is then the removal and addition of
the runs around it (``_nft_ranges``), and a set switching between the two is re-declared,
its rules rewritten as for a new prefix length.  Its prefixes become named hash
sets of network addresses per prefix length, ``s_…_4_24``, matched by masked lookup
(``ip saddr & 255.255.255.0 == @s_…_4_24``): shared by every rule, no interval set, and a
prefix change is element commands.  A set whose prefixes span more than
``MAX_MASKED_LENGTHS`` lengths in a family (a CIDR minus an exception fragments into up to
32) gets one named interval set ``s_…_4_i`` instead, shared by its rules: fragments are few,
so its cache cost is small, where one masked alternative per length would multiply rules.
A rule whose set has addresses and prefixes (or several lengths) becomes one nft rule per
alternative, same verdict, same comment.  A set with prefixes but no addresses gets no
address alternative (a CIDR never gains members); any other set always has it, so member
changes stay element commands.  Rule text changes (and tier chains are rewritten) only when
a set gains/loses its address alternative or a prefix length, switches between masked
and interval, or its addresses between single and runs.

matchTags: each distinct value tuple gets a mark id ``MARK_SCRATCH | n`` (``Layout.tag_ids``,
kept while the data path runs, reassigned only by a full load).  Per tag map and family:
a map ``m_*`` address → id, a set ``t_*`` of address . id, and a chain ``mt_*`` holding the
one rule ``meta mark set ip saddr map @m_*``.  A rule with matchTags becomes
``<other matches> jump mt_*`` then ``ip daddr . meta mark @t_* meta mark set 0 <verdict>``:
a source without an entry leaves the mark alone and nothing of ``t_*`` can match it; a
destination with another tuple (or none) does not match.  The map is looked up only in
``mt_*`` because the kernel walks a whole map each time a rule binds it: 530 rules binding a
4,000-entry map cost 64 ms of a 157 ms load.

The packet mark as scratch register — confined to tagwall's chains.  It is written only in
``mt_*``, only after the rule's other matches held; the matching rule sets it back to 0
before its verdict, and every matchTags rule is followed by ``meta mark & 0xff000000 ==
0x74000000 → meta mark set 0``; each d_eval chain starts with the same clear.  So no packet
leaves tagwall's chains with a mark in the scratch range, and none arriving with one can
fake a match.  The price: a packet that reached a lookup leaves with mark 0, whatever it had
before.  Other users of the mark (service steering) must keep out of ``MARK_SCRATCH_MASK``
and must not rely on the mark of new flows surviving the forward hook (use ct mark).

Named ports: per family a set ``p_*`` of ``address . inet_proto . inet_service``, matched with
``ip daddr . meta l4proto . th dport``.

What the rule walk costs — bench/datapath.py (a SYN through two hosts' programs, 1,000 rules
in all, ~50,000 members, the allowing rule last; new connections/s, medians of 5 rounds, one
quiet run, 2026-11-26): conntrack alone (the floor of any stateful data path) 59.9k; this
rendering 56.3k (0.94 of the floor); the same without dispatch, cheap compares first only,
32.1k; the set lookups first, as rendered before, 11.9k (a noisier run whose floor read
36.9k); iptables-nft, 504 linear rules per host, 21.7k.  Roughly 130 to 190 ns of CPU per
rule with the lookups first, 40 to 85 ns with the compares first; with dispatch the test SYN
meets one rule per tier chain.  What dispatch costs the load — bench/nft_program.py, 1,000
rules, about one in seven naming a port (copied into each of the 5 chains of its tier) and
none without services: 1,695 nft rules, load 127 ms instead of 81 ms (same session);
member updates unchanged, 0.61 ms (the maps are anonymous sets: ~8 µs each per command).
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import ip_network

from ..compiler import (
    AddressSet,
    Block,
    CompiledRule,
    CompiledService,
    PortElement,
    Program,
    ProgramDelta,
    diff_programs,
)
from ..compiler._ranges import RunCount, SetFamily, range_counts
from ..compiler._ranges import ranged as ranged_sets
from ..errors import DatapathError
from ..model import Action, IPAddress, Posture, Protocol, Ref, Tier, TrafficDirection
from ._nft_decisions import (
    DECISION_ISOLATED,
    DECISION_POSTURE,
    DecisionKey,
    allocate_decisions,
    decision_statement,
)
from ._nft_ranges import RunChanges, range_changes, run_elements, set_runs, touched_sets
from ._steering import BACK_FLAG, STEER_MARK, TUNNEL_PREFIX, Steering

__all__ = [
    "ISOLATED_COMMENT",
    "MARK_SCRATCH",
    "MARK_SCRATCH_MASK",
    "MAX_DISPATCH_COPIES",
    "MAX_MASKED_LENGTHS",
    "POSTURE_COMMENT",
    "CounterKey",
    "Layout",
    "chain_names",
    "counter_index",
    "decision_index",
    "layout_for",
    "render_cleanup",
    "render_closed",
    "render_health",
    "render_load",
    "render_update",
]

MARK_SCRATCH = 0x74000000  # matchTags ids: MARK_SCRATCH | n, 1 ≤ n ≤ 0xFFFFFF ("t" = 0x74)
MARK_SCRATCH_MASK = 0xFF000000
MAX_MASKED_LENGTHS = 4  # per set and family; more distinct prefix lengths → an interval set
MAX_DISPATCH_COPIES = 4  # per rule of a tier chain, in its chains; more → no dispatch
_DISPATCH_SLACK = 256  # copies a small tier chain may always make
ISOLATED_COMMENT = "application-default-deny"
POSTURE_COMMENT = "default-posture"
_MAX_TAG_ID = 0x00FFFFFF
_COMMENT_MAX = 128  # nft 1.0.6 refuses longer comments
_IP = {4: "ip", 6: "ip6"}
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_VERDICT = {
    Action.ALLOW: "accept",
    Action.REDIRECT: "accept",
    Action.DENY: "drop",
    Action.REJECT: "goto refuse",
    Action.PASS: "return",
}
# An egress allow goes on to the destination's ingress walk (the module docstring).
_ONWARD = "goto ingress"
_SCRATCHED = f"meta mark and {MARK_SCRATCH_MASK:#010x} == {MARK_SCRATCH:#010x}"
_SCRATCH_CLEAR = f"{_SCRATCHED} meta mark set 0"
_REFUSE = ("meta l4proto tcp reject with tcp reset", "reject with icmpx type admin-prohibited")


@dataclass(frozen=True)
class Layout:
    """What the rendering needs besides the program.  Invariant: ``tag_ids`` holds every value
    tuple of every tag map of the program rendered with it, ids unique; ``decisions`` holds
    the decision id of every rule of it (``_nft_decisions``), unique per direction."""

    table: str
    families: frozenset[int]  # address families of the local interfaces: {4}, {6}, {4, 6}
    tag_ids: Mapping[tuple[str, ...], int]
    decisions: Mapping[DecisionKey, int] = field(default_factory=dict)
    steering: Steering = field(default_factory=Steering)  # no paths: nothing steered
    ranges: Mapping[SetFamily, RunCount] = field(default_factory=dict)  # _nft_ranges
    ranged: frozenset[SetFamily] = frozenset()  # sets stored as runs: ranged_sets(ranges)

    @property
    def steers(self) -> bool:
        """Are the steering chains rendered?  Paths only with IPv4 local addresses: steering
        is IPv4 only (``_steering``); transit needs none (a host may run nothing but a
        transparent service, which has no address)."""
        return self.steering.active and (4 in self.families or not self.steering.paths)


@dataclass(frozen=True, slots=True)
class CounterKey:
    """What one counter comment in one chain stands for (``counter_index``)."""

    direction: TrafficDirection
    tier: Tier | None  # None for the default posture
    policy_set: Ref | None
    policy: Ref | None
    rule: str  # the rule name, or ISOLATED_COMMENT / POSTURE_COMMENT
    action: Action


# -- names -----------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _digest(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:12]


def _nft(kind: str, name: str, family: int) -> str:
    """nft name of program object ``name``: kind s (address set), p (port set), m (tag map),
    t (tag pairs), mt (tag lookup chain).  ``_nft("s", "tags:tier=web", 4)`` → ``s_<hex>_4``."""
    return f"{kind}_{_digest(name)}_{family}"


def _tier_chain(direction: TrafficDirection, tier: Tier) -> str:
    return f"{direction.value}_{tier.value}"


def chain_names(program: Program) -> list[str]:
    """Every chain of ``program``'s rendering that carries counters: each tier chain followed
    by its dispatched chains, then the eval chains."""
    return [
        *(
            name
            for d in TrafficDirection
            for t in Tier
            for name in [_tier_chain(d, t), *_dispatched_names(program, d, t)]
        ),
        *(f"{d.value}_eval" for d in TrafficDirection),
    ]


def _dispatched_names(
    program: Program, d: TrafficDirection, tier: Tier, prefix: str = ""
) -> list[str]:
    return [f"{prefix}{_tier_chain(d, tier)}_{n}" for n in range(_dispatched(program, d, tier))]


def _quote(text: str) -> str:
    """An nft comment: no double quotes inside, at most 128 bytes (long ones keep a digest so
    two long names stay apart)."""
    text = text.replace('"', "'").replace("\\", "/")
    if len(text.encode()) <= _COMMENT_MAX:
        return f'"{text}"'
    head = text.encode()[: _COMMENT_MAX - 14].decode(errors="ignore")
    return f'"{head}~{_digest(text)}"'


def _rule_comment(block: Block, rule: CompiledRule) -> str:
    return _quote(f"{block.policy_set} {rule.policy} {rule.rule}")


def _decision_keys(blocks: Iterable[tuple[TrafficDirection, Block]]) -> set[DecisionKey]:
    return {(d, _rule_comment(b, r)) for d, b in blocks for r in b.rules if not r.audit}


def _check_unique(names: Iterable[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        digest = _digest(name)
        if seen.setdefault(digest, name) != name:
            raise DatapathError(
                f"program names {seen[digest]!r} and {name!r} share the nft name digest {digest}"
            )


# -- layout and matchTags ids ----------------------------------------------------------------


def _families(program: Program) -> frozenset[int]:
    return frozenset(ip.version for itf in program.interfaces for ip in itf.addresses)


def _allocate(ids: dict[tuple[str, ...], int], tuples: Iterable[tuple[str, ...]]) -> None:
    missing = sorted(set(tuples) - ids.keys())
    if not missing:
        return
    start = max(ids.values(), default=MARK_SCRATCH) - MARK_SCRATCH + 1
    if start + len(missing) - 1 > _MAX_TAG_ID:
        raise DatapathError(
            f"matchTags needs {len(ids) + len(missing)} value tuples; marks hold {_MAX_TAG_ID}"
        )
    for n, values in enumerate(missing, start):
        ids[values] = MARK_SCRATCH | n


def layout_for(
    program: Program,
    table: str,
    previous: Layout | None = None,
    steering: Steering | None = None,
) -> Layout:
    """The layout of a full load of ``program``: ids of ``previous`` kept for tuples still in
    use, new ones for the rest; ``steering`` (``_steering.steering_for``), else none."""
    used = {v for m in program.tag_maps.values() for v in m.values()}
    ids = {v: n for v, n in (previous.tag_ids.items() if previous else ()) if v in used}
    _allocate(ids, used)
    blocks = [(d, b) for (d, _), bs in program.chains.items() for b in bs]
    keys = _decision_keys(blocks)
    decisions = {k: n for k, n in (previous.decisions.items() if previous else ()) if k in keys}
    allocate_decisions(decisions, keys)
    families = _families(program)
    counts = range_counts({n: s.addresses for n, s in program.sets.items()}, families)
    return Layout(
        table, families, ids, decisions, steering or Steering(), counts, ranged_sets(counts)
    )


# -- nft objects -----------------------------------------------------------------------------
# A declaration is (keyword, nft name, statements inside the braces); it is written as a line
# of a table block for a load, or as ``add`` commands for an update.

_Decl = tuple[str, str, list[str]]


def _declared(decl: _Decl) -> str:
    kind, name, parts = decl
    return f"{kind} {name} {{ {'; '.join(parts)}; }}"


def _added(table: str, decl: _Decl) -> list[str]:
    kind, name, parts = decl
    if kind == "chain":  # rules in an "add chain" block cannot name maps of the same script
        return [f"add chain inet {table} {name}"] + [
            f"add rule inet {table} {name} {rule}" for rule in parts
        ]
    return [f"add {kind} inet {table} {name} {{ {'; '.join(parts)}; }}"]


def _hash_set(name: str, kind: str, comment: str, elements: list[str]) -> _Decl:
    parts = [f"type {kind}", f"comment {_quote(comment)}"]
    if elements:
        parts.append(f"elements = {{ {', '.join(elements)} }}")
    return ("set", name, parts)


def _sorted(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return sorted(addresses, key=lambda a: (a.version, int(a)))


def _strs(addresses: Iterable[IPAddress]) -> list[str]:
    return [str(a) for a in _sorted(addresses)]


def _local(program: Program, family: int) -> list[IPAddress]:
    return [ip for itf in program.interfaces for ip in itf.addresses if ip.version == family]


def _prefix_groups(s: AddressSet, family: int) -> dict[int, list[str]] | None:
    """Network addresses of the set's ``family`` prefixes by prefix length; None when they
    span more than MAX_MASKED_LENGTHS lengths (one named interval set instead)."""
    groups: dict[int, list[str]] = {}
    for p in s.prefixes:
        if p.version == family:
            groups.setdefault(p.prefixlen, []).append(str(p.network_address))
    return groups if len(groups) <= MAX_MASKED_LENGTHS else None


def _prefix_sets(name: str, s: AddressSet, family: int) -> dict[str, list[str]]:
    """nft name → elements of the prefix sets of set ``name``: ``…_<length>`` hash sets of
    network addresses (a /0 needs none), or one ``…_i`` interval set of the prefixes."""
    nft = _nft("s", name, family)
    groups = _prefix_groups(s, family)
    if groups is None:
        return {f"{nft}_i": [str(p) for p in s.prefixes if p.version == family]}
    return {f"{nft}_{n}": sorted(els) for n, els in groups.items() if n}


def _prefix_decl(name: str, nft: str, family: int, elements: list[str]) -> _Decl:
    suffix = nft.rsplit("_", 1)[1]
    if suffix != "i":
        return _hash_set(nft, _ADDR_TYPE[family], f"{name} /{suffix}", elements)
    parts = [f"type {_ADDR_TYPE[family]}", "flags interval", f"comment {_quote(name)}"]
    return ("set", nft, [*parts, f"elements = {{ {', '.join(elements)} }}"])


def _address_set(name: str, family: int, layout: Layout) -> str:
    """nft name of the set holding the single addresses of set ``name``."""
    nft = _nft("s", name, family)
    return f"{nft}_r" if (name, family) in layout.ranged else nft


def _address_decl(name: str, s: AddressSet, family: int, layout: Layout) -> _Decl:
    nft = _address_set(name, family, layout)
    if (name, family) not in layout.ranged:
        addresses = _strs(a for a in s.addresses if a.version == family)
        return _hash_set(nft, _ADDR_TYPE[family], name, addresses)
    elements = run_elements(set_runs(s.addresses, family), family)
    parts = [f"type {_ADDR_TYPE[family]}", "flags interval", f"comment {_quote(name)}"]
    return ("set", nft, [*parts, f"elements = {{ {', '.join(elements)} }}"])


def _address_decls(name: str, s: AddressSet, family: int, layout: Layout) -> list[_Decl]:
    out = [_address_decl(name, s, family, layout)]
    for prefix_set, elements in _prefix_sets(name, s, family).items():
        out.append(_prefix_decl(name, prefix_set, family, elements))
    return out


def _port_elements(elements: Iterable[PortElement], family: int) -> list[str]:
    return sorted(f"{a} . {p.value} . {n}" for a, p, n in elements if a.version == family)


def _port_decl(name: str, family: int, elements: Iterable[PortElement]) -> _Decl:
    kind = f"{_ADDR_TYPE[family]} . inet_proto . inet_service"
    return _hash_set(_nft("p", name, family), kind, name, _port_elements(elements, family))


def _tag_decls(
    name: str,
    family: int,
    values: Mapping[IPAddress, tuple[str, ...]],
    ids: Mapping[tuple[str, ...], int],
) -> list[_Decl]:
    addr = _ADDR_TYPE[family]
    entries = sorted((int(a), a, ids[v]) for a, v in values.items() if a.version == family)
    mapped = [f"type {addr} : mark", f"comment {_quote(name)}"]
    if entries:
        mapped.append(f"elements = {{ {', '.join(f'{a} : {n:#010x}' for _, a, n in entries)} }}")
    m = _nft("m", name, family)
    return [
        ("map", m, mapped),
        _hash_set(
            _nft("t", name, family),
            f"{addr} . mark",
            name,
            [f"{a} . {n:#010x}" for _, a, n in entries],
        ),
        ("chain", _nft("mt", name, family), [f"meta mark set {_IP[family]} saddr map @{m}"]),
    ]


def _decls(program: Program, layout: Layout, names: Iterable[str] | None = None) -> list[_Decl]:
    """Sets, maps and lookup chains of ``program``, with their elements: those of ``names``,
    or all of them and the local address sets."""
    out: list[_Decl] = []
    for f in sorted(layout.families):
        if names is None:
            local = _strs(_local(program, f))
            out.append(_hash_set(f"local_{f}", _ADDR_TYPE[f], "local workload addresses", local))
        wanted = set(names) if names is not None else None
        for name in sorted(program.sets if wanted is None else wanted & program.sets.keys()):
            out += _address_decls(name, program.sets[name], f, layout)
        ports = program.port_sets
        for name in sorted(ports if wanted is None else wanted & ports.keys()):
            out.append(_port_decl(name, f, ports[name]))
        maps = program.tag_maps
        for name in sorted(maps if wanted is None else wanted & maps.keys()):
            out += _tag_decls(name, f, maps[name], layout.tag_ids)
    return out


# -- rules -----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _mask(family: int, length: int) -> str:
    return str(ip_network(f"{'0.0.0.0' if family == 4 else '::'}/{length}").netmask)


@dataclass(frozen=True)
class _Memo:
    """The alternatives computed in one render: (set, family, key) → matches."""

    layout: Layout
    seen: dict[tuple[str, int, str], list[str]] = field(default_factory=dict)


def _alternatives(program: Program, name: str, family: int, key: str, memo: _Memo) -> list[str]:
    """Matches of ``key`` (e.g. ``ip saddr``) against set ``name``, one per nft rule needed;
    "" matches anything (a /0 prefix).  Memoised: a set may have thousands of prefixes and
    be named by hundreds of rules."""
    if (name, family, key) not in memo.seen:
        found = _compute_alternatives(program, name, family, key, memo.layout)
        memo.seen[(name, family, key)] = found
    return memo.seen[(name, family, key)]


def _compute_alternatives(
    program: Program, name: str, family: int, key: str, layout: Layout
) -> list[str]:
    s = program.sets[name]
    nft = _nft("s", name, family)
    out = [f"{key} @{_address_set(name, family, layout)}"] if s.addresses or not s.prefixes else []
    groups = _prefix_groups(s, family)
    if groups is None:
        return [*out, f"{key} @{nft}_i"]
    full = 32 if family == 4 else 128
    for length in sorted(groups):
        if length == 0:
            out.append("")
        elif length == full:
            out.append(f"{key} @{nft}_{length}")
        else:
            out.append(f"{key} & {_mask(family, length)} == @{nft}_{length}")
    return out


def _service(s: CompiledService, family: int) -> str | None:
    """One service as a match ("" = any); None when it cannot occur in ``family``."""
    if s.named is not None:
        return f"{_IP[family]} daddr . meta l4proto . th dport @{_nft('p', s.named, family)}"
    if s.protocol is None:
        return ""
    if s.protocol in (Protocol.ICMP, Protocol.ICMPV6):
        if (s.protocol is Protocol.ICMP) != (family == 4):
            return None
        if s.icmp_type is not None:
            return f"{s.protocol.value} type {s.icmp_type}"
        return f"meta l4proto {s.protocol.value}"
    if s.ports is None:
        return f"meta l4proto {s.protocol.value}"
    first, last = s.ports
    ports = str(first) if first == last else f"{first}-{last}"
    return f"meta l4proto {s.protocol.value} th dport {ports}"


def _services(services: tuple[CompiledService, ...] | None, family: int) -> list[str]:
    if services is None:
        return [""]
    out: list[str] = []
    for s in services:
        match = _service(s, family)
        if match == "":
            return [""]
        if match is not None and match not in out:
            out.append(match)
    return out


def _verdict(action: Action, direction: TrafficDirection, decision: int, comment: str) -> str:
    report = decision_statement(action, direction, decision)
    verdict = _VERDICT[action]
    if direction is TrafficDirection.EGRESS and verdict == "accept":
        verdict = _ONWARD
    return " ".join(p for p in ("counter", report, verdict, f"comment {comment}") if p)


@dataclass(frozen=True)
class _Style:
    """How a tier chain is written.  The forward chains (no ``steering``): counters, decision
    reports and the verdicts of ``_VERDICT``.  The classify copies (``c_`` chains, prerouting;
    the ``_steering`` docstring): no counters or reports; a steered redirect (IPv4) pins the
    flow and marks its first hop; ``pass`` returns; any other decision at egress goes on to
    the destination's ingress walk, at ingress ends classification."""

    steering: Steering | None = None

    @property
    def prefix(self) -> str:
        return "" if self.steering is None else "c_"

    @property
    def families(self) -> tuple[int, ...] | None:
        """The families to write rules for (None: the layout's)."""
        return None if self.steering is None else (4,)

    def verdict(
        self,
        action: Action,
        direction: TrafficDirection,
        decision: int,
        comment: str,
        via: tuple[Ref, ...] = (),
    ) -> str:
        if self.steering is None:
            return _verdict(action, direction, decision, comment)
        if action is Action.REDIRECT and via in self.steering.paths:
            return self.steering.verdict(via)
        if action is Action.PASS:
            return "return"
        return "goto c_ingress" if direction is TrafficDirection.EGRESS else "accept"


_FORWARD = _Style()


def _rule_lines(
    program: Program,
    layout: Layout,
    direction: TrafficDirection,
    block: Block,
    rule: CompiledRule,
    memo: _Memo,
    style: _Style = _FORWARD,
) -> list[str]:
    local_key = "saddr" if direction is TrafficDirection.EGRESS else "daddr"
    comment = _rule_comment(block, rule)
    decision = layout.decisions[(direction, comment)]
    verdict = style.verdict(rule.action, direction, decision, comment, rule.via)
    families = list(style.families or sorted(layout.families))
    lines = []
    for family in families:
        ip = _IP[family]
        services = _services(rule.services, family)
        if not services:
            continue
        local = _alternatives(program, block.applies_to, family, f"{ip} {local_key}", memo)
        src = _endpoint(program, rule.src, family, f"{ip} saddr", memo)
        dst = _endpoint(program, rule.dst, family, f"{ip} daddr", memo)
        # nft evaluates a rule's matches left to right and stops at the first that fails, so
        # the cheap, selective compares go first: the service (two compares), then the set
        # lookups.  A new flow's first packet meets every rule of a tier until one matches.
        for parts in itertools.product(services, local, src, dst):
            match = " ".join(p for p in parts if p)
            if rule.match_tags is None:
                lines.append(f"{match} {verdict}".lstrip())
                continue
            lines.append(f"{match} jump {_nft('mt', rule.match_tags, family)}".lstrip())
            # The pair lookup only when the jump just wrote a scratch mark (nothing else
            # leaves one here, and ``t_*`` holds only scratch ids): the same match, but a
            # packet that failed the rule's other matches pays a compare, not a lookup.
            pairs = _nft("t", rule.match_tags, family)
            lines.append(f"{_SCRATCHED} {ip} daddr . meta mark @{pairs} meta mark set 0 {verdict}")
    if rule.match_tags is not None and lines:
        lines.append(_SCRATCH_CLEAR)
    return lines


def _endpoint(program: Program, name: str | None, family: int, key: str, memo: _Memo) -> list[str]:
    return [""] if name is None else _alternatives(program, name, family, key, memo)


# -- service dispatch ------------------------------------------------------------------------
# A tier chain that only lists its rules makes a new flow's first packet meet every one of them
# (set lookups included) until one decides.  Instead, one verdict-map lookup on the packet's
# protocol and destination port goes (``goto``) to a chain holding, in their order, only the
# rules that can match that service; the tier chain itself keeps the rules for packets no map
# key covers.  The cases, per rule (``_footprint``):
#
# * no services, a service of any protocol, a named port: can match anything — in every
#   dispatched chain and in the tier chain.  A named port's ports are port-set elements, which
#   change by element commands; the chains must not depend on them;
# * tcp/udp/sctp with ports: the port range — in the chains of the disjoint intervals that the
#   ranges of all rules of the tier cut the ports into, each holding every rule covering it;
# * a whole port protocol (``tcp``): every interval of the protocol, covering all its ports,
#   and the tier chain (a packet whose ports nft cannot read misses the map, not the rule);
# * ICMP, ICMPv6 (any type): only the tier chain — the map holds port protocols only.
#
# A packet meets the same rules in the same order, minus rules that cannot match it, so the
# first match is the same.  ``goto`` rather than ``jump``: a dispatched chain's end, and a
# ``pass`` (``return``) in it, go back to the tier chain's caller (d_eval), as from the tier
# chain itself; so each dispatched chain of the application tier ends with its own copy of
# the isolation drop.

_Range = tuple[Protocol, int, int]  # protocol, first and last port (inclusive)
_PORT_LAST = 65535


@dataclass(frozen=True, slots=True)
class _Footprint:
    """The packets a rule can match, as far as dispatch looks (None instead: anything)."""

    ranges: tuple[_Range, ...]
    undispatched: bool  # can match a packet that no map key covers


@dataclass(frozen=True, slots=True)
class _Plan:
    """One tier chain's dispatch.  ``chains[n]`` is chain ``<tier chain>_<n>``: its map keys
    (``tcp . 80``, ``tcp . 9000-9049``) and the indices of the rules it holds, ascending;
    ``fallback`` indexes the rules the tier chain keeps."""

    chains: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
    fallback: tuple[int, ...]


def _footprint(services: tuple[CompiledService, ...] | None) -> _Footprint | None:
    if services is None:
        return None
    ranges: list[_Range] = []
    undispatched = False
    for s in services:
        if s.named is not None or s.protocol is None:
            return None
        if not s.protocol.has_ports:
            undispatched = True
        elif s.ports is None:
            ranges.append((s.protocol, 0, _PORT_LAST))
            undispatched = True
        else:
            ranges.append((s.protocol, *s.ports))
    return _Footprint(tuple(ranges), undispatched)


def _plan(rules: list[CompiledRule]) -> _Plan:
    """Cut each port protocol's ports at every range end of every rule; each piece covered by
    some range is a map key to the rules covering it and every any-service rule.  Adjacent
    pieces with the same rules become one key; keys with the same rules share a chain.  No
    dispatch when the chains would hold more than ``MAX_DISPATCH_COPIES`` copies per rule
    (many ports and many any-service rules): the load would grow with their product."""
    footprints = [_footprint(r.services) for r in rules]
    anywhere = [i for i, fp in enumerate(footprints) if fp is None]
    fallback = tuple(i for i, fp in enumerate(footprints) if fp is None or fp.undispatched)
    points: dict[Protocol, set[int]] = {}
    for fp in footprints:
        for proto, first, last in fp.ranges if fp else ():
            points.setdefault(proto, set()).update((first, last + 1))
    # (protocol, first port, last port, the ranged rules covering them); any-service rules
    # are in every chain, so pieces compare on their ranged rules alone.
    pieces: list[tuple[Protocol, int, int, tuple[int, ...]]] = []
    for proto in sorted(points, key=lambda p: p.value):
        cuts = sorted(points[proto])
        covering: list[list[int]] = [[] for _ in cuts[:-1]]  # piece n = cuts[n] … cuts[n+1]-1
        for i, fp in enumerate(footprints):
            for p, first, last in fp.ranges if fp else ():
                if p is proto:
                    for n in range(bisect_left(cuts, first), bisect_left(cuts, last + 1)):
                        if not covering[n] or covering[n][-1] != i:
                            covering[n].append(i)
        for n, ranged in enumerate(covering):
            if not ranged:
                continue  # a gap: no rule names these ports, the tier chain decides
            first, last, held = cuts[n], cuts[n + 1] - 1, tuple(ranged)
            before = pieces[-1] if pieces else None
            if before and before[0] is proto and before[2] == first - 1 and before[3] == held:
                pieces[-1] = (proto, before[1], last, held)
            else:
                pieces.append((proto, first, last, held))
    chains: dict[tuple[int, ...], list[str]] = {}
    for proto, first, last, held in pieces:
        ports = str(first) if first == last else f"{first}-{last}"
        chains.setdefault(held, []).append(f"{proto.value} . {ports}")
    copies = len(fallback) + sum(len(held) + len(anywhere) for held in chains)
    if copies > MAX_DISPATCH_COPIES * len(rules) + _DISPATCH_SLACK:
        return _Plan((), tuple(range(len(rules))))
    return _Plan(
        tuple((tuple(keys), tuple(sorted({*held, *anywhere}))) for held, keys in chains.items()),
        fallback,
    )


def _tier_rules(
    program: Program, direction: TrafficDirection, tier: Tier
) -> list[tuple[Block, CompiledRule]]:
    return [
        (block, rule)
        for block in program.chains.get((direction, tier), ())
        for rule in block.rules
        if not rule.audit
    ]


def _dispatched(program: Program, direction: TrafficDirection, tier: Tier) -> int:
    """How many dispatched chains the tier chain has (``_tier_chains``)."""
    return len(_plan([r for _, r in _tier_rules(program, direction, tier)]).chains)


def _tier_chains(
    program: Program,
    layout: Layout,
    direction: TrafficDirection,
    tier: Tier,
    memo: _Memo,
    style: _Style = _FORWARD,
) -> list[tuple[str, list[str]]]:
    """(name, rules) of one tier chain's dispatched chains, in number order, then of the
    tier chain itself: the map, then the rules for packets no key covers.  The application
    tier ends each of them with the isolation drop: a packet that reaches an end matched no
    rule, while ``pass`` returned before it.  ``style``: the forward chain or its classify
    copy."""
    fams = list(style.families or sorted(layout.families))
    rules = _tier_rules(program, direction, tier)
    units = [_rule_lines(program, layout, direction, b, r, memo, style) for b, r in rules]
    drop = style.verdict(Action.DENY, direction, DECISION_ISOLATED, f'"{ISOLATED_COMMENT}"')
    iso_lines: list[str] = []
    iso = program.isolated.get(direction)
    if tier is Tier.APPLICATION and iso is not None:
        key = "saddr" if direction is TrafficDirection.EGRESS else "daddr"
        for family in fams:
            for match in _alternatives(program, iso, family, f"{_IP[family]} {key}", memo):
                iso_lines.append(f"{match} {drop}".lstrip())
    name = style.prefix + _tier_chain(direction, tier)
    plan = _plan([r for _, r in rules])
    out: list[tuple[str, list[str]]] = []
    elements: list[str] = []
    for n, (keys, held) in enumerate(plan.chains):
        sub = f"{name}_{n}"
        out.append((sub, [line for i in held for line in units[i]] + iso_lines))
        elements += [f"{key} : goto {sub}" for key in keys]
    head = [f"meta l4proto . th dport vmap {{ {', '.join(elements)} }}"] if elements else []
    out.append((name, head + [line for i in plan.fallback for line in units[i]] + iso_lines))
    return out


def _eval_lines(program: Program, d: TrafficDirection) -> list[str]:
    posture = Action.ALLOW if program.default_posture is Posture.ALLOW else Action.DENY
    return [
        _SCRATCH_CLEAR,
        *(f"jump {_tier_chain(d, tier)}" for tier in Tier),
        _verdict(posture, d, DECISION_POSTURE, f'"{POSTURE_COMMENT}"'),
    ]


def _base_lines(families: Iterable[int], steers: bool = False) -> list[str]:
    # A packet back from a service was evaluated on its way in (``_steering``); only tagwall's
    # prerouting chain writes that mark, and no mark crosses into the namespace.
    back = [f"{_STEERED_BACK} accept"] if steers else []
    return [
        "type filter hook forward priority 0; policy accept;",
        "ct state established,related accept",
        *back,
        *(f"{_IP[f]} saddr @local_{f} goto egress_eval" for f in sorted(families)),
        _ONWARD,
    ]


def _ingress_lines(families: Iterable[int]) -> list[str]:
    # Explicit accept: an egress allow reaches this chain by goto from inside egress_eval's
    # jumps, where falling off the end would return into the egress walk.
    return [*(f"{_IP[f]} daddr @local_{f} goto ingress_eval" for f in sorted(families)), "accept"]


_STEERED_BACK = (
    f"meta mark and {MARK_SCRATCH_MASK | BACK_FLAG:#010x} == {STEER_MARK | BACK_FLAG:#010x}"
)
_STEER_PRIORITY = -150  # mangle: after conntrack (-200), before the routing decision
_MSS_PRIORITY = -5  # before the forward chain, whose established accept would end it


def _steering_chains(program: Program, layout: Layout, memo: _Memo) -> list[tuple[str, list[str]]]:
    """The classify copies of the tier chains, their eval chains and the prerouting chain
    ``steer`` (the ``_steering`` docstring), in an order nft accepts (a chain before any
    rule that names it)."""
    style = _Style(layout.steering)
    out = layout.steering.chains()
    classify = []
    if layout.steering.paths:  # a host that only carries transit classifies nothing
        out.append(("c_ingress", []))  # filled last: it names c_ingress_eval
        for d in TrafficDirection:
            for tier in Tier:
                out += _tier_chains(program, layout, d, tier, memo, style)
        ingress, egress = TrafficDirection.INGRESS.value, TrafficDirection.EGRESS.value
        out.append((f"c_{ingress}_eval", [*_classify_eval(TrafficDirection.INGRESS), "accept"]))
        out.append(("c_ingress", [f"ip daddr @local_4 goto c_{ingress}_eval", "accept"]))
        out.append(
            (f"c_{egress}_eval", [*_classify_eval(TrafficDirection.EGRESS), "goto c_ingress"])
        )
        out.append(("classify", [f"ip saddr @local_4 goto c_{egress}_eval", "goto c_ingress"]))
        classify = ["ct state new jump classify"]
    out.append(
        (
            "steer",
            [
                f"type filter hook prerouting priority {_STEER_PRIORITY}; policy accept;",
                *layout.steering.lines(),
                *classify,
            ],
        )
    )
    if layout.steering.tunnel_hops:
        # Encapsulation costs 50 bytes: TCP handshakes into a tunnel offer what fits.
        out.append(
            (
                "tunnel_mss",
                [
                    f"type filter hook forward priority {_MSS_PRIORITY}; policy accept;",
                    f'oifname "{TUNNEL_PREFIX}*" tcp flags & syn == syn '
                    "tcp option maxseg size set rt mtu",
                ],
            )
        )
    return out


def _classify_eval(d: TrafficDirection) -> list[str]:
    return [_SCRATCH_CLEAR, *(f"jump c_{_tier_chain(d, tier)}" for tier in Tier)]


# -- full load -------------------------------------------------------------------------------


def _replace_table(table: str) -> list[str]:
    # nft 1.0.6 has no "destroy": declaring the table first makes the delete always valid.
    return [f"table inet {table} {{}}", f"delete table inet {table}"]


def _chain(name: str, lines: list[str]) -> list[str]:
    return [f"  chain {name} {{", *(f"    {line}" for line in lines), "  }"]


def render_load(
    program: Program, layout: Layout, counts: Mapping[str, tuple[int, int]] | None = None
) -> str:
    """One transaction that replaces table ``layout.table`` with ``program``.  ``counts``:
    (packets, bytes) of named counters to carry over (the steering's, whose members stay)."""
    _check_unique([*program.sets, *program.port_sets, *program.tag_maps])
    fams = sorted(layout.families)
    memo = _Memo(layout)
    out = [*_replace_table(layout.table), f"table inet {layout.table} {{"]
    if layout.steers:
        for name in layout.steering.counters():
            packets, nbytes = (counts or {}).get(name, (0, 0))
            out.append(f"  counter {name} {{ packets {packets} bytes {nbytes}; }}")
    for kind, name, parts in _decls(program, layout):
        out += _chain(name, parts) if kind == "chain" else [f"  {_declared((kind, name, parts))}"]
    out.append(f"  chain refuse {{ {'; '.join(_REFUSE)}; }}")
    for d in TrafficDirection:
        for tier in Tier:
            for name, lines in _tier_chains(program, layout, d, tier, memo):
                out += _chain(name, lines)  # dispatched chains first: the map names them
        out += _chain(f"{d.value}_eval", _eval_lines(program, d))
        if d is TrafficDirection.INGRESS:  # before the egress chains, whose allows name it
            out += _chain("ingress", _ingress_lines(fams))
    out += _chain("forward", _base_lines(fams, layout.steers))
    if layout.steers:
        for name, lines in _steering_chains(program, layout, memo):
            out += _chain(name, lines)
    out.append("}")
    return "\n".join(out) + "\n"


def render_health(layout: Layout, steering: Steering) -> str:
    """One transaction that turns the steering chains of ``layout`` into those of
    ``steering``, which differs from it in ``down`` only: the keep and instance chains of the
    instances with a member whose health changed are flushed and refilled (named counters and
    every other chain stay).  Empty: nothing to do."""
    if not layout.steers:
        return ""
    before = layout.steering
    changed = {m[0] for m in steering.slots if before.healthy(m) != steering.healthy(m)}
    ordered = [i for i in steering.instances() if i in changed]
    script: list[str] = []
    for name, lines in steering.instance_chains(ordered):
        script += _refill(layout.table, name, lines)
    return "\n".join(script) + "\n" if script else ""


def render_closed(table: str, workload_interfaces: str) -> str:
    """One transaction that replaces the table with one that drops every forwarded packet
    entering or leaving an interface whose name matches ``workload_interfaces`` (nft glob:
    a trailing ``*``), for the time before the first program."""
    glob = f'"{workload_interfaces}"'
    return "\n".join(
        [
            *_replace_table(table),
            f"table inet {table} {{",
            "  chain closed {",
            "    type filter hook forward priority 0; policy accept;",
            f"    iifname {glob} counter drop",
            f"    oifname {glob} counter drop",
            "  }",
            "}",
            "",
        ]
    )


def render_cleanup(table: str) -> str:
    """One transaction that removes the table, present or not."""
    return "\n".join(_replace_table(table)) + "\n"


# -- updates ---------------------------------------------------------------------------------


@dataclass
class _Script:
    """An update in the order nft needs inside one transaction: new sets, maps and lookup
    chains; element deletes, then adds; flushed and refilled chains; deleted chains, then
    deleted sets and maps (no rule names them any more)."""

    adds: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    inserts: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    drop_chains: list[str] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)

    def elements(self, table: str, nft: str, gone: list[str], came: list[str]) -> None:
        if gone:
            self.deletes.append(f"delete element inet {table} {nft} {{ {', '.join(gone)} }}")
        if came:
            self.inserts.append(f"add element inet {table} {nft} {{ {', '.join(came)} }}")

    def text(self) -> str:
        lines = [
            *self.adds,
            *self.deletes,
            *self.inserts,
            *self.chains,
            *self.drop_chains,
            *self.drops,
        ]
        return "\n".join(lines) + "\n" if lines else ""


def _address_alternative(s: AddressSet) -> bool:
    return bool(s.addresses) or not s.prefixes


def _reshaped(before: AddressSet, now: AddressSet, families: frozenset[int]) -> bool:
    """Does rule text naming the set change (see ``_alternatives``)?  O(1) unless the
    prefixes changed."""
    if _address_alternative(before) != _address_alternative(now):
        return True
    if before.prefixes == now.prefixes:
        return False
    for f in families:
        was, will = _prefix_groups(before, f), _prefix_groups(now, f)
        if (None if was is None else was.keys()) != (None if will is None else will.keys()):
            return True
    return False


def render_update(
    old: Program,
    new: Program,
    layout: Layout,
    delta: ProgramDelta | None = None,
    steering: Steering | None = None,
    counts: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[str, Layout]:
    """The smallest single transaction that turns table contents rendered from ``old`` into
    ``new``, and the layout after it (order: ``_Script``).  ``delta`` (the one that made
    ``new`` from ``old``) only says where to look, so that the work is O(change), not
    O(program); without it the programs are diffed.  Empty script: nothing to do.

    Element changes never touch a chain; a tier chain is rewritten only when its blocks
    changed or a set it names changed shape (``_reshaped``).  A change of address families,
    or of ``steering`` (the new program's; None: ``layout``'s), replaces the whole table,
    with the named counters of ``counts`` carried over (``render_load``).
    """
    if delta is None:
        delta = diff_programs(old, new)
    ids = dict(layout.tag_ids)
    _allocate(ids, _new_tuples(delta))
    decisions = _decisions_after(old, new, layout, delta)
    steering = layout.steering if steering is None else steering
    run_counts, runs = range_changes(old, new, layout.ranges, layout.families, delta)
    ranged = ranged_sets(run_counts)
    after = Layout(layout.table, layout.families, ids, decisions, steering, run_counts, ranged)
    if _families(new) != layout.families or steering != layout.steering:
        full = layout_for(new, layout.table, after, steering)
        return render_load(new, full, counts), full
    added = [
        *(n for n in delta.new_sets if n not in old.sets and n in new.sets),
        *(n for n in delta.new_port_sets if n not in old.port_sets and n in new.port_sets),
        *(n for n in delta.new_tag_maps if n not in old.tag_maps and n in new.tag_maps),
    ]
    if added:
        _check_unique([*old.sets, *old.port_sets, *old.tag_maps, *added])
    script = _Script()
    for decl in _decls(new, after, added):
        script.adds += _added(after.table, decl)
    reshaped = _set_changes(script, old, new, layout, after, delta, runs)
    _other_element_changes(script, old, new, after, delta)
    _chain_changes(script, old, new, after, delta, reshaped)
    _dropped(script, old, new, layout, delta)
    return script.text(), after


def _decisions_after(
    old: Program, new: Program, layout: Layout, delta: ProgramDelta
) -> dict[DecisionKey, int]:
    """``layout``'s decision ids with those of rules gone from ``new`` freed and new rules'
    allocated; only the chains ``delta`` replaces are looked at, unless a rule left them (it
    may have moved to another chain, so then all of ``new`` is)."""
    decisions = dict(layout.decisions)
    keys = list(delta.chains)
    came = _decision_keys([(k[0], b) for k in keys for b in new.chains.get(k, ())])
    went = _decision_keys([(k[0], b) for k in keys for b in old.chains.get(k, ())]) - came
    if went:
        went -= _decision_keys([(d, b) for (d, _), bs in new.chains.items() for b in bs])
        for key in went:
            decisions.pop(key, None)
    allocate_decisions(decisions, came)
    return decisions


def _set_changes(
    script: _Script,
    old: Program,
    new: Program,
    layout: Layout,
    after: Layout,
    delta: ProgramDelta,
    runs: RunChanges,
) -> set[str]:
    """Element commands for the address sets the delta touches (and new or dropped prefix
    sets of theirs), and the new address sets of sets now stored as runs or no longer
    (``layout`` → ``after``); returns the names of the sets whose shape changed.  The delta
    names the candidates; ``old`` and ``new`` decide, so a delta that repeats an element or
    removes an absent one still yields exact commands."""
    t, fams = layout.table, sorted(layout.families)
    reshaped: set[str] = set()
    for name, f in sorted(layout.ranged ^ after.ranged):
        if name in old.sets and name in new.sets:  # stored the other way from now on
            reshaped.add(name)
            script.adds += _added(t, _address_decl(name, new.sets[name], f, after))
            script.drops.append(f"delete set inet {t} {_address_set(name, f, layout)}")
    for name, candidates in sorted(touched_sets(old, new, delta).items()):
        before, now = old.sets[name], new.sets[name]
        if _reshaped(before, now, layout.families):
            reshaped.add(name)
        gone = [a for a in candidates if a in before.addresses and a not in now.addresses]
        came = [a for a in candidates if a in now.addresses and a not in before.addresses]
        for f in fams:
            if (name, f) in layout.ranged and (name, f) in after.ranged:
                runs_were, runs_are = runs.get((name, f), (set(), set()))
                script.elements(
                    t,
                    _address_set(name, f, after),
                    run_elements(runs_were - runs_are, f),
                    run_elements(runs_are - runs_were, f),
                )
            elif (name, f) not in layout.ranged and (name, f) not in after.ranged:
                script.elements(
                    t,
                    _address_set(name, f, after),
                    _strs(a for a in gone if a.version == f),
                    _strs(a for a in came if a.version == f),
                )
            if before.prefixes == now.prefixes:
                continue
            was, will = _prefix_sets(name, before, f), _prefix_sets(name, now, f)
            for nft in sorted(will.keys() - was.keys()):
                script.adds += _added(t, _prefix_decl(name, nft, f, will[nft]))
            for nft in sorted(was.keys() & will.keys()):
                script.elements(
                    t,
                    nft,
                    sorted(set(was[nft]) - set(will[nft])),
                    sorted(set(will[nft]) - set(was[nft])),
                )
            script.drops += [
                f"delete set inet {t} {nft}" for nft in sorted(was.keys() - will.keys())
            ]
    return reshaped


def _other_element_changes(
    script: _Script, old: Program, new: Program, layout: Layout, delta: ProgramDelta
) -> None:
    """Local addresses, port sets and tag maps."""
    t, fams = layout.table, sorted(layout.families)
    if delta.interfaces is not None:
        for f in fams:
            was, now = set(_local(old, f)), set(_local(new, f))
            script.elements(t, f"local_{f}", _strs(was - now), _strs(now - was))
    for name, (plus, minus) in sorted(delta.port_set_deltas.items()):
        if name not in old.port_sets or name not in new.port_sets:
            continue
        before, now_p = old.port_sets[name], new.port_sets[name]
        gone = [e for e in minus | plus if e in before and e not in now_p]
        came = [e for e in minus | plus if e in now_p and e not in before]
        for f in fams:
            script.elements(t, _nft("p", name, f), _port_elements(gone, f), _port_elements(came, f))
    for name, (changed, removed) in sorted(delta.tag_map_deltas.items()):
        if name in old.tag_maps and name in new.tag_maps:
            _tag_map_changes(
                script,
                layout,
                name,
                old.tag_maps[name],
                new.tag_maps[name],
                changed.keys() | removed,
            )


def _tag_map_changes(
    script: _Script,
    layout: Layout,
    name: str,
    before: Mapping[IPAddress, tuple[str, ...]],
    now: Mapping[IPAddress, tuple[str, ...]],
    candidates: Iterable[IPAddress],
) -> None:
    """A changed entry is deleted and added again in the same transaction: nft 1.0.6 has no
    element replace (and accepts this order)."""
    ids = layout.tag_ids
    for f in sorted(layout.families):
        gone: list[tuple[IPAddress, int]] = []
        came: list[tuple[IPAddress, int]] = []
        for ip in _sorted(a for a in candidates if a.version == f):
            was, will = before.get(ip), now.get(ip)
            if was == will:
                continue
            if was is not None:
                gone.append((ip, ids[was]))
            if will is not None:
                came.append((ip, ids[will]))
        script.elements(
            layout.table,
            _nft("m", name, f),
            [str(a) for a, _ in gone],
            [f"{a} : {n:#010x}" for a, n in came],
        )
        script.elements(
            layout.table,
            _nft("t", name, f),
            [f"{a} . {n:#010x}" for a, n in gone],
            [f"{a} . {n:#010x}" for a, n in came],
        )


def _names(block: Block) -> set[str]:
    names = {block.applies_to}
    for r in block.rules:
        names.update(n for n in (r.src, r.dst) if n is not None)
    return names


def _refill(table: str, chain: str, lines: list[str]) -> list[str]:
    return [
        f"flush chain inet {table} {chain}",
        *(f"add rule inet {table} {chain} {x}" for x in lines),
    ]


def _rewrite(
    script: _Script, table: str, chains: list[tuple[str, list[str]]], before: list[str]
) -> None:
    """Replace a tier chain and its dispatched chains (``chains``, the tier chain last) when
    it had the dispatched chains ``before``.  The tier chain is flushed first, which drops its
    map and with it every reference to the old dispatched chains; these are flushed, refilled
    or created, and those left over deleted with the other chains (``_Script``: after every
    chain that could name them is gone, before the sets they name)."""
    *subs, (name, lines) = chains
    script.chains.append(f"flush chain inet {table} {name}")
    script.chains += [f"flush chain inet {table} {sub}" for sub in before]
    for sub, sub_lines in subs:
        if sub not in before:
            script.chains.append(f"add chain inet {table} {sub}")
        script.chains += [f"add rule inet {table} {sub} {x}" for x in sub_lines]
    script.chains += [f"add rule inet {table} {name} {x}" for x in lines]
    kept = {sub for sub, _ in subs}
    script.drop_chains += [f"delete chain inet {table} {sub}" for sub in before if sub not in kept]


def _chain_changes(
    script: _Script,
    old: Program,
    new: Program,
    layout: Layout,
    delta: ProgramDelta,
    reshaped: set[str],
) -> None:
    """Flush and refill the tier chains whose blocks changed or name a reshaped set (the
    application tier's also when its isolation set did), and the eval chains when the
    default posture changed."""
    t = layout.table
    memo = _Memo(layout)
    keys = {k for k, blocks in delta.chains.items() if old.chains.get(k, ()) != blocks}
    if reshaped:
        keys |= {k for k, blocks in new.chains.items() if any(_names(b) & reshaped for b in blocks)}
    for d in TrafficDirection:
        iso = new.isolated.get(d)
        if old.isolated.get(d) != iso or (iso is not None and iso in reshaped):
            keys.add((d, Tier.APPLICATION))
        for tier in Tier:
            if (d, tier) in keys:
                chains = _tier_chains(new, layout, d, tier, memo)
                _rewrite(script, t, chains, _dispatched_names(old, d, tier))
                if layout.steers and layout.steering.paths:  # the classify copies exist
                    style = _Style(layout.steering)
                    chains = _tier_chains(new, layout, d, tier, memo, style)
                    _rewrite(script, t, chains, _dispatched_names(old, d, tier, style.prefix))
        if old.default_posture != new.default_posture:
            script.chains += _refill(t, f"{d.value}_eval", _eval_lines(new, d))


def _dropped(
    script: _Script, old: Program, new: Program, layout: Layout, delta: ProgramDelta
) -> None:
    """Drop what ``delta`` drops; ``layout`` is the one ``old`` was rendered with."""
    t = layout.table
    for f in sorted(layout.families):
        for n in sorted(delta.dropped_sets & old.sets.keys() - new.sets.keys()):
            names = [_address_set(n, f, layout), *_prefix_sets(n, old.sets[n], f)]
            script.drops += [f"delete set inet {t} {nft}" for nft in names]
        for n in sorted(delta.dropped_port_sets & old.port_sets.keys() - new.port_sets.keys()):
            script.drops.append(f"delete set inet {t} {_nft('p', n, f)}")
        for n in sorted(delta.dropped_tag_maps & old.tag_maps.keys() - new.tag_maps.keys()):
            script.drop_chains.append(f"delete chain inet {t} {_nft('mt', n, f)}")
            script.drops.append(f"delete map inet {t} {_nft('m', n, f)}")
            script.drops.append(f"delete set inet {t} {_nft('t', n, f)}")


def _new_tuples(delta: ProgramDelta) -> set[tuple[str, ...]]:
    out = {v for m in delta.new_tag_maps.values() for v in m.values()}
    out.update(v for changed, _ in delta.tag_map_deltas.values() for v in changed.values())
    return out


# -- counters --------------------------------------------------------------------------------


def counter_index(program: Program) -> dict[tuple[str, str], CounterKey]:
    """(chain, comment) → what the counters of nft rules with that comment count; the totals
    of one ``CounterKey`` are the sum over its chains."""
    out: dict[tuple[str, str], CounterKey] = {}
    posture = Action.ALLOW if program.default_posture is Posture.ALLOW else Action.DENY
    for d in TrafficDirection:
        for tier in Tier:
            # A rule may sit in several chains of its tier: each packet meets one of them,
            # so the sum over the chains counts it once.
            chains = [_tier_chain(d, tier), *_dispatched_names(program, d, tier)]
            for block, rule in _tier_rules(program, d, tier):
                comment = _rule_comment(block, rule)[1:-1]
                key = CounterKey(d, tier, block.policy_set, rule.policy, rule.rule, rule.action)
                out.update(((chain, comment), key) for chain in chains)
            if tier is Tier.APPLICATION:
                iso = CounterKey(d, tier, None, None, ISOLATED_COMMENT, Action.DENY)
                out.update(((chain, ISOLATED_COMMENT), iso) for chain in chains)
        out[(f"{d.value}_eval", POSTURE_COMMENT)] = CounterKey(
            d, None, None, None, POSTURE_COMMENT, posture
        )
    return out


def decision_index(
    program: Program, layout: Layout
) -> dict[tuple[TrafficDirection, int], CounterKey]:
    """(direction, decision id) → the rule (or default) it stands for, for the program
    rendered with ``layout``: what ``ct mark`` halves and NFLOG prefixes name."""
    by_comment = {
        (key.direction, comment): key for (_, comment), key in counter_index(program).items()
    }
    out = {
        (d, n): by_comment[(d, comment[1:-1])]
        for (d, comment), n in layout.decisions.items()
        if (d, comment[1:-1]) in by_comment
    }
    for d in TrafficDirection:
        out[(d, DECISION_ISOLATED)] = by_comment[(d, ISOLATED_COMMENT)]
        out[(d, DECISION_POSTURE)] = by_comment[(d, POSTURE_COMMENT)]
    return out
