"""``validate``: native manifests → one ``Config``, or a ``ValidationError`` listing every problem.

It runs in three steps, so that a problem never hides another and document order never matters:

1. **Admit** each document: apiVersion ``tagwall/v1``, a native kind, top-level and metadata
   fields, a valid name, a project only on kinds that may have one.  Admitted names are
   declared in the ``Scope``; a name taken twice is a problem on the second document, naming
   the first.  Names are unique per (kind, project), except workloads: their names are
   identities, unique across every project.
2. **Build** every admitted document's spec, kind by kind in dependency order (``_BUILD_ORDER``):
   tag types before anything tagged, networks before workloads, workloads before service
   instances, service groups before the rules that expand them.  References resolve against
   the declared names (own project first, then global), so an object that has a problem of
   its own is still found by the objects that name it.
3. **Decide**: any problem → ``ValidationError`` with all of them in document order;
   otherwise ``Config.build`` with the objects.

Nothing here reads global configuration or does I/O; the builders live in
``_validate_objects`` and ``_validate_policy``, the field readers in ``_validate_fields``
and the shared table of declared names in ``_validate_scope``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Problem, ValidationError
from ._config import BUILTIN_TAG_TYPES, Config
from ._manifest import Document, Json
from ._objects import (
    AddressGroup,
    ApplicationPolicySet,
    FirewallPolicy,
    Host,
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
from ._tags import PROJECT_PSEUDO_TAG, Tags, valid_tag_type
from ._validate_fields import Reader, valid_name
from ._validate_objects import (
    build_address_group,
    build_host,
    build_network,
    build_project,
    build_service_group,
    build_service_instance,
    build_service_template,
    build_settings,
    build_tag_type,
    build_workload,
)
from ._validate_policy import build_policy, build_policy_set
from ._validate_scope import Scope

__all__ = ["NATIVE_KINDS", "WorkloadMemo", "validate"]

API_VERSION = "tagwall/v1"

Built = (
    TagType
    | Settings
    | Project
    | Network
    | Host
    | Workload
    | AddressGroup
    | ServiceGroup
    | ServiceTemplate
    | ServiceInstance
    | FirewallPolicy
    | ApplicationPolicySet
)

# Dependency order: each kind's builder may use the built objects of the kinds before it.
_BUILD_ORDER: tuple[tuple[str, Callable[[Reader, Json], Built]], ...] = (
    ("TagType", build_tag_type),
    ("Settings", build_settings),
    ("Project", build_project),
    ("Network", build_network),
    ("Host", build_host),
    ("Workload", build_workload),
    ("AddressGroup", build_address_group),
    ("ServiceGroup", build_service_group),
    ("ServiceTemplate", build_service_template),
    ("ServiceInstance", build_service_instance),
    ("FirewallPolicy", build_policy),
    ("ApplicationPolicySet", build_policy_set),
)

NATIVE_KINDS: frozenset[str] = frozenset(kind for kind, _ in _BUILD_ORDER)

_TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_METADATA_FIELDS = ("name", "project", "labels", "annotations")  # labels, annotations: ignored
_GLOBAL_ONLY = frozenset({"TagType", "Project", "Host", "Settings"})


@dataclass
class _Admitted:
    reader: Reader
    spec: Json


class WorkloadMemo:
    """Workloads built by earlier validations, reused by the next one when their spec and
    everything a workload's build reads (tag types, networks, broken objects) are unchanged.

    Why: a controller validates the whole would-be configuration on every write, and
    building workloads and their effective tags is most of that cost (10 of 12 parts at 1,000
    workloads); with the memo a write that changes one workload builds one and computes its
    tags.  Reuse is exact: the cross-object checks a
    build makes (each IP used once) are replayed, and anything unusual (a problem, a clash)
    takes the full path.  Not thread-safe: one validation at a time per memo.
    """

    def __init__(self) -> None:
        self._context: object = None
        self._built: dict[tuple[str | None, str], tuple[str, Workload]] = {}
        # Effective tags of the last Config, by workload name; valid while the context
        # (which includes projects and networks) holds.
        self.effective: dict[str, tuple[Workload, Tags]] = {}

    def build(
        self, entry: _Admitted, problems: list[Problem], seen: set[tuple[str | None, str]]
    ) -> Workload:
        r = entry.reader
        key = (r.project, r.name)
        seen.add(key)
        text = json.dumps(entry.spec, sort_keys=True, separators=(",", ":"))
        hit = self._built.get(key)
        if hit is not None and hit[0] == text and r.registered and _claim_again(r, hit[1]):
            return hit[1]
        before = len(problems)
        workload = build_workload(r, entry.spec)
        if len(problems) == before and r.registered:
            self._built[key] = (text, workload)
        else:
            self._built.pop(key, None)
        return workload

    def enter(self, scope: Scope) -> None:
        """Start a validation whose workloads see ``scope``; forget builds made under another."""
        context = (
            dict(scope.tag_types),
            dict(scope.projects),
            dict(scope.networks),
            frozenset(scope.broken),
        )
        if context != self._context:
            self._context, self._built, self.effective = context, {}, {}

    def keep_only(self, seen: set[tuple[str | None, str]]) -> None:
        for key in self._built.keys() - seen:
            del self._built[key]


def _claim_again(r: Reader, workload: Workload) -> bool:
    """Claim a reused workload's IPs as its build did; False (nothing claimed) on a clash."""
    ips = [
        (f"spec.interfaces[{i}].ips[{j}]", ip)
        for i, interface in enumerate(workload.interfaces)
        for j, ip in enumerate(interface.ips)
    ]
    if any(ip in r.scope.ips for _, ip in ips):
        return False
    for path, ip in ips:
        r.scope.ips[ip] = (r.name, r.source, path)
    return True


