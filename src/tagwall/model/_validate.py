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
from ._tags import PROJECT_PSEUDO_TAG, valid_tag_type
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

__all__ = ["NATIVE_KINDS", "validate"]

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


def validate(documents: list[Document]) -> Config:
    """Validate native documents as one configuration (see the module docstring)."""
    problems: list[Problem] = []
    scope = Scope()
    admitted = [a for doc in documents if (a := _admit(doc, scope, problems)) is not None]
    for entry in admitted:
        _check_project(entry.reader)
    for kind, build in _BUILD_ORDER:
        for entry in admitted:
            if entry.reader.kind == kind:
                before = len(problems)
                built = build(entry.reader, entry.spec)
                if len(problems) > before:
                    scope.broken.add((kind, Ref(entry.reader.name, entry.reader.project)))
                if entry.reader.registered:
                    _register(scope, built)
    if problems:
        order = {doc.where: i for i, doc in enumerate(documents)}
        problems.sort(key=lambda p: order.get(p.source, len(order)))  # stable within a doc
        raise ValidationError(problems)
    return Config.build(
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
