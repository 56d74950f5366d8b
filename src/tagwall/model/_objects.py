"""The validated, immutable policy objects of DESIGN §2.

Validation (``_validate.py``) is the only producer of these objects; everything downstream may
assume the invariants written on them.  References between objects are resolved by validation
into ``Ref`` values naming the object actually found (a project's own object first, then a
global one), so consumers never repeat the lookup rules.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ._services import NamedPort, Service
from ._tags import Selector, Tags

__all__ = [
    "Action",
    "AddressGroup",
    "AddressGroupEndpoint",
    "AnyEndpoint",
    "ApplicationPolicySet",
    "CidrEndpoint",
    "Endpoint",
    "FirewallPolicy",
    "HealthCheck",
    "HealthCheckType",
    "Host",
    "IPAddress",
    "IPNetwork",
    "Interface",
    "InterfaceRole",
    "Mode",
    "Network",
    "NetworkEndpoint",
    "PolicyRef",
    "Posture",
    "Project",
    "Ref",
    "Rule",
    "RuleDirection",
    "ServiceFunction",
    "ServiceGroup",
    "ServiceInstance",
    "ServiceTemplate",
    "ServiceTemplateMode",
    "Settings",
    "TagType",
    "TagsEndpoint",
    "Tier",
    "TrafficDirection",
    "WhenAllDown",
    "Workload",
    "WorkloadEndpoint",
    "WorkloadKind",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    REJECT = "reject"  # deny, answered with TCP RST / ICMP unreachable
    PASS = "pass"  # hand the decision to the next tier
    REDIRECT = "redirect"  # allow, through the service chain ``Rule.via``

    @property
    def allows(self) -> bool:
        return self in (Action.ALLOW, Action.REDIRECT)


class RuleDirection(enum.Enum):
    FORWARD = ">"  # ``from`` initiates towards ``to``
    REVERSE = "<"  # ``to`` initiates towards ``from``
    BOTH = "<>"


class TrafficDirection(enum.Enum):
    """Which end of a flow evaluates: the source's egress or the destination's ingress."""

    INGRESS = "ingress"
    EGRESS = "egress"


class Tier(enum.Enum):
    """Evaluated in declaration order (DESIGN §2)."""

    ADMIN = "admin"
    APPLICATION = "application"
    BASELINE = "baseline"


class Mode(enum.Enum):
    ENFORCE = "enforce"
    AUDIT = "audit"  # evaluated and logged as would-deny / would-allow, never enforced


class Posture(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"  # zero trust


class WorkloadKind(enum.Enum):
    VM = "vm"
    CONTAINER = "container"
    BAREMETAL = "baremetal"
    EXTERNAL = "external"  # no agent: its end of a flow always allows


class InterfaceRole(enum.Enum):
    LEFT = "left"
    RIGHT = "right"


class ServiceTemplateMode(enum.Enum):
    IN_NETWORK = "in-network"
    TRANSPARENT = "transparent"


class ServiceFunction(enum.Enum):
    """What runs in a service workload; the lab starts it (docs/lab.md), elsewhere it says what
    the operator deployed.  Either one routes (in-network) or bridges (transparent)."""

    FORWARDER = "forwarder"  # kernel forwarding or bridging only, no inspection
    L7_FIREWALL = "l7-firewall"  # tagwall's reference L7 firewall (``python -m tagwall.l7fw``)


class WhenAllDown(enum.Enum):
    FAIL_OPEN = "fail-open"
    FAIL_CLOSED = "fail-closed"


class HealthCheckType(enum.Enum):
    ICMP = "icmp"
    TCP = "tcp"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Ref:
    """A resolved reference: the object ``name`` in ``project`` (None = global)."""

    name: str
    project: str | None = None

    def __str__(self) -> str:
        return f"{self.project}/{self.name}" if self.project else self.name


# ---------------------------------------------------------------------------------------------
# Tagging and grouping objects


@dataclass(frozen=True, slots=True)
class TagType:
    name: str
    values: frozenset[str] | None = None  # None: any value
    multi_valued: bool = False


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    tags: Tags = Tags()


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    project: str | None = None
    subnets: tuple[IPNetwork, ...] = ()
    tags: Tags = Tags()


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: IPAddress | None = None
    tags: Tags = Tags()


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    ips: tuple[IPAddress, ...] = ()
    network: Ref | None = None
    role: InterfaceRole | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """A VM, container, bare-metal server or external endpoint.

    Invariant: ``name`` is unique among all workloads of every project (workload names are
    identities in traces and flow records; imported pods are named ``<namespace>/<name>``), and
    every IP belongs to exactly one workload.
    """

    name: str
    project: str | None = None
    kind: WorkloadKind = WorkloadKind.VM
    host: str | None = None
    interfaces: tuple[Interface, ...] = ()
    ports: tuple[NamedPort, ...] = ()
    tags: Tags = Tags()  # the workload's own tags; see Config.effective_tags

    @property
    def ips(self) -> tuple[IPAddress, ...]:
        return tuple(ip for itf in self.interfaces for ip in itf.ips)

    @property
    def enforced(self) -> bool:
        return self.kind is not WorkloadKind.EXTERNAL


@dataclass(frozen=True, slots=True)
class AddressGroup:
    """Prefixes minus exceptions, for endpoints without an agent.

    ``labels`` tag the group's addresses for selectors (``label=partner``), except addresses
    that belong to a workload: a workload's own tags always win.
    """

    name: str
    project: str | None = None
    prefixes: tuple[IPNetwork, ...] = ()
    except_: tuple[IPNetwork, ...] = ()
    labels: frozenset[str] = frozenset()

    def contains(self, ip: IPAddress) -> bool:
        return any(ip in p for p in self.prefixes) and not any(ip in e for e in self.except_)


@dataclass(frozen=True, slots=True)
class ServiceGroup:
    name: str
    project: str | None = None
    services: tuple[Service, ...] = ()


# ---------------------------------------------------------------------------------------------
# Rule endpoints: exactly one form per ``from`` / ``to``


@dataclass(frozen=True, slots=True)
class TagsEndpoint:
    selector: Selector


@dataclass(frozen=True, slots=True)
class AddressGroupEndpoint:
    group: Ref


@dataclass(frozen=True, slots=True)
class CidrEndpoint:
    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkEndpoint:
    network: Ref


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    workload: str


@dataclass(frozen=True, slots=True)
class AnyEndpoint:
    pass


Endpoint = (
    TagsEndpoint
    | AddressGroupEndpoint
    | CidrEndpoint
    | NetworkEndpoint
    | WorkloadEndpoint
    | AnyEndpoint
)


# ---------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True, slots=True)
class Rule:
    """One firewall rule.

    Invariant: ``services`` is None for "any service"; a ``serviceGroup`` reference is
    expanded by validation into ``services`` (``service_group`` keeps the name for display).
    ``match_tags`` lists single-valued tag types (or ``project``).  ``via`` is non-empty iff
    ``action`` is REDIRECT.
    """

    name: str
    sequence: int
    from_: Endpoint
    to: Endpoint
    services: tuple[Service, ...] | None = None
    service_group: Ref | None = None
    direction: RuleDirection = RuleDirection.FORWARD
    action: Action = Action.ALLOW
    match_tags: tuple[str, ...] = ()
    log: bool = False
    via: tuple[Ref, ...] = ()


@dataclass(frozen=True, slots=True)
class FirewallPolicy:
    """Invariant: ``rules`` are sorted by (sequence, written position); names are unique."""

    name: str
    project: str | None = None
    mode: Mode = Mode.ENFORCE
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRef:
    policy: Ref
    sequence: int


@dataclass(frozen=True, slots=True)
class ApplicationPolicySet:
    """Policies applied to the workloads ``selector`` picks (None = every workload: global).

    Invariant: ``policies`` are sorted by (sequence, written position).  A project's set picks
    only that project's workloads; a global set (no project) picks from all.
    """

    name: str
    project: str | None = None
    tier: Tier = Tier.APPLICATION
    priority: int = 100
    selector: Selector | None = None
    directions: frozenset[TrafficDirection] = frozenset(TrafficDirection)
    policies: tuple[PolicyRef, ...] = ()


# ---------------------------------------------------------------------------------------------
# Service chains (objects only; steering is the data path's business)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: HealthCheckType = HealthCheckType.ICMP
    path: str = "/"
    port: int | None = None
    interval_s: float = 1.0
    timeout_s: float = 1.0
    failures: int = 3


@dataclass(frozen=True, slots=True)
class ServiceTemplate:
    name: str
    project: str | None = None
    mode: ServiceTemplateMode = ServiceTemplateMode.IN_NETWORK
    health_check: HealthCheck | None = None
    when_all_down: WhenAllDown = WhenAllDown.FAIL_CLOSED
    function: ServiceFunction = ServiceFunction.FORWARDER


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    name: str
    project: str | None = None
    template: Ref = Ref("")
    workloads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    default_posture: Posture = Posture.ALLOW
