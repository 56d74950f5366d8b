"""The policy model: manifests → immutable, validated objects (DESIGN §2); Kubernetes import.

Owns: tag and selector syntax, services, every object kind, validation with complete error
reports, and the translation of Kubernetes manifests into native ones.

Pure: imports no asyncio, subprocess, socket, sqlite3, duckdb or fastapi, and reads no global
configuration.  Everything else in tagwall imports from here, never the reverse.

Pipeline: ``parse_documents`` (text → raw documents) → ``translate`` (Kubernetes kinds →
native ones, other documents unchanged) → ``validate`` (documents → ``Config`` or a
``ValidationError`` listing every problem).  ``load`` runs the last two.
"""

from ._config import BUILTIN_TAG_TYPES, Config
from ._kubernetes import KUBERNETES_KINDS, translate
from ._manifest import Document, Json, parse_documents
from ._objects import (
    Action,
    AddressGroup,
    AddressGroupEndpoint,
    AnyEndpoint,
    ApplicationPolicySet,
    CidrEndpoint,
    Endpoint,
    FirewallPolicy,
    HealthCheck,
    HealthCheckType,
    Host,
    Interface,
    InterfaceRole,
    IPAddress,
    IPNetwork,
    Mode,
    Network,
    NetworkEndpoint,
    PolicyRef,
    Posture,
    Project,
    Ref,
    Rule,
    RuleDirection,
    ServiceFunction,
    ServiceGroup,
    ServiceInstance,
    ServiceTemplate,
    ServiceTemplateMode,
    Settings,
    TagsEndpoint,
    TagType,
    Tier,
    TrafficDirection,
    WhenAllDown,
    Workload,
    WorkloadEndpoint,
    WorkloadKind,
)
from ._services import (
    FlowService,
    NamedPort,
    Protocol,
    Service,
    ServiceSyntaxError,
    parse_flow_service,
    parse_service,
)
from ._tags import (
    PROJECT_PSEUDO_TAG,
    Op,
    Requirement,
    Selector,
    SelectorSyntaxError,
    Tags,
    parse_selector,
)
from ._validate import NATIVE_KINDS, WorkloadMemo, validate


def load(documents: list[Document], memo: WorkloadMemo | None = None) -> Config:
    """Translate Kubernetes documents, then validate everything as one configuration
    (``memo``: reuse workloads an earlier ``load`` built; see ``WorkloadMemo``)."""
    return validate(translate(documents), memo)


__all__ = [
    "BUILTIN_TAG_TYPES",
    "KUBERNETES_KINDS",
    "NATIVE_KINDS",
    "PROJECT_PSEUDO_TAG",
    "Action",
    "AddressGroup",
    "AddressGroupEndpoint",
    "AnyEndpoint",
    "ApplicationPolicySet",
    "CidrEndpoint",
    "Config",
    "Document",
    "Endpoint",
    "FirewallPolicy",
    "FlowService",
    "HealthCheck",
    "HealthCheckType",
    "Host",
    "IPAddress",
    "IPNetwork",
    "Interface",
    "InterfaceRole",
    "Json",
    "Mode",
    "NamedPort",
    "Network",
    "NetworkEndpoint",
    "Op",
    "PolicyRef",
    "Posture",
    "Project",
    "Protocol",
    "Ref",
    "Requirement",
    "Rule",
    "RuleDirection",
    "Selector",
    "SelectorSyntaxError",
    "Service",
    "ServiceFunction",
    "ServiceGroup",
    "ServiceInstance",
    "ServiceSyntaxError",
    "ServiceTemplate",
    "ServiceTemplateMode",
    "Settings",
    "TagType",
    "Tags",
    "TagsEndpoint",
    "Tier",
    "TrafficDirection",
    "WhenAllDown",
    "Workload",
    "WorkloadEndpoint",
    "WorkloadKind",
    "WorkloadMemo",
    "load",
    "parse_documents",
    "parse_flow_service",
    "parse_selector",
    "parse_service",
    "translate",
    "validate",
]