def validate(documents: list[Document], memo: WorkloadMemo | None = None) -> Config:
    """Validate native documents as one configuration (see the module docstring).

    ``memo`` carries workloads built by an earlier call over to this one (``WorkloadMemo``).
    """
    problems: list[Problem] = []
    scope = Scope()
    admitted = [a for doc in documents if (a := _admit(doc, scope, problems)) is not None]
    for entry in admitted:
        _check_project(entry.reader)
    seen: set[tuple[str | None, str]] = set()
    for kind, build in _BUILD_ORDER:
        if kind == "Workload" and memo is not None:
            memo.enter(scope)
        for entry in admitted:
            if entry.reader.kind == kind:
                before = len(problems)
                if kind == "Workload" and memo is not None:
                    built: Built = memo.build(entry, problems, seen)
                else:
                    built = build(entry.reader, entry.spec)
                if len(problems) > before:
                    scope.broken.add((kind, Ref(entry.reader.name, entry.reader.project)))
                if entry.reader.registered:
                    _register(scope, built)
    if memo is not None:
        memo.keep_only(seen)
    if problems:
        order = {doc.where: i for i, doc in enumerate(documents)}
        problems.sort(key=lambda p: order.get(p.source, len(order)))  # stable within a doc
        raise ValidationError(problems)
    config = Config.build(
        memo.effective if memo is not None else None,
        tag_types=scope.tag_types,
        projects=scope.projects,
        networks=scope.networks,
        hosts=scope.hosts,
        workloads=scope.workloads,
        address_groups=scope.address_groups,
        service_groups=scope.service_groups,
        policies=scope.policies,
        policy_sets=scope.policy_sets,
        service_templates=scope.service_templates,
        service_instances=scope.service_instances,
        settings=scope.settings,
    )
    if memo is not None:
        memo.effective = {name: (w, config.effective[name]) for name, w in config.workloads.items()}
    return config


