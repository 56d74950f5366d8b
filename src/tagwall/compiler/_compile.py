"""The incremental compiler: a Config in, one Program per host out; each new Config in, deltas
for the hosts it affects out.

Stages (cilium ``resolve.go`` style):

* **resolve** — every endpoint form a rule uses becomes a global address set, named by
  ``endpoint_name``; named ports become port sets; ``matchTags`` lists become tag maps.
  Each is computed once for all hosts through the ``TagIndex``.
* **distill** — per host, the ApplicationPolicySets that pick a local workload contribute
  their ``Block`` to the chains of their tier and directions; the block's ``applies_to`` set
  holds only local addresses.  Then each chain keeps only the rules that can match at a local
  end, and each set and tag map only the members those rules can compare (``_trim.py``,
  which says why that is exact).  Set names are the same on every host; members differ.
* **diff** — ``update(new_config)`` finds the objects that changed.  Workload and
  FirewallPolicy changes take fast paths that touch only affected sets and hosts; anything
  else recompiles and diffs whole programs (rare kinds: projects, networks, groups, settings).

Modules: resolve and distill, and the compiled state they build, live in ``_distill.py``
(``Distiller``); turning that state into per-host programs and deltas, in ``_deliver.py``
(``Delivery``); this module holds ``Compiler`` itself, ``update`` and its fast paths.

State ownership: a ``Compiler`` is single-threaded; only ``update`` mutates it, and a
``Program`` returned by ``program()`` is an immutable snapshot that later updates never touch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import TypeVar

from ..model import Config, IPAddress, IPNetwork, Ref, TagsEndpoint, Workload
from ._deliver import Changes, Delivery
from ._diff import diff_programs
from ._distill import aps_ref, port_elements, tag_values
from ._index import LabelRegions
from ._program import AddressSet, Program, ProgramDelta, SetDelta

__all__ = ["Compiler", "compile_program"]


class Compiler(Delivery):
    """Compiled state of one configuration; see the module docstring."""

    # -- diff -----------------------------------------------------------------------------------

    def update(self, new: Config) -> dict[str, ProgramDelta]:
        """Move to ``new`` and return a delta for every host whose program changed."""
        old = self.config
        slow = any(
            getattr(old, kind) is not getattr(new, kind)
            and getattr(old, kind) != getattr(new, kind)
            for kind in (
                "tag_types",
                "projects",
                "networks",
                "hosts",
                "address_groups",
                "service_groups",
                "policy_sets",
                "settings",
                "service_templates",
                "service_instances",
            )
        ) or _touches_services(old, new)
        if slow:
            return self._rebuild(new)
        changed_w = _changed(old.workloads, new.workloads)
        changed_p = _changed(old.policies, new.policies)
        if changed_w and changed_p:
            return self._rebuild(new)
        self.config = new
        if changed_p:
            # No unchanged set names a created or deleted policy (validation), so only a mode
            # change reaches past the blocks: isolation may change.
            if any(
                r in old.policies
                and r in new.policies
                and old.policies[r].mode != new.policies[r].mode
                for r in changed_p
            ):
                return self._rebuild(new)
            return self._update_policies(changed_p)
        if changed_w:
            return self._update_workloads(changed_w, old)
        return {}

    def _rebuild(self, new: Config) -> dict[str, ProgramDelta]:
        before = {h: self.program(h) for h in self._hosts}
        self._build(new)
        out: dict[str, ProgramDelta] = {}
        for host in sorted(set(before) | set(self._hosts)):
            delta = diff_programs(before.get(host, Program(host)), self.program(host))
            if not delta.is_empty():
                out[host] = delta
        return out

    # -- fast paths -----------------------------------------------------------------------------

    def _update_workloads(self, changed: set[str], old: Config) -> dict[str, ProgramDelta]:
        new = self.config
        hosts: set[str] = set()
        regions_touched = False
        for name in changed:
            ow, nw = old.workloads.get(name), new.workloads.get(name)
            self._index.remove(name)
            if nw is not None:
                self._index.put(name, new.effective_tags(name))
            for w, cfg in ((ow, old), (nw, new)):
                host = cfg.host_of(w) if w is not None else None
                if host is not None:
                    hosts.add(host)
                if w is not None and any(self._regions.covers(ip) for ip in w.ips):
                    regions_touched = True
            if ow is not None and (h := old.host_of(ow)) is not None:
                self._local_of[h].discard(name)
            if nw is not None and (h := new.host_of(nw)) is not None:
                self._local_of[h].add(name)
        changes = Changes()
        for name in changed:
            self._move_workload(name, old, changes)
        if regions_touched:
            self._regions = LabelRegions(new)
            for set_name, g in self._sets.items():
                if isinstance(g.endpoint, TagsEndpoint):
                    fresh = self._regions.prefixes(g.endpoint.selector, g.workloads)
                    if fresh != g.prefixes:
                        _merge(
                            changes.sets,
                            set_name,
                            added_prefixes=fresh,
                            removed_prefixes=g.prefixes,
                        )
                        g.prefixes = fresh
        hosts &= self._known_hosts() | set(self._hosts)
        return self._deliver(hosts, changes)

    def _move_workload(self, name: str, old: Config, changes: Changes) -> None:
        """Re-test one workload against every global set, port set, tag map and policy set."""
        new = self.config
        ow, nw = old.workloads.get(name), new.workloads.get(name)
        old_ips = set(ow.ips) if ow else set()
        new_ips = set(nw.ips) if nw else set()
        changes.ips |= old_ips | new_ips
        tags = new.effective_tags(name) if nw else None
        for set_name, g in self._sets.items():
            ep = g.endpoint
            if isinstance(ep, TagsEndpoint):
                before = old_ips if name in g.workloads else set()
                now = tags is not None and ep.selector.matches(tags)
                after = new_ips if now else set()
                (g.workloads.add if now else g.workloads.discard)(name)
            elif set_name == f"wl:{name}":
                before, after = old_ips, new_ips
            elif set_name.startswith("net:"):
                before = _attached(ow, set_name)
                after = _attached(nw, set_name)
            else:
                continue
            if before != after:
                g.members -= before - after
                g.members |= after - before
                _merge(changes.sets, set_name, added=after - before, removed=before - after)
        for port_name, (service, elements) in self._port_sets.items():
            gone = port_elements(service, ow) if ow else set()
            came = port_elements(service, nw) if nw else set()
            if gone != came:
                elements -= gone
                elements |= came
                prev_add, prev_rem = changes.ports.get(port_name, (frozenset(), frozenset()))
                changes.ports[port_name] = (
                    frozenset((prev_add - gone) | came),
                    frozenset((prev_rem - came) | gone),
                )
        for map_name, (types, values) in self._tag_maps.items():
            before_v = {ip: values[ip] for ip in old_ips if ip in values}
            after_v = dict(tag_values(new, types, nw)) if nw is not None else {}
            if before_v == after_v:
                continue
            by_tuple = self._tuple_ips[map_name]
            for ip, t in before_v.items():
                del values[ip]
                by_tuple[t].discard(ip)
                if not by_tuple[t]:
                    del by_tuple[t]
            for ip, t in after_v.items():
                values[ip] = t
                by_tuple[t].add(ip)
            moves = changes.maps.setdefault(map_name, {})
            for ip in before_v.keys() | after_v.keys():
                first = moves[ip][0] if ip in moves else before_v.get(ip)
                moves[ip] = (first, after_v.get(ip))
        for ref, picked in self._picks.items():
            aps = new.policy_sets[ref]
            picks = (
                nw is not None
                and (aps.project is None or nw.project == aps.project)
                and (aps.selector is None or (tags is not None and aps.selector.matches(tags)))
            )
            (picked.add if picks else picked.discard)(name)

    def _update_policies(self, changed: set[Ref]) -> dict[str, ProgramDelta]:
        cfg = self.config
        for ref in changed:
            self._rules.pop(ref, None)
        touched = [
            aps
            for aps in cfg.policy_sets.values()
            if any(p.policy in changed for p in aps.policies)
        ]
        hosts: set[str] = set()
        self._swapped = {}
        for aps in touched:
            ref = aps_ref(aps)
            hosts |= self._aps_hosts.get(ref, set())
            before = self._blocks[ref].rules
            self._add_aps(aps)
            after = self._blocks[ref].rules
            same = len(before) == len(after)
            self._swapped[ref] = (before, tuple(map(operator.eq, before, after)) if same else None)
        return self._deliver(hosts, Changes(), block_swap=frozenset(aps_ref(a) for a in touched))


def _touches_services(old: Config, new: Config) -> bool:
    """Does the change move a service workload or a redirect rule?  The fast paths do not
    follow ``Program.services``: such a change recompiles (service chains change rarely)."""
    workloads = {n for i in new.service_instances.values() for n in i.workloads}
    workloads |= {n for i in old.service_instances.values() for n in i.workloads}
    if any(
        old.workloads.get(n) is not new.workloads.get(n)
        and old.workloads.get(n) != new.workloads.get(n)
        for n in workloads
    ):
        return True
    for cfg, other in ((old, new), (new, old)):
        for ref, policy in cfg.policies.items():
            if other.policies.get(ref) is not policy and any(r.via for r in policy.rules):
                return True
    return False


K = TypeVar("K")
V = TypeVar("V")


def _changed(old: Mapping[K, V], new: Mapping[K, V]) -> set[K]:
    """Keys whose object differs; identical objects are skipped without comparing."""
    if old is new:
        return set()
    return {
        k
        for k in old.keys() | new.keys()
        if old.get(k) is not new.get(k) and old.get(k) != new.get(k)
    }


def _merge(
    out: dict[str, SetDelta],
    name: str,
    *,
    added: Iterable[IPAddress] = (),
    removed: Iterable[IPAddress] = (),
    added_prefixes: Iterable[IPNetwork] = (),
    removed_prefixes: Iterable[IPNetwork] = (),
) -> None:
    """Fold more changes of set ``name`` into ``out`` (an address added then removed cancels)."""
    prev = out.get(name, SetDelta(name))
    add = set(prev.added.addresses) | set(added)
    rem = set(prev.removed.addresses) | set(removed)
    add, rem = add - set(removed), rem - set(added)
    out[name] = SetDelta(
        name,
        AddressSet(frozenset(add), (*prev.added.prefixes, *added_prefixes)),
        AddressSet(frozenset(rem), (*prev.removed.prefixes, *removed_prefixes)),
    )


def _attached(w: Workload | None, set_name: str) -> set[IPAddress]:
    if w is None:
        return set()
    return {
        ip
        for itf in w.interfaces
        if itf.network and f"net:{itf.network}" == set_name
        for ip in itf.ips
    }


def compile_program(config: Config, host: str) -> Program:
    """One host's program, compiled from scratch."""
    return Compiler(config).program(host)
