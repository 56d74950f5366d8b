"""Builders for the policy kinds: FirewallPolicy (rules and their endpoints) and
ApplicationPolicySet, plus the selector reader both use.

Like the other builders, each returns its object with stand-ins where a field had a problem;
the problem is recorded and ``validate`` raises instead of building a Config.  They run last,
so every kind a rule may name (address groups, networks, service groups, service instances,
workloads) has been declared and, where a rule copies content (a ServiceGroup's services),
built.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._manifest import Json
from ._objects import (
    Action,
    AddressGroupEndpoint,
    AnyEndpoint,
    ApplicationPolicySet,
    CidrEndpoint,
    Endpoint,
    FirewallPolicy,
    IPNetwork,
    Mode,
    NetworkEndpoint,
    PolicyRef,
    Ref,
    Rule,
    RuleDirection,
    TagsEndpoint,
    Tier,
    TrafficDirection,
    WorkloadEndpoint,
)
from ._services import Service
from ._tags import Op, Selector, SelectorSyntaxError, parse_selector
from ._validate_fields import Reader, describe, within
from ._validate_objects import read_services

__all__ = ["build_policy", "build_policy_set", "read_selector"]

_ENDPOINT_FORMS = ("tags", "addressGroup", "cidr", "network", "workload", "any")
_RULE_FIELDS = (
    "name",
    "sequence",
    "from",
    "to",
    "services",
    "serviceGroup",
    "direction",
    "action",
    "matchTags",
    "log",
    "via",
)
_SET_FIELDS = ("tier", "priority", "selector", "all", "directions", "policies")


def read_selector(r: Reader, path: str, raw: Json, *, required: bool = False) -> Selector | None:
    """A label-selector string whose types exist and whose values their TagTypes allow."""
    text = r.string(path, raw, required=required)
    if text is None:
        return None
    try:
        selector = parse_selector(text)
    except SelectorSyntaxError as exc:
        r.problem(path, text, f"{exc.reason} at character {exc.position}")
        return None
    valid = True
    for requirement in selector.requirements:
        tag_type = r.tag_type(path, requirement.key, pseudo_ok=True)
        if tag_type is None:
            valid = False
            continue
        if tag_type.values is None or requirement.op not in (Op.IN, Op.NOT_IN):
            continue
        for value in sorted(requirement.values - tag_type.values):
            valid = False
            r.problem(
                path,
                value,
                f"not an allowed value of tag type {requirement.key!r}",
                sorted(tag_type.values),
            )
    return selector if valid else None


# ---------------------------------------------------------------------------------------------
# FirewallPolicy


def build_policy(r: Reader, raw: Json) -> FirewallPolicy:
    """Rules run by ascending sequence, ties in written order (docs/semantics.md, Rules)."""
    spec = r.fields("spec", raw, ("mode", "rules")) or {}
    mode = r.choice("spec.mode", spec.get("mode"), Mode, Mode.ENFORCE)
    rules: list[Rule] = []
    names: dict[str, str] = {}
    for position, (path, item) in enumerate(r.items("spec.rules", spec.get("rules")), start=1):
        rule = _rule(r, path, item, position)
        if rule is None:
            continue
        if rule.name in names:
            r.problem(f"{path}.name", rule.name, f"rule name already used by {names[rule.name]}")
        names.setdefault(rule.name, path)
        rules.append(rule)
    rules.sort(key=lambda rule: rule.sequence)  # stable: ties keep their written order
    return FirewallPolicy(r.name, r.project, mode, tuple(rules))


def _rule(r: Reader, path: str, raw: Json, position: int) -> Rule | None:
    spec = r.element(path, raw, _RULE_FIELDS)
    if spec is None:
        return None
    name = r.object_name(f"{path}.name", spec.get("name")) or f"rule-{position}"
    action = r.choice(f"{path}.action", spec.get("action"), Action, None)
    services, group = _services(r, path, spec)
    return Rule(
        name=name,
        sequence=r.integer(f"{path}.sequence", spec.get("sequence"), position),
        from_=_endpoint(r, f"{path}.from", spec.get("from")),
        to=_endpoint(r, f"{path}.to", spec.get("to")),
        services=services,
        service_group=group,
        direction=r.choice(
            f"{path}.direction", spec.get("direction"), RuleDirection, RuleDirection.FORWARD
        ),
        action=Action.ALLOW if action is None else action,
        match_tags=_match_tags(r, f"{path}.matchTags", spec.get("matchTags")),
        log=r.boolean(f"{path}.log", spec.get("log"), default=False),
        via=_via(r, f"{path}.via", spec.get("via"), action),
    )


def _endpoint(r: Reader, path: str, raw: Json) -> Endpoint:
    """Exactly one form (docs/semantics.md, Rule endpoints); ``except`` only with ``cidr``."""
    spec = r.fields(path, raw, (*_ENDPOINT_FORMS, "except"), required=True)
    if spec is None:
        return AnyEndpoint()
    forms = [form for form in _ENDPOINT_FORMS if spec.get(form) is not None]
    if len(forms) != 1:
        reason = "has several endpoint forms; write one" if forms else "needs an endpoint form"
        r.problem(path, forms or dict(spec), reason, _ENDPOINT_FORMS)
        return AnyEndpoint()
    form = forms[0]
    value = spec[form]
    form_path = f"{path}.{form}"
    if spec.get("except") is not None and form != "cidr":
        r.problem(f"{path}.except", spec.get("except"), "except goes only with cidr")
    match form:
        case "tags":
            selector = read_selector(r, form_path, value)
            return AnyEndpoint() if selector is None else TagsEndpoint(selector)
        case "addressGroup":
            ref = r.ref(form_path, value, "AddressGroup")
            return AnyEndpoint() if ref is None else AddressGroupEndpoint(ref)
        case "network":
            ref = r.ref(form_path, value, "Network")
            return AnyEndpoint() if ref is None else NetworkEndpoint(ref)
        case "workload":
            name = r.workload(form_path, value)
            return AnyEndpoint() if name is None else WorkloadEndpoint(name)
        case "cidr":
            return _cidr_endpoint(r, path, spec)
        case _:
            if value is not True:
                r.problem(form_path, value, "must be true (leave the rule out to match nothing)")
            return AnyEndpoint()


def _cidr_endpoint(r: Reader, path: str, spec: Mapping[str, Json]) -> Endpoint:
    cidr = r.cidr(f"{path}.cidr", spec.get("cidr"))
    excepts: list[IPNetwork] = []
    for item_path, item in r.items(f"{path}.except", spec.get("except")):
        net = r.cidr(item_path, item)
        if net is not None and cidr is not None and not within(net, cidr):
            r.problem(item_path, item, f"lies outside the rule's cidr {cidr}")
        elif net is not None:
            excepts.append(net)
    return AnyEndpoint() if cidr is None else CidrEndpoint(cidr, tuple(excepts))


def _services(
    r: Reader, path: str, spec: Mapping[str, Json]
) -> tuple[tuple[Service, ...] | None, Ref | None]:
    """``services`` (omitted or empty: any → None) or ``serviceGroup``, expanded."""
    if spec.get("serviceGroup") is None:
        services = read_services(r, f"{path}.services", spec.get("services"), non_empty=False)
        return tuple(services) or None, None
    if spec.get("services") is not None:
        r.problem(
            f"{path}.serviceGroup",
            spec.get("serviceGroup"),
            "services and serviceGroup exclude each other; write one",
        )
    ref = r.ref(f"{path}.serviceGroup", spec.get("serviceGroup"), "ServiceGroup")
    group = None if ref is None else r.scope.service_groups.get(ref)
    return (None if group is None else group.services), ref


def _match_tags(r: Reader, path: str, raw: Json) -> tuple[str, ...]:
    """Only single-valued types and ``project``: both ends must carry one comparable value."""
    out: list[str] = []
    for item_path, key in r.strings(path, raw):
        tag_type = r.tag_type(item_path, key, pseudo_ok=True)
        if tag_type is None:
            continue
        if tag_type.multi_valued:
            r.problem(
                item_path,
                key,
                f"tag type {key!r} is many-valued; matchTags compares one value per end",
                r.scope.single_valued_tag_types(),
            )
        elif key in out:
            r.problem(item_path, key, "listed twice")
        else:
            out.append(key)
    return tuple(out)


def _via(r: Reader, path: str, raw: Json, action: Action | None) -> tuple[Ref, ...]:
    """Non-empty iff the action is redirect (the ``Rule`` invariant)."""
    refs = [r.ref(item_path, item, "ServiceInstance") for item_path, item in r.items(path, raw)]
    if action is Action.REDIRECT and (raw is None or raw == []):
        r.problem(path, raw, "a redirect rule needs via: the ServiceInstances to steer through")
    elif action is not None and action is not Action.REDIRECT and raw is not None:
        r.problem(path, raw, f"only a redirect rule steers through via, not {action.value}")
    return tuple(ref for ref in refs if ref is not None)


# ---------------------------------------------------------------------------------------------
# ApplicationPolicySet


def build_policy_set(r: Reader, raw: Json) -> ApplicationPolicySet:
    spec = r.fields("spec", raw, _SET_FIELDS) or {}
    return ApplicationPolicySet(
        name=r.name,
        project=r.project,
        tier=r.choice("spec.tier", spec.get("tier"), Tier, Tier.APPLICATION),
        priority=r.integer("spec.priority", spec.get("priority"), 100),
        selector=_set_selector(r, spec),
        directions=_directions(r, spec.get("directions")),
        policies=_policy_refs(r, spec.get("policies")),
    )


def _set_selector(r: Reader, spec: Mapping[str, Json]) -> Selector | None:
    """Exactly one of ``selector: SEL`` or ``all: true`` (None: every workload in scope)."""
    raw_selector, raw_all = spec.get("selector"), spec.get("all")
    if raw_selector is None and raw_all is None:
        r.problem("spec.selector", None, "required: write selector: SELECTOR or all: true")
    elif raw_selector is not None and raw_all is not None:
        r.problem("spec.all", raw_all, "selector and all exclude each other; write one")
    elif raw_all is not None and raw_all is not True:
        r.problem("spec.all", raw_all, "must be true (write a selector to pick some workloads)")
    return read_selector(r, "spec.selector", raw_selector)


def _directions(r: Reader, raw: Json) -> frozenset[TrafficDirection]:
    if raw is None:
        return frozenset(TrafficDirection)
    found = (
        r.choice(path, item, TrafficDirection, None)
        for path, item in r.items("spec.directions", raw, non_empty=True)
    )
    return frozenset(d for d in found if d is not None)


def _policy_refs(r: Reader, raw: Json) -> tuple[PolicyRef, ...]:
    """Entries are ``NAME`` or ``{name, sequence}``; ascending sequence, ties as written."""
    out: list[PolicyRef] = []
    first: dict[Ref, str] = {}
    for position, (path, item) in enumerate(r.items("spec.policies", raw), start=1):
        name: Json
        if isinstance(item, str):
            name_path, name, sequence = path, item, None
        elif isinstance(item, dict):
            fields = r.fields(path, item, ("name", "sequence")) or {}
            name_path, name, sequence = f"{path}.name", fields.get("name"), fields.get("sequence")
        else:
            r.problem(
                path, item, f"must be a policy name or {{name, sequence}}, not {describe(item)}"
            )
            continue
        ref = r.ref(name_path, name, "FirewallPolicy", required=True)
        number = r.integer(f"{path}.sequence", sequence, position)
        if ref is None:
            continue
        if ref in first:
            r.problem(name_path, ref.name, f"policy already listed at {first[ref]}")
            continue
        first[ref] = path
        out.append(PolicyRef(ref, number))
    out.sort(key=lambda entry: entry.sequence)  # stable: ties keep their written order
    return tuple(out)
