"""The nftables data path: one host's ``Program`` enforced by table ``inet tagwall``.

Owns the table and nothing else: every change is one libnftables transaction that names only
this table (``_nft_render.py`` writes it, ``_nftlib.py`` runs it), so a refused change
leaves the previous program in force and other tables are never touched.  What the table
looks like and why is the ``_nft_render`` docstring.

Service chains (``_steering``) also need policy routing and, for instances on other hosts,
tunnel devices, which nftables cannot hold: the routes and tunnels of the new program are
added before its transaction (next to the old ones, which the old table still uses), the old
ones removed after it; a refused transaction puts the old routes back.  ``cleanup`` removes
both.  Service health (``set_service_health``) changes only steering chains, in one
transaction, and no route: a down member keeps its routes (its flows in flight still reach
it) but no packet is marked for them.

State: ``_program`` and ``_layout`` describe what the kernel holds; both change only after
nft accepted the transaction, under ``_lock`` (the agent calls from worker threads).
``_down`` is the last health the caller set; every program loaded later is rendered with it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any

from ..compiler import Program, ProgramDelta, apply_delta
from ..errors import DatapathError
from ..model import TrafficDirection
from ._nft_render import (
    CounterKey,
    Layout,
    chain_names,
    counter_index,
    decision_index,
    layout_for,
    render_cleanup,
    render_closed,
    render_health,
    render_load,
    render_update,
)
from ._nftlib import NftContext
from ._steering import (
    Port,
    ServiceStatus,
    Steering,
    Tunnel,
    counter_names,
    steered_paths,
    steering_for,
)

__all__ = ["NftDatapath", "cleanup"]

_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_GLOB_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}\*?$")  # an interface name, or a prefix and *


def _check_table(table: str) -> None:
    if not _TABLE_RE.match(table):
        raise ValueError(f"table name {table!r} is not a letter followed by [A-Za-z0-9_]")


class NftDatapath:
    """Enforces one host's program with nftables in network namespace ``netns`` (None: the
    caller's).  Implements ``Datapath``; ``load`` and ``update`` raise ``DatapathError`` and
    leave the previous program in force when nft refuses."""

    def __init__(self, netns: str | None = None, *, table: str = "tagwall") -> None:
        _check_table(table)
        self.netns = netns
        self.table = table
        self._ctx = NftContext(netns)
        self._lock = threading.Lock()
        self._program: Program | None = None
        self._layout: Layout | None = None
        self._down: frozenset[str] = frozenset()
        self._last_script = ""

    # -- Datapath ---------------------------------------------------------------------------

    def load(self, program: Program) -> None:
        with self._lock:
            what = f"the program of host {program.host!r}"
            steering = self._steering(program)
            try:
                layout = layout_for(program, self.table, self._layout, steering)
                script = render_load(program, layout, self._carried(steering))
            except KeyError as exc:
                raise _unknown_name(what, exc) from exc
            self._apply(script, what, steering)
            self._program, self._layout = program, layout

    def update(self, delta: ProgramDelta) -> None:
        with self._lock:
            old, layout = self._program, self._layout
            if old is None or layout is None:
                raise DatapathError(
                    f"cannot apply a delta for host {delta.host!r}: no program is loaded"
                )
            what = f"a delta for host {delta.host!r}"
            try:
                new = apply_delta(old, delta)
            except KeyError as exc:
                raise _unknown_name(what, exc) from exc
            steering = self._steering(new)
            try:
                counts = self._carried(steering) if steering != layout.steering else None
                script, after = render_update(old, new, layout, delta, steering, counts)
            except KeyError as exc:
                raise _unknown_name(what, exc) from exc
            if script:
                self._apply(script, what, steering)
            self._program, self._layout = new, after

    def program(self) -> Program | None:
        return self._program

    # -- service health ----------------------------------------------------------------------

    def set_service_health(self, down: Collection[str]) -> None:
        """Make the service workloads named in ``down`` (workload names, unique estate-wide)
        the ones that are down, and every other one up.  A down member leaves its instance's
        hash, and flows pinned to it move to a healthy member on their next packet; an
        instance with none healthy bypasses (fail-open) or drops (fail-closed) its flows, as
        its template's ``whenAllDown`` says.  Kept for programs loaded later.  One
        transaction; idempotent; raises ``DatapathError`` (the old health stays) when nft
        refuses."""
        wanted = frozenset(down)
        with self._lock:
            if wanted == self._down:
                return
            layout = self._layout
            if layout is not None and layout.steers:
                steering = layout.steering.with_down(wanted)
                if steering != layout.steering:
                    script = render_health(layout, steering)
                    if script:
                        self._ctx.run(script, operation="changing service health")
                        self._last_script = script
                    self._layout = replace(layout, steering=steering)
            self._down = wanted

    def carriers(self, labels: int) -> tuple[str, ...]:
        """The service workloads a flow with ``ct label`` ``labels`` runs through, by the
        program in force (``Steering.carriers``); () when it is not steered here."""
        with self._lock:
            return self._layout.steering.carriers(labels) if self._layout is not None else ()

    def service_status(self) -> list[ServiceStatus]:
        """Each service workload of the program in force (by instance, then as the instance
        lists them): its health and the packets and flows steered into it.  Workloads of
        instances that this host does not steer through count 0."""
        with self._lock:
            program, layout = self._program, self._layout
            if program is None or layout is None:
                return []
            counts = self._counts()
            out = []
            for s in program.services:
                slot = layout.steering.slots.get((s.instance, s.workload))
                packets, flows = counter_names(slot) if slot is not None else ("", "")
                out.append(
                    ServiceStatus(
                        str(s.instance),
                        s.workload,
                        s.workload not in self._down,
                        counts.get(packets, (0, 0))[0],
                        counts.get(flows, (0, 0))[0],
                    )
                )
            return out

    def service_ports(self) -> dict[tuple[str, str], Port]:
        """(workload, interface) → the host side of it, for every interface named by its
        alias (``interface_alias``): how the data path, and health checks, find a service's
        ports."""
        from ._routing import find_ports

        return find_ports(self.netns)

    def _carried(self, steering: Steering) -> dict[str, tuple[int, int]]:
        """The counts of the named counters whose slot keeps its member in ``steering`` (a
        slot freed and given to another member starts from 0).  Caller holds ``_lock``."""
        if self._layout is None:
            return {}
        before = {slot: m for m, slot in self._layout.steering.slots.items()}
        kept = [s for m, s in steering.slots.items() if before.get(s) == m]
        counts = self._counts()
        return {n: counts[n] for s in kept for n in counter_names(s) if n in counts}

    def _counts(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) of the steering's named counters in the kernel.  Caller holds
        ``_lock``."""
        if self._layout is None or not self._layout.steers:
            return {}
        listing = self._ctx.run(
            f"list counters table inet {self.table}", operation="listing counters", json=True
        )
        return {
            item["counter"]["name"]: (item["counter"]["packets"], item["counter"]["bytes"])
            for item in json.loads(listing).get("nftables", [])
            if "counter" in item
        }

    # -- more -------------------------------------------------------------------------------

    def load_closed(self, workload_interfaces: str) -> None:
        """Before any program: drop every forwarded packet entering or leaving an interface
        matching ``workload_interfaces`` (e.g. ``"tw-*"``).  ``program()`` stays None; a
        later ``load`` replaces this atomically."""
        if not _GLOB_RE.match(workload_interfaces):
            raise ValueError(
                f"interface pattern {workload_interfaces!r} is not an interface name "
                "(at most 15 of [A-Za-z0-9_.:-]) optionally ending in *"
            )
        with self._lock:
            self._apply(
                render_closed(self.table, workload_interfaces),
                f"closing interfaces {workload_interfaces!r}",
                Steering(),
            )
            self._program, self._layout = None, None

    def counters(self) -> list[dict[str, object]]:
        """Packets and bytes per rule of the program in force, summed over the nft rules a
        rule became: dicts with direction, tier, policy_set, policy, rule, action, packets,
        bytes.  Also one entry per direction for the isolation drop (rule
        ``application-default-deny``) and for the default posture (rule ``default-posture``,
        tier None).  In chain order: egress tiers, ingress tiers, then the two eval chains."""
        with self._lock:
            program = self._program
            if program is None:
                return []
            index = counter_index(program)
            totals: dict[CounterKey, list[int]] = {}  # a rule's nft rules in all its chains
            for chain in chain_names(program):
                listing = self._ctx.run(
                    f"list chain inet {self.table} {chain}",
                    operation=f"listing chain {chain}",
                    json=True,
                )
                for rule in _rules(listing):
                    key = (chain, rule.get("comment", ""))
                    counter = next((e["counter"] for e in rule["expr"] if "counter" in e), None)
                    if key in index and counter is not None:
                        total = totals.setdefault(index[key], [0, 0])
                        total[0] += counter["packets"]
                        total[1] += counter["bytes"]
        out: list[dict[str, object]] = []
        for k, (packets, nbytes) in totals.items():
            out.append(
                {
                    "direction": k.direction.value,
                    "tier": k.tier.value if k.tier else None,
                    "policy_set": str(k.policy_set) if k.policy_set else None,
                    "policy": str(k.policy) if k.policy else None,
                    "rule": k.rule,
                    "action": k.action.value,
                    "packets": packets,
                    "bytes": nbytes,
                }
            )
        return out

    def decisions(self) -> dict[tuple[TrafficDirection, int], CounterKey]:
        """(direction, decision id) → the rule or default it names, for the program in force:
        how to read the ``ct mark`` of a conntrack entry and the prefix of an NFLOG packet
        (``_nft_decisions``).  Empty before a program is loaded."""
        with self._lock:
            if self._program is None or self._layout is None:
                return {}
            return decision_index(self._program, self._layout)

    def read_ruleset_text(self) -> str:
        """The table as ``nft list table`` prints it (for debugging)."""
        with self._lock:
            return self._ctx.run(f"list table inet {self.table}", operation="listing the table")

    @property
    def last_script(self) -> str:
        """The script of the last transaction nft accepted (for debugging and tests)."""
        return self._last_script

    def close(self) -> None:
        """Free the nft context.  The table stays: enforcement outlives the process
        (fail-static); ``cleanup`` removes it."""
        with self._lock:
            self._ctx.close()

    def _steering(self, program: Program) -> Steering:
        """The steering of ``program`` with this host's service ports (found only when it
        has steered paths).  Caller holds ``_lock``."""
        previous = self._layout.steering if self._layout is not None else None
        if not steered_paths(program) and not (program.peers and program.services):
            return Steering()
        from ._routing import find_ports

        return steering_for(program, find_ports(self.netns), previous, self._down)

    def _apply(self, script: str, what: str, steering: Steering) -> None:
        """Run ``script`` with the routes of ``steering`` in place (the module docstring).
        Caller holds ``_lock``."""
        old = self._layout.steering if self._layout is not None else Steering()
        routed = steering.active or old.active
        if routed:
            from ._routing import sync

            kept = {h.id: h for h in old.hops()}
            tunnels = {t.device: t for t in old.tunnels()} | {
                t.device: t for t in steering.tunnels()
            }
            sync(
                self.netns,
                {**kept, **{h.id: h for h in steering.hops()}}.values(),
                _merged(tunnels.values(), old.tunnels()),
            )
        try:
            self._ctx.run(script, operation=what)
        except BaseException:
            if routed:
                sync(self.netns, old.hops(), old.tunnels())
            raise
        if routed:
            sync(self.netns, steering.hops(), steering.tunnels())
        self._last_script = script


