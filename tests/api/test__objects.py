"""Objects API: apply, per-kind CRUD, validation of the whole configuration on every write."""

from __future__ import annotations

import json

import pytest
import yaml
from fastapi.testclient import TestClient

from tagwall.api import KIND_OF_PLURAL
from tagwall.model import KUBERNETES_KINDS, NATIVE_KINDS
from tagwall.store import SqliteStore

from .support import JSON, SHOP, YAML, apply, paths_of, problem, revision, workload


def test_every_stored_kind_has_a_route() -> None:
    assert set(KIND_OF_PLURAL.values()) == NATIVE_KINDS | KUBERNETES_KINDS


def test_apply_creates_everything_in_one_revision(client: TestClient) -> None:
    assert revision(client) == 0
    r = apply(client, SHOP)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revision"] == 1 and body["dryRun"] is False
    assert [(x["kind"], x["project"], x["name"], x["outcome"]) for x in body["results"]] == [
        ("Project", None, "shop", "created"),
        ("Workload", "shop", "web-1", "created"),
        ("Workload", "shop", "app-1", "created"),
        ("FirewallPolicy", "shop", "three-tier", "created"),
        ("ApplicationPolicySet", "shop", "apps", "created"),
    ]
    assert revision(client) == 1


def test_reapplying_changes_nothing_and_one_edit_bumps_once(client: TestClient) -> None:
    apply(client, SHOP)
    again = apply(client, SHOP).json()
    assert again["revision"] == 1
    assert {x["outcome"] for x in again["results"]} == {"unchanged"}
    edited = SHOP.replace("10.1.0.11", "10.1.0.12").replace("10.1.0.21", "10.1.0.22")
    body = apply(client, edited).json()
    assert body["revision"] == 2
    assert [x["outcome"] for x in body["results"]].count("configured") == 2
    assert revision(client) == 2


@pytest.mark.parametrize("media", ["application/x-yaml", "text/yaml", "application/yaml"])
def test_apply_accepts_every_yaml_media_type(client: TestClient, media: str) -> None:
    r = client.post(
        "/api/v1/apply", content=SHOP, headers={"content-type": f"{media}; charset=utf-8"}
    )
    assert r.status_code == 200, r.text


def test_apply_accepts_a_json_list(client: TestClient) -> None:
    docs = list(yaml.safe_load_all(SHOP))
    r = client.post("/api/v1/apply", content=json.dumps(docs), headers=JSON)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == len(docs)


def test_apply_is_all_or_nothing(client: TestClient) -> None:
    """One bad document refuses the whole apply; the good ones are not written either."""
    apply(client, SHOP)
    bad = (
        workload("web-2", "10.1.0.12")
        + "---\n"
        + workload("web-3", "10.1.0.11")  # web-1's address: every IP belongs to one workload
    )
    body = problem(apply(client, bad), 422)
    assert body["problems"], body
    assert revision(client) == 1
    problem(client.get("/api/v1/workloads/web-2", params={"project": "shop"}), 404)


def test_apply_names_the_document_of_each_problem(client: TestClient) -> None:
    text = workload("web-1", "10.1.0.11") + "---\n" + workload("web-2", "10.1.0.11")
    body = problem(apply(client, text), 422)
    assert any(p.get("source", "").startswith("<api>#") for p in body["problems"]), body


def test_dry_run_validates_and_reports_without_writing(client: TestClient) -> None:
    r = apply(client, SHOP, dryRun="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dryRun"] is True and body["revision"] == 0
    assert {x["outcome"] for x in body["results"]} == {"created"}
    assert revision(client) == 0
    assert client.get("/api/v1/workloads").json()["items"] == []
    bad = SHOP.replace("policies: [{name: three-tier", "policies: [{name: missing")
    problem(apply(client, bad, dryRun="true"), 422)


def test_apply_refuses_bad_bodies(client: TestClient) -> None:
    body = problem(apply(client, "kind: [unclosed"), 422)
    assert "YAML" in body["detail"]
    problem(apply(client, ""), 422)
    problem(client.post("/api/v1/apply", content=b"\xff\xfe", headers=YAML), 400)
    problem(client.post("/api/v1/apply", content=SHOP, headers={"content-type": "text/plain"}), 415)
    problem(client.post("/api/v1/apply", content=SHOP), 415)
    unknown = problem(
        apply(client, "apiVersion: tagwall/v1\nkind: Gizmo\nmetadata: {name: g}"), 422
    )
    assert "Workload" in unknown["problems"][0]["allowed"]
    nameless = problem(apply(client, "apiVersion: tagwall/v1\nkind: Project\nmetadata: {}"), 422)
    assert "metadata.name" in paths_of(nameless)
    twice = problem(
        apply(client, workload("w", "10.9.0.1") + "---\n" + workload("w", "10.9.0.2")), 422
    )
    assert "appears twice" in twice["problems"][0]["reason"]
    assert revision(client) == 0