def _admit(doc: Document, scope: Scope, problems: list[Problem]) -> _Admitted | None:
    """Check the envelope and declare the name; None when the spec cannot be read at all."""
    r = Reader(scope, problems, doc.where, doc.kind, doc.name)
    body = doc.body
    for key in body:
        if key not in _TOP_FIELDS:
            r.problem(key, key, "unknown field", _TOP_FIELDS)
    known = True
    if body.get("apiVersion") != API_VERSION:
        r.problem(
            "apiVersion",
            body.get("apiVersion"),
            "not a tagwall manifest (Kubernetes kinds are translated before validation)",
            (API_VERSION,),
        )
        known = False
    if body.get("kind") not in NATIVE_KINDS:
        r.problem("kind", body.get("kind"), "unknown kind", sorted(NATIVE_KINDS))
        known = False
    if not known:
        return None  # its other fields mean nothing to tagwall: no more problems to report
    metadata = r.fields("metadata", body.get("metadata"), _METADATA_FIELDS, required=True) or {}
    name = r.string("metadata.name", metadata.get("name"), required=True)
    project = r.string("metadata.project", metadata.get("project"))
    if project is not None and r.kind in _GLOBAL_ONLY:
        r.problem("metadata.project", project, f"a {r.kind} is global: it cannot have a project")
        project = None
    r.project = project
    r.registered = name is not None and _name_ok(r, name) and _declare(r, name)
    return _Admitted(r, body.get("spec"))


def _name_ok(r: Reader, name: str) -> bool:
    match r.kind:
        case "TagType" if name in BUILTIN_TAG_TYPES or name == PROJECT_PSEUDO_TAG:
            r.problem("metadata.name", name, "a built-in tag type cannot be declared again")
        case "TagType" if not valid_tag_type(name):
            r.problem("metadata.name", name, "not a valid tag type name")
        case "TagType":
            return True
        case "Settings" if name != "default":
            r.problem("metadata.name", name, "Settings has one object", ("default",))
        case _ if not valid_name(name):
            r.object_name("metadata.name", name)  # records why
        case _:
            return True
    return False


def _declare(r: Reader, name: str) -> bool:
    """Declare ``name``; False (and a problem naming the first) when it is taken."""
    found = r.scope.where(r.kind, name)
    if r.kind == "Workload" and found:
        first_project, first = next(iter(found.items()))
        owner = f" (project {first_project})" if first_project else ""
        reason = f"workload names are unique across all projects; first defined at {first}{owner}"
    elif r.project in found:
        reason = f"duplicate {r.kind} name; first defined at {found[r.project]}"
    else:
        r.scope.declare(r.kind, name, r.project, r.source)
        return True
    r.problem("metadata.name", name, reason)
    return False


def _check_project(r: Reader) -> None:
    if r.project is not None and not r.scope.where("Project", r.project):
        projects = sorted(r.scope.declared.get("Project", {}))
        r.problem("metadata.project", r.project, f"no Project named {r.project!r}", projects)


def _register(scope: Scope, built: Built) -> None:
    match built:
        case TagType():
            scope.tag_types[built.name] = built
        case Settings():
            scope.settings = built
        case Project():
            scope.projects[built.name] = built
        case Host():
            scope.hosts[built.name] = built
        case Workload():
            scope.workloads[built.name] = built
        case Network():
            scope.networks[Ref(built.name, built.project)] = built
        case AddressGroup():
            scope.address_groups[Ref(built.name, built.project)] = built
        case ServiceGroup():
            scope.service_groups[Ref(built.name, built.project)] = built
        case ServiceTemplate():
            scope.service_templates[Ref(built.name, built.project)] = built
        case ServiceInstance():
            scope.service_instances[Ref(built.name, built.project)] = built
        case FirewallPolicy():
            scope.policies[Ref(built.name, built.project)] = built
        case ApplicationPolicySet():
            scope.policy_sets[Ref(built.name, built.project)] = built