def _merged(tunnels: Iterable[Tunnel], old: Iterable[Tunnel]) -> list[Tunnel]:
    """``tunnels`` each with the peers of its device in ``old`` too: while a change is
    applied, both programs' routes may use them."""
    before = {t.device: t for t in old}
    return [
        replace(t, peers=tuple(sorted({*t.peers, *before[t.device].peers})))
        if t.device in before and before[t.device].vni == t.vni and before[t.device].mac == t.mac
        else t
        for t in tunnels
    ]


def _unknown_name(what: str, exc: KeyError) -> DatapathError:
    return DatapathError(
        f"{what} names {exc.args[0]!r}, which the program does not hold (a set, port set or "
        "tag map missing: Program's invariant broken)"
    )


def _rules(listing: str) -> list[dict[str, Any]]:
    """The rule objects of an ``nft -j list chain`` answer."""
    doc = json.loads(listing)
    return [item["rule"] for item in doc.get("nftables", []) if "rule" in item]


def cleanup(netns: str | None = None, table: str = "tagwall") -> None:
    """Remove the tagwall table from ``netns`` (None: the caller's namespace), and the policy
    routing and tunnels of its service chains; no error when there is none."""
    from ._routing import sync

    _check_table(table)
    ctx = NftContext(netns)
    try:
        ctx.run(render_cleanup(table), operation=f"removing table inet {table}")
    finally:
        ctx.close()
    sync(netns, ())
