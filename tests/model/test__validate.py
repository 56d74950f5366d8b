"""validate: native manifests → Config, or a ValidationError naming every problem."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
import yaml

from tagwall.errors import Problem, ValidationError
from tagwall.model import (
    NATIVE_KINDS,
    Action,
    AddressGroupEndpoint,
    AnyEndpoint,
    CidrEndpoint,
    Config,
    Document,
    HealthCheckType,
    InterfaceRole,
    Mode,
    NamedPort,
    NetworkEndpoint,
    Posture,
    Protocol,
    Ref,
    RuleDirection,
    ServiceFunction,
    TagsEndpoint,
    Tier,
    TrafficDirection,
    WorkloadEndpoint,
    WorkloadKind,
    parse_documents,
    parse_selector,
    parse_service,
    validate,
)

# The shapes of DESIGN §2.1, plus the objects they name.
GOOD = """\
apiVersion: tagwall/v1
kind: TagType
metadata: {name: team}
spec: {values: [red, blue, ops]}
---
apiVersion: tagwall/v1
kind: Project
metadata: {name: shop}
spec: {tags: {application: shop}}
---
apiVersion: tagwall/v1
kind: Network
metadata: {name: front, project: shop}
spec: {subnets: [10.1.0.0/16, "2001:db8:1::/64"], tags: {site: ams}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web-1, project: shop}
spec:
  kind: vm
  host: host-1
  interfaces: [{name: eth0, ips: [10.1.0.11, "2001:db8:1::11"], network: front}]
  ports: [{name: http, port: 8080, protocol: tcp}]
  tags: {tier: web, deployment: prod, label: [pci, frontend], team: red}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw-a, project: shop}
spec:
  interfaces: [{ips: [10.9.0.1], role: left}, {ips: [10.9.1.1], role: right}]
---
apiVersion: tagwall/v1
kind: AddressGroup
metadata: {name: partners}
spec: {prefixes: [203.0.113.0/24], except: [203.0.113.7/32], labels: [partner]}
---
apiVersion: tagwall/v1
kind: AddressGroup
metadata: {name: partners, project: shop}
spec: {prefixes: [198.51.100.0/24]}
---
apiVersion: tagwall/v1
kind: ServiceGroup
metadata: {name: web}
spec: {services: [tcp/80, tcp/443]}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: three-tier}
spec:
  mode: enforce
  rules:
  - name: web-to-app
    sequence: 10
    from: {tags: "tier=web"}
    to: {tags: "tier=app"}
    services: [tcp/8080]
    direction: ">"
    action: allow
    matchTags: [application, deployment]
    log: true
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: shop-edge, project: shop}
spec:
  mode: audit
  rules:
  - {sequence: 20, from: {addressGroup: partners}, to: {network: front}, serviceGroup: web}
  - {from: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}, to: {workload: web-1}, action: deny}
  - {name: steer, sequence: 20, from: {any: true}, to: {any: true}, action: redirect,
     via: [fw-1], direction: "<>"}
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: apps}
spec:
  tier: application
  priority: 100
  selector: "application in (shop, crm)"
  directions: [ingress, egress]
  policies: [{name: three-tier, sequence: 10}]
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: shop-guard, project: shop}
spec: {tier: admin, priority: 5, all: true, directions: [egress],
       policies: [three-tier, {name: shop-edge, sequence: 1}]}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: l7-firewall}
spec:
  mode: in-network
  healthCheck: {type: http, path: /healthz, intervalS: 1, timeoutS: 0.5, failures: 3}
  whenAllDown: fail-closed
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1, project: shop}
spec:
  template: l7-firewall
  workloads: [fw-a]
