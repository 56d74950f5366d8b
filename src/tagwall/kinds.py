"""Every kind tagwall stores, and its URL name: ``/api/v1/{plural}`` ↔ ``kind``
(docs/api-contract.md).  Shared by the API and the CLI, so it imports nothing.

Native kinds and the Kubernetes kinds that ``tagwall.model.translate`` imports are stored as
written, so both have routes.  Plurals are the lower-cased kind plus ``s`` (``policy`` →
``policies``) except ``settings``, which is already plural.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["KIND_OF_PLURAL", "NAMESPACED_KUBERNETES_KINDS", "PLURAL_OF_KIND", "known_kinds"]

# Invariant: a bijection; ``PLURAL_OF_KIND`` is its inverse.  Order is the OpenAPI tag order.
KIND_OF_PLURAL: Mapping[str, str] = {
    "tagtypes": "TagType",
    "projects": "Project",
    "networks": "Network",
    "hosts": "Host",
    "workloads": "Workload",
    "addressgroups": "AddressGroup",
    "servicegroups": "ServiceGroup",
    "firewallpolicies": "FirewallPolicy",
    "applicationpolicysets": "ApplicationPolicySet",
    "servicetemplates": "ServiceTemplate",
    "serviceinstances": "ServiceInstance",
    "settings": "Settings",
    "namespaces": "Namespace",
    "pods": "Pod",
    "networkpolicies": "NetworkPolicy",
    "adminnetworkpolicies": "AdminNetworkPolicy",
    "baselineadminnetworkpolicies": "BaselineAdminNetworkPolicy",
    "clusternetworkpolicies": "ClusterNetworkPolicy",
}

PLURAL_OF_KIND: Mapping[str, str] = {kind: plural for plural, kind in KIND_OF_PLURAL.items()}


def known_kinds() -> tuple[str, ...]:
    """Every kind the API stores, sorted (the ``allowed`` list of a bad ``kind``)."""
    return tuple(sorted(PLURAL_OF_KIND))


# Kubernetes kinds stored per namespace; ``metadata.namespace`` absent means "default" (as
# ``tagwall.store.key_of`` and kubectl do).  Other Kubernetes kinds are cluster-scoped.
NAMESPACED_KUBERNETES_KINDS = frozenset({"Pod", "NetworkPolicy"})
