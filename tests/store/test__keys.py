"""key_of: where native and Kubernetes manifests are stored (project, namespace, global)."""

from __future__ import annotations

import pytest

from tagwall import model
from tagwall.errors import ValidationError
from tagwall.model import Json
from tagwall.store import ObjectKey, canonical_json, key_of
from tagwall.store._keys import KUBERNETES_KINDS


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (
            {
                "apiVersion": "tagwall/v1",
                "kind": "Workload",
                "metadata": {"name": "w", "project": "shop"},
            },
            ObjectKey("Workload", "shop", "w"),
        ),
        (
            {"apiVersion": "tagwall/v1", "kind": "TagType", "metadata": {"name": "team"}},
            ObjectKey("TagType", None, "team"),
        ),
        (
            {"kind": "Project", "metadata": {"name": "shop", "project": ""}},
            ObjectKey("Project", None, "shop"),
        ),
        (
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}},
            ObjectKey("Pod", "default", "web"),
        ),
        (
            {"kind": "NetworkPolicy", "metadata": {"name": "np", "namespace": "shop"}},
            ObjectKey("NetworkPolicy", "shop", "np"),
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "shop", "namespace": "ignored"},
            },
            ObjectKey("Namespace", None, "shop"),
        ),
        (
            {
                "apiVersion": "policy.networking.k8s.io/v1alpha1",
                "kind": "AdminNetworkPolicy",
                "metadata": {"name": "guard"},
            },
            ObjectKey("AdminNetworkPolicy", None, "guard"),
        ),
        (
            {"kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"}},
            ObjectKey("BaselineAdminNetworkPolicy", None, "default"),
        ),
        (
            {"kind": "ClusterNetworkPolicy", "metadata": {"name": "c"}},
            ObjectKey("ClusterNetworkPolicy", None, "c"),
        ),
        (  # not a kind tagwall imports from Kubernetes: keyed as a native one
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "shop"},
            },
            ObjectKey("Deployment", None, "d"),
        ),
        (  # a Kubernetes kind name written as a native manifest
            {
                "apiVersion": "tagwall/v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "shop", "project": "crm"},
            },
            ObjectKey("Pod", "crm", "p"),
        ),
    ],
)
def test_key_of(body: dict[str, Json], key: ObjectKey) -> None:
    assert key_of(body) == key


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({}, ["kind", "metadata"]),
        ({"kind": "Workload", "metadata": {"name": ""}}, ["metadata.name"]),
        ({"kind": "Workload", "metadata": {"name": "w", "project": 3}}, ["metadata.project"]),
        ({"kind": "Pod", "metadata": {"name": "w", "namespace": ["x"]}}, ["metadata.namespace"]),
    ],
)
def test_key_of_rejects(body: dict[str, Json], paths: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        key_of(body)
    assert [p.path for p in info.value.problems] == paths


def test_keys_sort_global_first_and_print_like_kubectl() -> None:
    keys = [ObjectKey("W", "b", "x"), ObjectKey("W", None, "z"), ObjectKey("A", "a", "y")]
    assert sorted(keys) == [keys[2], keys[1], keys[0]]
    assert str(keys[0]) == "W/b/x" and str(keys[1]) == "W/z"
    with pytest.raises(ValueError):
        ObjectKey("W", "", "x")


def test_canonical_json_ignores_key_order_but_not_types() -> None:
    assert canonical_json({"a": 1, "b": {"c": 2, "d": 3}}) == canonical_json(
        {"b": {"d": 3, "c": 2}, "a": 1}
    )
    assert canonical_json({"a": 1}) != canonical_json({"a": True})
    assert canonical_json({"a": 1}) != canonical_json({"a": 1.0})


def test_kubernetes_kinds_match_the_model() -> None:
    """key_of must scope exactly the kinds the model translates from Kubernetes."""
    assert KUBERNETES_KINDS == model.KUBERNETES_KINDS