---
apiVersion: tagwall/v1
kind: Settings
metadata: {name: default}
spec: {defaultPosture: deny}
"""


def load(text: str) -> Config:
    return validate(parse_documents(text, "policy.yaml"))


def problems(text: str) -> list[Problem]:
    with pytest.raises(ValidationError) as info:
        load(text)
    return list(info.value.problems)


def good() -> Config:
    return load(GOOD)


# ---------------------------------------------------------------------------------------------
# A good configuration


def test_native_kinds_are_the_kinds_of_design_2_1() -> None:
    """NATIVE_KINDS lists every kind validate accepts, and only those."""
    assert {
        "TagType",
        "Project",
        "Network",
        "Host",
        "Workload",
        "AddressGroup",
        "ServiceGroup",
        "FirewallPolicy",
        "ApplicationPolicySet",
        "ServiceTemplate",
        "ServiceInstance",
        "Settings",
    } == NATIVE_KINDS


def test_good_workload_reads_every_field() -> None:
    """A workload keeps its project, kind, host, interfaces (network resolved), ports, tags."""
    web = good().workloads["web-1"]
    assert (web.project, web.kind, web.host) == ("shop", WorkloadKind.VM, "host-1")
    (eth0,) = web.interfaces
    assert eth0.name == "eth0"
    assert eth0.network == Ref("front", "shop")
    assert eth0.ips == (ipaddress.ip_address("10.1.0.11"), ipaddress.ip_address("2001:db8:1::11"))
    assert web.ports == (NamedPort("http", 8080, Protocol.TCP),)
    assert web.tags.to_manifest() == {
        "deployment": "prod",
        "label": ["frontend", "pci"],
        "team": "red",
        "tier": "web",
    }


def test_good_effective_tags_layer_workload_over_network_over_project() -> None:
    """Effective tags add the network's site, the project's application and project=shop."""
    assert str(good().effective_tags("web-1")) == (
        "application=shop,deployment=prod,label=frontend,label=pci,project=shop,site=ams,"
        "team=red,tier=web"
    )


def test_good_interfaces_default_names_and_roles() -> None:
    """Unnamed interfaces are eth<i>; roles are read for service workloads."""
    fw = good().workloads["fw-a"]
    assert [(i.name, i.role) for i in fw.interfaces] == [
        ("eth0", InterfaceRole.LEFT),
        ("eth1", InterfaceRole.RIGHT),
    ]
    assert fw.kind is WorkloadKind.VM


def test_good_ips_index_every_workload_address() -> None:
    cfg = good()
    assert cfg.by_ip[ipaddress.ip_address("2001:db8:1::11")] == "web-1"
    assert cfg.by_ip[ipaddress.ip_address("10.9.1.1")] == "fw-a"


def test_good_tag_type_and_settings() -> None:
    cfg = good()
    assert cfg.tag_types["team"].values == frozenset({"red", "blue", "ops"})
    assert not cfg.tag_types["team"].multi_valued
    assert cfg.tag_types["label"].multi_valued
    assert cfg.settings.default_posture is Posture.DENY


def test_good_address_groups_global_and_project() -> None:
    """The same name may be global and in a project: names are unique per (kind, project)."""
    cfg = good()
    partners = cfg.address_groups[Ref("partners")]
    assert partners.prefixes == (ipaddress.ip_network("203.0.113.0/24"),)
    assert partners.except_ == (ipaddress.ip_network("203.0.113.7/32"),)
    assert partners.labels == frozenset({"partner"})
    assert Ref("partners", "shop") in cfg.address_groups


def test_good_rule_reads_every_field() -> None:
    (rule,) = good().policies[Ref("three-tier")].rules
    assert rule.name == "web-to-app"
    assert rule.sequence == 10
    assert rule.from_ == TagsEndpoint(parse_selector("tier=web"))
    assert rule.services == (parse_service("tcp/8080"),)
    assert rule.direction is RuleDirection.FORWARD
    assert rule.action is Action.ALLOW
    assert rule.match_tags == ("application", "deployment")
    assert rule.log


def test_good_rules_sorted_by_sequence_then_written_order_with_defaults() -> None:
    """Unnamed rules are rule-<position>; unsequenced ones take their position as sequence;
    equal sequences keep their written order."""
    policy = good().policies[Ref("shop-edge", "shop")]
    assert policy.mode is Mode.AUDIT
    assert [(r.name, r.sequence) for r in policy.rules] == [
        ("rule-2", 2),
        ("rule-1", 20),
        ("steer", 20),
    ]


def test_good_references_resolve_own_project_first_and_expand_service_groups() -> None:
    """A project's rule names its own 'partners' over the global one; a serviceGroup becomes
    services and is kept for display."""
    rules = {r.name: r for r in good().policies[Ref("shop-edge", "shop")].rules}
    first = rules["rule-1"]
    assert first.from_ == AddressGroupEndpoint(Ref("partners", "shop"))
    assert first.to == NetworkEndpoint(Ref("front", "shop"))
    assert first.service_group == Ref("web")
    assert first.services == (parse_service("tcp/80"), parse_service("tcp/443"))
    second = rules["rule-2"]
    assert second.from_ == CidrEndpoint(
        ipaddress.ip_network("0.0.0.0/0"), (ipaddress.ip_network("10.0.0.0/8"),)
    )
    assert second.to == WorkloadEndpoint("web-1")
    assert second.services is None
    steer = rules["steer"]
    assert (steer.action, steer.via, steer.direction) == (
        Action.REDIRECT,
        (Ref("fw-1", "shop"),),
        RuleDirection.BOTH,
    )
    assert steer.from_ == AnyEndpoint()


def test_good_policy_sets() -> None:
    """Policies resolve own-project first and sort by sequence; ``all: true`` means no
    selector; directions default to both."""
    cfg = good()
    apps = cfg.policy_sets[Ref("apps")]
    assert (apps.tier, apps.priority) == (Tier.APPLICATION, 100)
    assert apps.selector == parse_selector("application in (shop,crm)")
    assert apps.directions == frozenset(TrafficDirection)
    guard = cfg.policy_sets[Ref("shop-guard", "shop")]
    assert (guard.tier, guard.priority, guard.selector) == (Tier.ADMIN, 5, None)
    assert guard.directions == frozenset({TrafficDirection.EGRESS})
    assert [(p.policy, p.sequence) for p in guard.policies] == [
        (Ref("three-tier"), 1),
        (Ref("shop-edge", "shop"), 1),
    ]


def test_good_service_chain() -> None:
    cfg = good()
    template = cfg.service_templates[Ref("l7-firewall")]
    assert template.health_check is not None
    assert template.health_check.type is HealthCheckType.HTTP
    assert (template.health_check.path, template.health_check.timeout_s) == ("/healthz", 0.5)
    assert template.function is ServiceFunction.FORWARDER  # the default: no inspection
    instance = cfg.service_instances[Ref("fw-1", "shop")]
    assert (instance.template, instance.workloads) == (Ref("l7-firewall"), ("fw-a",))


def test_order_of_documents_does_not_matter() -> None:
    """References may point forward: the same documents reversed give the same Config."""
    docs = parse_documents(GOOD, "policy.yaml")
    assert validate(list(reversed(docs))) == validate(docs)


def test_minimal_objects_take_defaults() -> None:
    """Spec is optional where every field has a default; metadata labels are ignored."""
    cfg = load(
        textwrap.dedent("""\
        apiVersion: tagwall/v1
        kind: Workload
        metadata: {name: ns/pod-1, labels: {app: x}, annotations: {note: y}}
        ---
        apiVersion: tagwall/v1
        kind: Host
        metadata: {name: host-1}
        spec: {address: "192.0.2.1"}
        ---
        apiVersion: tagwall/v1
        kind: TagType
        metadata: {name: "example.com/role"}
        spec: {multiValued: true}
    """)
    )
    assert cfg.workloads["ns/pod-1"].interfaces == ()
    assert cfg.hosts["host-1"].address == ipaddress.ip_address("192.0.2.1")
    assert cfg.tag_types["example.com/role"].multi_valued
    assert cfg.settings.default_posture is Posture.ALLOW


# ---------------------------------------------------------------------------------------------
# One problem per bad document, appended to the good configuration

GOOD_COUNT = len(parse_documents(GOOD))


def _policy(rule: str, project: str | None = None) -> str:
    meta = f"{{name: p, project: {project}}}" if project else "{name: p}"
    return f"kind: FirewallPolicy\nmetadata: {meta}\nspec: {{rules: [{rule}]}}"


def _workload(spec: str, name: str = "w") -> str:
    return f"kind: Workload\nmetadata: {{name: {name}}}\nspec: {spec}"


ANY_TO_ANY = "from: {any: true}, to: {any: true}"

CASES = [
    pytest.param(
        _policy("{from: {addressGroup: nope}, to: {any: true}}"),
        "spec.rules[0].from.addressGroup",
        "nope",
        "no AddressGroup named 'nope'",
        id="dangling-reference",
    ),
    pytest.param(
        "kind: Project\nmetadata: {name: crm}\n---\napiVersion: tagwall/v1\n"
        + _policy("{from: {network: front}, to: {any: true}}", project="crm"),
        "spec.rules[0].from.network",
        "front",
        "Network 'front' belongs to project 'shop'; a project may use only its own or "
        "global objects",
        id="cross-project-reference",
    ),
    pytest.param(
        _policy("{from: {network: front}, to: {any: true}}"),
        "spec.rules[0].from.network",
        "front",
        "Network 'front' belongs to project 'shop'; a global object may use only global objects",
        id="global-uses-project-object",
    ),
    pytest.param(
        "kind: AddressGroup\nmetadata: {name: partners}\nspec: {prefixes: [192.0.2.0/24]}",
        "metadata.name",
        "partners",
        "duplicate AddressGroup name; first defined at policy.yaml#5",
        id="duplicate-name",
    ),
    pytest.param(
        "kind: Project\nmetadata: {name: crm}\n---\napiVersion: tagwall/v1\n"
        "kind: Workload\nmetadata: {name: web-1, project: crm}",
        "metadata.name",
        "web-1",
        "workload names are unique across all projects; first defined at policy.yaml#3 "
        "(project shop)",
        id="duplicate-workload-across-projects",
    ),
    pytest.param(
        "kind: AddressGroup\nmetadata: {name: g}\nspec: {prefixes: [10.0.0.0/33]}",
        "spec.prefixes[0]",
        "10.0.0.0/33",
        "not an IPv4 or IPv6 prefix (CIDR), e.g. 10.0.0.0/8",
        id="bad-cidr",
    ),
    pytest.param(
        "kind: AddressGroup\nmetadata: {name: g}\nspec: {prefixes: [10.1.2.3/8]}",
        "spec.prefixes[0]",
        "10.1.2.3/8",
        "has host bits set; did you mean 10.0.0.0/8",
        id="host-bits",
    ),
    pytest.param(
        _policy('{from: {cidr: "2001:db8::1/32"}, to: {any: true}}'),
        "spec.rules[0].from.cidr",
        "2001:db8::1/32",
        "has host bits set; did you mean 2001:db8::/32",
        id="host-bits-ipv6",
    ),
    pytest.param(
        "kind: AddressGroup\nmetadata: {name: g}\n"
        "spec: {prefixes: [10.0.0.0/8], except: [192.0.2.0/24]}",
        "spec.except[0]",
        "192.0.2.0/24",
        "lies outside every prefix",
        id="except-outside",
    ),
    pytest.param(
        _workload("{ports: [{name: web, port: 70000}]}"),
        "spec.ports[0].port",
        70000,
        "must be in 1-65535",
        id="port-out-of-range",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, services: [tcp/0-80]}}"),
        "spec.rules[0].services[0]",
        "tcp/0-80",
        "port 0 is outside 1-65535",
        id="service-port-out-of-range",
    ),
    pytest.param(
        _workload("{ports: [{name: web, port: 80, protocol: icmp}]}"),
        "spec.ports[0].protocol",
        "icmp",
        "not a port protocol",
        id="port-protocol",
    ),
    pytest.param(
        _workload("{tags: {colour: red}}"),
        "spec.tags.colour",
        "colour",
        "unknown tag type 'colour'; declare it with a TagType",
        id="unknown-tag-type",
    ),
    pytest.param(
        _workload("{tags: {team: green}}"),
        "spec.tags.team",
        "green",
        "not an allowed value of tag type 'team'",
        id="value-outside-tag-type",
    ),
    pytest.param(
        _workload("{tags: {tier: [web, app]}}"),
        "spec.tags.tier",
        ["web", "app"],
        "tag type 'tier' holds one value: must be a string, not a list",
        id="single-valued-list",
    ),
    pytest.param(
        _workload("{tags: {project: shop}}"),
        "spec.tags.project",
        "project",
        "'project' is a pseudo-tag taken from metadata.project; it cannot be written as a tag",
        id="project-tag-written",
    ),
    pytest.param(
        _workload("{hots: h1}"),
        "spec.hots",
        "hots",
        "unknown field",
        id="unknown-field",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, sequence: '10'}}"),
        "spec.rules[0].sequence",
        "10",
        "must be a number, not a string (write 10 without quotes)",
        id="string-sequence",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, sequence: true}}"),
        "spec.rules[0].sequence",
        True,
        "must be a number, not a boolean",
        id="bool-sequence",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, matchTags: [label]}}"),
        "spec.rules[0].matchTags[0]",
        "label",
        "tag type 'label' is many-valued; matchTags compares one value per end",
        id="match-tags-label",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, action: redirect}}"),
        "spec.rules[0].via",
        None,
        "a redirect rule needs via: the ServiceInstances to steer through",
        id="redirect-without-via",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, action: deny, via: [fw-1]}}", project="shop"),
        "spec.rules[0].via",
        ["fw-1"],
        "only a redirect rule steers through via, not deny",
        id="via-without-redirect",
    ),
    pytest.param(
        _workload("{interfaces: [{ips: [10.1.0.11]}]}", name="web-2"),
        "spec.interfaces[0].ips[0]",
        "10.1.0.11",
        "address 10.1.0.11 is already used by workload 'web-1' "
        "(policy.yaml#3 spec.interfaces[0].ips[0])",
        id="shared-ip",
    ),
    pytest.param(
        _workload("{interfaces: [{ips: [192.0.2.1]}, {ips: [192.0.2.1]}]}"),
        "spec.interfaces[1].ips[0]",
        "192.0.2.1",
        "address 192.0.2.1 is already used by this workload's spec.interfaces[0].ips[0]",
        id="ip-twice-in-one-workload",
    ),
    pytest.param(
        "kind: Workload\nmetadata: {name: w, project: shop}\n"
        "spec: {interfaces: [{ips: [10.2.0.1], network: front}]}",
        "spec.interfaces[0].ips[0]",
        "10.2.0.1",
        "not in a subnet of network 'shop/front'",
        id="ip-outside-network",
    ),
    pytest.param(
        _policy('{from: {tags: "tier in (web"}, to: {any: true}}'),
        "spec.rules[0].from.tags",
        "tier in (web",
        "expected ',' or ')' in value list at character 12",
        id="selector-syntax",
    ),
    pytest.param(
        _policy('{from: {tags: "team=green"}, to: {any: true}}'),
        "spec.rules[0].from.tags",
        "green",
        "not an allowed value of tag type 'team'",
        id="selector-value-outside-tag-type",
    ),
    pytest.param(
        _policy('{from: {tags: "colour=red"}, to: {any: true}}'),
        "spec.rules[0].from.tags",
        "colour",
        "unknown tag type 'colour'; declare it with a TagType",
        id="selector-unknown-tag-type",
    ),
    pytest.param(
        _policy("{from: {any: true, workload: web-1}, to: {any: true}}"),
        "spec.rules[0].from",
        ["workload", "any"],
        "has several endpoint forms; write one",
        id="two-endpoint-forms",
    ),
    pytest.param(
        _policy("{from: {network: front, except: [10.0.0.0/8]}, to: {any: true}}", "shop"),
        "spec.rules[0].from.except",
        ["10.0.0.0/8"],
        "except goes only with cidr",
        id="except-without-cidr",
    ),
    pytest.param(
        _policy("{from: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}, to: {any: true}}"),
        "spec.rules[0].from.except[0]",
        "11.0.0.0/16",
        "lies outside the rule's cidr 10.0.0.0/8",
        id="except-outside-cidr",
    ),
    pytest.param(
        _policy("{from: {workload: nobody}, to: {any: true}}"),
        "spec.rules[0].from.workload",
        "nobody",
        "no Workload named 'nobody'",
        id="unknown-workload",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, services: [tcp/80], serviceGroup: web}}"),
        "spec.rules[0].serviceGroup",
        "web",
        "services and serviceGroup exclude each other; write one",
        id="services-and-group",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}}}, {{{ANY_TO_ANY}, name: rule-1}}"),
        "spec.rules[1].name",
        "rule-1",
        "rule name already used by spec.rules[0]",
        id="duplicate-rule-name",
    ),
    pytest.param(
        _policy(f"{{{ANY_TO_ANY}, action: permit}}"),
        "spec.rules[0].action",
        "permit",
        "not an allowed value",
        id="bad-action",
    ),
    pytest.param(
        "kind: ApplicationPolicySet\nmetadata: {name: s}\nspec: {all: true, priority: '5'}",
        "spec.priority",
        "5",
        "must be a number, not a string (write 5 without quotes)",
        id="string-priority",
    ),
    pytest.param(
        "kind: ApplicationPolicySet\nmetadata: {name: s}\nspec: {all: true, selector: tier=web}",
        "spec.all",
        True,
        "selector and all exclude each other; write one",
        id="selector-and-all",
    ),
    pytest.param(
        "kind: ApplicationPolicySet\nmetadata: {name: s}\nspec: {policies: [three-tier]}",
        "spec.selector",
        None,
        "required: write selector: SELECTOR or all: true",
        id="set-without-selector",
    ),
    pytest.param(
        "kind: ApplicationPolicySet\nmetadata: {name: s}\nspec: {all: true, policies: [nope]}",
        "spec.policies[0]",
        "nope",
        "no FirewallPolicy named 'nope'",
        id="set-unknown-policy",
    ),
    pytest.param(
        "kind: ServiceInstance\nmetadata: {name: i}\n"
        "spec: {template: l7-firewall, workloads: [web-1]}",
        "spec.workloads[0]",
        "web-1",
        "workload 'web-1' has no interface with role left or right",
        id="service-workload-without-left",
    ),
    pytest.param(
        "kind: ServiceTemplate\nmetadata: {name: t}\nspec: {healthCheck: {intervalS: 0}}",
        "spec.healthCheck.intervalS",
        0,
        "must be greater than 0",
        id="zero-interval",
    ),
    pytest.param(
        "kind: Settings\nmetadata: {name: global}",
        "metadata.name",
        "global",
        "Settings has one object",
        id="settings-name",
    ),
    pytest.param(
        "kind: TagType\nmetadata: {name: tier}",
        "metadata.name",
        "tier",
        "a built-in tag type cannot be declared again",
        id="builtin-tag-type",
    ),
    pytest.param(
        "kind: Host\nmetadata: {name: h, project: shop}",
        "metadata.project",
        "shop",
        "a Host is global: it cannot have a project",
        id="global-only-kind",
    ),
    pytest.param(
        "kind: Network\nmetadata: {name: n, project: nowhere}",
        "metadata.project",
        "nowhere",
        "no Project named 'nowhere'",
        id="unknown-project",
    ),
    pytest.param(
        "kind: Network\nmetadata: {name: -bad}",
        "metadata.name",
        "-bad",
        "not a valid name: 1-253 letters, digits, '.', '_', '/', '-', starting and ending "
        "with a letter or digit",
        id="invalid-name",
    ),
    pytest.param(
        "kind: Pod\nmetadata: {name: p}",
        "kind",
        "Pod",
        "unknown kind",
        id="unknown-kind",
    ),
]


@pytest.mark.parametrize(("extra", "path", "value", "reason"), CASES)
def test_problem_names_source_object_path_value_and_reason(
    extra: str, path: str, value: object, reason: str
) -> None:
    """Each mistake gives exactly one Problem, on the document that holds it (the last one),
    naming its kind, name, field path, the value as written and the reason."""
    text = f"{GOOD}---\napiVersion: tagwall/v1\n{extra}\n"
    *_, last = yaml.safe_load_all(text)
    (only,) = problems(text)
    assert (only.source, only.kind, only.name) == (
        f"policy.yaml#{len(parse_documents(text)) - 1}",
        last["kind"],
        last["metadata"]["name"],
    )
    assert (only.path, only.value, only.reason) == (path, value, reason)


@pytest.mark.parametrize(
    ("extra", "path", "allowed"),
    [
        pytest.param(
            _workload("{tags: {team: green}}"),
            "spec.tags.team",
            ("blue", "ops", "red"),
            id="tag-values",
        ),
        pytest.param(
            _workload("{kind: pod}"),
            "spec.kind",
            ("vm", "container", "baremetal", "external"),
            id="enum",
        ),
        pytest.param(
            _workload("{ports: [{name: web, port: 80, protocol: icmp}]}"),
            "spec.ports[0].protocol",
            ("TCP", "UDP", "SCTP"),
            id="port-protocol",
        ),
        pytest.param(
            _policy(f"{{{ANY_TO_ANY}, matchTags: [label]}}"),
            "spec.rules[0].matchTags[0]",
            ("application", "deployment", "project", "site", "team", "tier"),
            id="match-tags",
        ),
        pytest.param(
            _policy(f"{{{ANY_TO_ANY}, services: [foo/1]}}"),
            "spec.rules[0].services[0]",
            ("tcp", "udp", "sctp", "icmp", "icmpv6"),
            id="service-protocol",
        ),
        pytest.param(
            "kind: Pod\nmetadata: {name: p}", "kind", tuple(sorted(NATIVE_KINDS)), id="kinds"
        ),
        pytest.param(
            "kind: ServiceTemplate\nmetadata: {name: t}\nspec: {function: nginx}",
            "spec.function",
            ("forwarder", "l7-firewall"),
            id="service-function",
        ),
        pytest.param(
            _workload("{interfaces: [{ips: [], mtu: 9000}]}"),
            "spec.interfaces[0].mtu",
            ("ips", "name", "network", "role"),
            id="unknown-field",
        ),
    ],
)
def test_problem_lists_what_is_allowed(extra: str, path: str, allowed: tuple[str, ...]) -> None:
    """Where a closed set exists, the Problem lists it."""
    (problem,) = problems(f"{GOOD}---\napiVersion: tagwall/v1\n{extra}\n")
    assert (problem.path, problem.allowed) == (path, allowed)


def test_other_api_version_is_a_problem_naming_tagwall_v1() -> None:
    """A document not translated from Kubernetes is rejected, with its kind named."""
    found = problems("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\n")
    assert [(p.source, p.kind, p.name, p.path, p.value, p.allowed) for p in found] == [
        ("policy.yaml#0", "Pod", "p", "apiVersion", "v1", ("tagwall/v1",)),
        ("policy.yaml#0", "Pod", "p", "kind", "Pod", tuple(sorted(NATIVE_KINDS))),
    ]


def test_problems_of_every_document_are_all_reported_in_document_order() -> None:
    """Validation never stops at the first problem: every field of every document is read."""
    text = textwrap.dedent("""\
        apiVersion: tagwall/v1
        kind: Workload
        metadata: {name: a}
        spec: {kind: pod, interfaces: [{ips: [10.0.0.1, not-an-ip]}], tags: {tier: [x]}}
        ---
        apiVersion: tagwall/v1
        kind: FirewallPolicy
        metadata: {name: p}
        spec:
          rules:
          - {from: {addressGroup: nope}, to: {cidr: 10.0.0.1/8}, sequence: "1"}
        ---
        apiVersion: tagwall/v1
        kind: Workload
        metadata: {name: b}
        spec: {interfaces: [{ips: [10.0.0.1]}]}
        ---
        apiVersion: tagwall/v1
        kind: Workload
        metadata: {name: a}
    """)
    assert [(p.source, p.path) for p in problems(text)] == [
        ("policy.yaml#0", "spec.kind"),
        ("policy.yaml#0", "spec.interfaces[0].ips[1]"),
        ("policy.yaml#0", "spec.tags.tier"),
        ("policy.yaml#1", "spec.rules[0].sequence"),
        ("policy.yaml#1", "spec.rules[0].from.addressGroup"),
        ("policy.yaml#1", "spec.rules[0].to.cidr"),
        ("policy.yaml#2", "spec.interfaces[0].ips[0]"),
        ("policy.yaml#3", "metadata.name"),
    ]


def test_a_bad_object_is_still_found_by_the_objects_that_name_it() -> None:
    """An AddressGroup with a bad prefix gives one problem; the rule naming it gives none."""
    text = textwrap.dedent("""\
        apiVersion: tagwall/v1
        kind: AddressGroup
        metadata: {name: g}
        spec: {prefixes: [10.0.0.1/8]}
        ---
        apiVersion: tagwall/v1
        kind: FirewallPolicy
        metadata: {name: p}
        spec: {rules: [{from: {addressGroup: g}, to: {any: true}}]}
    """)
    assert [(p.kind, p.path) for p in problems(text)] == [("AddressGroup", "spec.prefixes[0]")]


def test_problem_str_reads_as_one_line_per_problem() -> None:
    """The CLI prints str(ValidationError): file#index, kind/name, path, value and reason."""
    with pytest.raises(ValidationError) as info:
        load(f"{GOOD}---\napiVersion: tagwall/v1\n{_workload('{tags: {team: green}}')}\n")
    assert str(info.value) == (
        f"policy.yaml#{GOOD_COUNT} Workload/w spec.tags.team = 'green': "
        "not an allowed value of tag type 'team' (allowed: blue, ops, red)"
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"apiVersion": "tagwall/v1", "kind": "Workload"}, id="no-metadata"),
        pytest.param(
            {"apiVersion": "tagwall/v1", "kind": "Workload", "metadata": {"name": 5}},
            id="name-not-a-string",
        ),
        pytest.param(
            {
                "apiVersion": "tagwall/v1",
                "kind": "Workload",
                "metadata": {"name": "w"},
                "spec": [1],
            },
            id="spec-not-a-mapping",
        ),
        pytest.param(
            {
                "apiVersion": "tagwall/v1",
                "kind": "FirewallPolicy",
                "metadata": {"name": "p"},
                "spec": {"rules": [None, 3, {"from": None}]},
            },
            id="rules-of-wrong-types",
        ),
        pytest.param(
            {
                "apiVersion": "tagwall/v1",
                "kind": "ApplicationPolicySet",
                "metadata": {"name": "s"},
                "spec": {"all": False, "directions": [], "policies": [1.5, {}]},
            },
            id="set-of-wrong-types",
        ),
        pytest.param(
            {
                "apiVersion": "tagwall/v1",
                "kind": "Workload",
                "metadata": {"name": "w"},
                "spec": {"interfaces": "eth0", "ports": [{"port": 1.5}], "tags": []},
            },
            id="workload-of-wrong-types",
        ),
    ],
)
def test_malformed_shapes_are_problems_never_crashes(body: dict[str, object]) -> None:
    """Any JSON shape gives problems, each with a reason; validate never raises otherwise."""
    with pytest.raises(ValidationError) as info:
        validate([Document(body, "api", 0)])  # type: ignore[arg-type]  # deliberately odd
    assert info.value.problems
    assert all(p.reason and p.source == "api#0" for p in info.value.problems)