def test_list_and_get(client: TestClient) -> None:
    apply(client, SHOP + "---\n" + workload("ext-1", "192.0.2.1", project=None))
    listed = client.get("/api/v1/workloads").json()
    assert listed["revision"] == 1
    assert [w["metadata"]["name"] for w in listed["items"]] == ["ext-1", "app-1", "web-1"]
    in_shop = client.get("/api/v1/workloads", params={"project": "shop"}).json()["items"]
    assert [w["metadata"]["name"] for w in in_shop] == ["app-1", "web-1"]
    one = client.get("/api/v1/workloads/web-1", params={"project": "shop"})
    assert one.status_code == 200
    assert one.json()["spec"]["host"] == "host-1"
    assert client.get("/api/v1/workloads/ext-1").json()["metadata"] == {"name": "ext-1"}
    missing = problem(client.get("/api/v1/workloads/web-1"), 404)  # global, not shop's
    assert "web-1" in missing["detail"]
    problem(client.get("/api/v1/gizmos"), 404)


def test_put_creates_and_replaces(client: TestClient) -> None:
    apply(client, SHOP)
    url = "/api/v1/workloads/web-2"
    r = client.put(url, content=workload("web-2", "10.1.0.12"), headers=YAML)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [
        {"kind": "Workload", "project": "shop", "name": "web-2", "outcome": "created"}
    ]
    as_json = json.dumps(yaml.safe_load(workload("web-2", "10.1.0.13")))
    r = client.put(url, content=as_json, headers=JSON, params={"project": "shop"})
    assert r.json()["results"][0]["outcome"] == "configured"
    assert r.json()["revision"] == 3
    got = client.get(url, params={"project": "shop"}).json()
    assert got["spec"]["interfaces"][0]["ips"] == ["10.1.0.13"]


def test_put_body_must_match_the_route(client: TestClient) -> None:
    body = workload("web-2", "10.1.0.12")
    assert paths_of(
        problem(client.put("/api/v1/workloads/other", content=body, headers=YAML), 422)
    ) == {"metadata.name"}
    assert paths_of(
        problem(client.put("/api/v1/projects/web-2", content=body, headers=YAML), 422)
    ) == {"kind"}
    wrong_project = client.put(
        "/api/v1/workloads/web-2", content=body, headers=YAML, params={"project": "crm"}
    )
    assert paths_of(problem(wrong_project, 422)) == {"metadata.project"}
    two = problem(
        client.put("/api/v1/workloads/web-2", content=body + "---\n" + body, headers=YAML), 422
    )
    assert "exactly one" in two["detail"]
    assert revision(client) == 0


def test_put_is_validated_with_everything_else(client: TestClient) -> None:
    apply(client, SHOP)
    clash = workload("web-2", "10.1.0.11")  # web-1's address
    problem(client.put("/api/v1/workloads/web-2", content=clash, headers=YAML), 422)
    assert revision(client) == 1


def test_delete_is_refused_while_referenced(client: TestClient) -> None:
    apply(client, SHOP)
    url = "/api/v1/firewallpolicies/three-tier"
    body = problem(client.delete(url, params={"project": "shop"}), 422)
    why, *rest = body["problems"]
    assert why["kind"] == "FirewallPolicy" and why["name"] == "shop/three-tier"
    assert {(p["kind"], p["name"]) for p in rest} == {("ApplicationPolicySet", "apps")}
    assert revision(client) == 1
    assert client.get(url, params={"project": "shop"}).status_code == 200

    r = client.delete("/api/v1/applicationpolicysets/apps", params={"project": "shop"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["outcome"] == "deleted"
    assert client.delete(url, params={"project": "shop"}).json()["revision"] == 3
    problem(client.get(url, params={"project": "shop"}), 404)
    problem(client.delete(url, params={"project": "shop"}), 404)


def test_expect_revision_guards_writes(client: TestClient) -> None:
    apply(client, SHOP)
    stale = apply(client, workload("web-2", "10.1.0.12"), expectRevision=0)
    problem(stale, 409)
    r = apply(client, workload("web-2", "10.1.0.12"), expectRevision=1)
    assert r.status_code == 200 and r.json()["revision"] == 2
    problem(
        client.delete("/api/v1/workloads/web-2", params={"project": "shop", "expectRevision": 1}),
        409,
    )
    problem(apply(client, SHOP, expectRevision="soon"), 422)


def test_kubernetes_objects_keep_their_namespace(client: TestClient) -> None:
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: team-a, labels: {app: web}}
spec: {nodeName: node-1}
status: {podIP: 10.2.0.5}
"""
    r = client.put("/api/v1/pods/web", content=pod, headers=YAML, params={"project": "team-a"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["project"] == "team-a"
    assert client.get("/api/v1/pods/web", params={"project": "team-a"}).status_code == 200
    problem(client.get("/api/v1/pods/web"), 404)  # namespace "default"


def test_a_write_made_outside_the_api_is_visible(client: TestClient, store: SqliteStore) -> None:
    from tagwall.store import Put

    store.commit([Put(yaml.safe_load(workload("ext-1", "192.0.2.1", project=None)))])
    assert revision(client) == 1
    assert client.get("/api/v1/workloads/ext-1").status_code == 200
