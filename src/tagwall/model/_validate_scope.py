"""``Scope``: what the whole input of one ``validate`` call declares, and what it has built.

Every document's ``Reader`` shares the one Scope, which is how a builder resolves a name
written in another document, checks an address against every workload so far, and reads the
objects of kinds built before its own.  ``validate`` owns it and is its only writer apart from
the IP claims the workload builder makes; it lives for one call and is never shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._config import BUILTIN_TAG_TYPES
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
    Workload,
)
from ._tags import PROJECT_PSEUDO_TAG

__all__ = ["Scope"]


@dataclass
class Scope:
    """What the whole input declares, and the objects built so far.

    ``validate`` fills ``declared`` from every document's metadata first, then builds the kinds
    in dependency order (tag types before anything tagged, networks before workloads, …), so a
    builder may look up any declared name and any object of an earlier kind.
    """

    # kind → name → project (None = global) → where it is defined ("file#index")
    declared: dict[str, dict[str, dict[str | None, str]]] = field(default_factory=dict)
    # (kind, ref) of objects that have problems of their own: checks that lean on their
    # content (subnets, interface roles) are skipped rather than repeat those problems.
    broken: set[tuple[str, Ref]] = field(default_factory=set)
    # address → (workload, "file#index", field path) of its first use
    ips: dict[IPAddress, tuple[str, str, str]] = field(default_factory=dict)
    tag_types: dict[str, TagType] = field(default_factory=lambda: dict(BUILTIN_TAG_TYPES))
    projects: dict[str, Project] = field(default_factory=dict)
    networks: dict[Ref, Network] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)
    address_groups: dict[Ref, AddressGroup] = field(default_factory=dict)
    service_groups: dict[Ref, ServiceGroup] = field(default_factory=dict)
    policies: dict[Ref, FirewallPolicy] = field(default_factory=dict)
    policy_sets: dict[Ref, ApplicationPolicySet] = field(default_factory=dict)
    service_templates: dict[Ref, ServiceTemplate] = field(default_factory=dict)
    service_instances: dict[Ref, ServiceInstance] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)

    def declare(self, kind: str, name: str, project: str | None, where: str) -> None:
        self.declared.setdefault(kind, {}).setdefault(name, {})[project] = where

    def where(self, kind: str, name: str) -> dict[str | None, str]:
        """Where each object ``kind``/``name`` is defined, by project (None = global)."""
        return self.declared.get(kind, {}).get(name, {})

    def single_valued_tag_types(self) -> list[str]:
        singles = (name for name, t in self.tag_types.items() if not t.multi_valued)
        return sorted([*singles, PROJECT_PSEUDO_TAG])
