"""``Config``: one validated snapshot of every object, with the lookups semantics need.

A Config is immutable and self-consistent: every reference in it resolves, every IP belongs to
at most one workload, every tag type is declared.  Only ``validate`` builds one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ._objects import (
    AddressGroup,
    ApplicationPolicySet,
    FirewallPolicy,
    Host,
    IPAddress,
    Network,
    Project,
    Ref,
    ServiceGroup,
    ServiceInstance,
    ServiceTemplate,
    Settings,
    TagType,
    Tier,
    Workload,
)
from ._tags import BUILTIN_MULTI_TYPES, BUILTIN_SINGLE_TYPES, PROJECT_PSEUDO_TAG, Tags

__all__ = ["BUILTIN_TAG_TYPES", "Config"]

BUILTIN_TAG_TYPES: Mapping[str, TagType] = {
    **{name: TagType(name) for name in BUILTIN_SINGLE_TYPES},
    **{name: TagType(name, multi_valued=True) for name in BUILTIN_MULTI_TYPES},
}


@dataclass(frozen=True)
class Config:
    """Every object of one configuration revision.

    Invariant: ``tag_types`` includes the built-in types; ``effective`` holds the effective
    tags of every workload (see ``effective_tags``); ``by_ip`` maps every workload IP to its
    workload's name.
    """

    tag_types: Mapping[str, TagType] = field(default_factory=lambda: dict(BUILTIN_TAG_TYPES))
    projects: Mapping[str, Project] = field(default_factory=dict)
    networks: Mapping[Ref, Network] = field(default_factory=dict)
    hosts: Mapping[str, Host] = field(default_factory=dict)
    workloads: Mapping[str, Workload] = field(default_factory=dict)
    address_groups: Mapping[Ref, AddressGroup] = field(default_factory=dict)
    service_groups: Mapping[Ref, ServiceGroup] = field(default_factory=dict)
    policies: Mapping[Ref, FirewallPolicy] = field(default_factory=dict)
    policy_sets: Mapping[Ref, ApplicationPolicySet] = field(default_factory=dict)
    service_templates: Mapping[Ref, ServiceTemplate] = field(default_factory=dict)
    service_instances: Mapping[Ref, ServiceInstance] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    effective: Mapping[str, Tags] = field(default_factory=dict)
    by_ip: Mapping[IPAddress, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, known: Mapping[str, tuple[Workload, Tags]] | None = None, **objects: object
    ) -> Config:
        """Build a Config and its derived indexes from already validated objects.

        ``known``: effective tags computed before, by workload name, with the workload they
        were computed for; reused for that very workload object.  The caller guarantees that
        projects and networks are what they were then.
        """
        cfg = cls(**objects)  # type: ignore[arg-type]  # keyword names are the fields above
        known = known or {}
        effective = {}
        for w in cfg.workloads.values():
            hit = known.get(w.name)
            effective[w.name] = (
                hit[1] if hit is not None and hit[0] is w else cfg._compute_effective(w)
            )
        by_ip = {ip: w.name for w in cfg.workloads.values() for ip in w.ips}
        object.__setattr__(cfg, "effective", effective)
        object.__setattr__(cfg, "by_ip", by_ip)
        return cfg

    # -- tags ---------------------------------------------------------------------------------

    def _compute_effective(self, w: Workload) -> Tags:
        tags = Tags()
        if w.project is not None and w.project in self.projects:
            tags = tags.overlay(self.projects[w.project].tags)
        # Networks in reverse interface order, so the first interface's network wins.
        for itf in reversed(w.interfaces):
            if itf.network is not None and itf.network in self.networks:
                tags = tags.overlay(self.networks[itf.network].tags)
        tags = tags.overlay(w.tags)
        if w.project is not None:
            tags = tags.overlay(Tags.of({PROJECT_PSEUDO_TAG: [w.project]}))
        return tags

    def effective_tags(self, workload: str) -> Tags:
        """Workload over network over project, per type, plus ``project=<project>``."""
        return self.effective[workload]

    def address_tags(self, ip: IPAddress) -> Tags | None:
        """Tags of a bare address: the labels of every labelled AddressGroup holding it.

        None when no labelled group holds it: such an address matches no tag selector.
        Addresses of workloads are not bare; use ``effective_tags``.
        """
        labels: set[str] = set()
        found = False
        for group in self.address_groups.values():
            if group.labels and group.contains(ip):
                found = True
                labels |= group.labels
        if not found:
            return None
        return Tags.of({"label": labels})

    def workload_at(self, ip: IPAddress) -> Workload | None:
        name = self.by_ip.get(ip)
        return None if name is None else self.workloads[name]

    # -- hosts and policy sets ----------------------------------------------------------------

    @staticmethod
    def host_of(workload: Workload) -> str | None:
        """The host that enforces ``workload``: its ``host``, else one host per project
        (named after the project; ``global`` for global workloads).  None for external
        workloads, which no agent enforces."""
        if not workload.enforced:
            return None
        return workload.host or workload.project or "global"

    def host_names(self) -> list[str]:
        """Declared hosts plus every host that enforces a workload, sorted."""
        names = set(self.hosts)
        for w in self.workloads.values():
            host = self.host_of(w)
            if host is not None:
                names.add(host)
        return sorted(names)

    def policy_sets_of(self, tier: Tier) -> list[ApplicationPolicySet]:
        """The tier's sets in evaluation order: priority ascending, then project/name."""
        return sorted(
            (s for s in self.policy_sets.values() if s.tier is tier),
            key=lambda s: (s.priority, s.project or "", s.name),
        )

    def picks(self, aps: ApplicationPolicySet, workload: Workload) -> bool:
        """Does ``aps`` apply to ``workload``?  A project's set picks only its own workloads."""
        if aps.project is not None and workload.project != aps.project:
            return False
        return aps.selector is None or aps.selector.matches(self.effective[workload.name])

    def iter_policies(self, aps: ApplicationPolicySet) -> Iterator[FirewallPolicy]:
        for ref in aps.policies:
            yield self.policies[ref.policy]

    @staticmethod
    def parse_ip(text: str) -> IPAddress | None:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None
