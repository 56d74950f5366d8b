"""Drafts API: staged changes are invisible until committed, validated like apply."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .support import SHOP, YAML, apply, paths_of, problem, revision, workload

D = "/api/v1/drafts"


def test_draft_lifecycle(client: TestClient) -> None:
    apply(client, SHOP)
    created = client.post(D, json={"name": "move-web"})
    assert created.status_code == 201, created.text
    assert created.json()["baseRevision"] == 1 and created.json()["changes"] == []
    problem(client.post(D, json={"name": "move-web"}), 409)

    staged = client.post(
        f"{D}/move-web/apply",
        content=workload("web-1", "10.1.0.15") + "---\n" + workload("web-2", "10.1.0.16"),
        headers=YAML,
    )
    assert staged.status_code == 200, staged.text
    delete = {"kind": "Workload", "name": "app-1", "project": "shop"}
    staged = client.post(f"{D}/move-web/delete", json=delete)
    assert staged.status_code == 200, staged.text
    assert [(c["op"], c["name"]) for c in staged.json()["changes"]] == [
        ("put", "web-1"),
        ("put", "web-2"),
        ("delete", "app-1"),
    ]
    assert [d["name"] for d in client.get(D).json()["items"]] == ["move-web"]
    assert client.get(f"{D}/move-web").json()["changes"] == staged.json()["changes"]

    # Nothing live has moved.
    assert revision(client) == 1
    problem(client.get("/api/v1/workloads/web-2", params={"project": "shop"}), 404)

    diff = client.get(f"{D}/move-web/diff").json()
    assert diff["revision"] == 1 and diff["baseRevision"] == 1
    entries = {e["name"]: e for e in diff["entries"]}
    assert entries["web-1"]["op"] == "update"
    assert entries["web-1"]["live"]["spec"]["interfaces"][0]["ips"] == ["10.1.0.11"]
    assert entries["web-1"]["draft"]["spec"]["interfaces"][0]["ips"] == ["10.1.0.15"]
    assert entries["web-2"]["op"] == "create" and entries["web-2"]["live"] is None
    assert entries["app-1"]["op"] == "delete" and entries["app-1"]["draft"] is None
    assert entries["app-1"]["live"]["metadata"]["name"] == "app-1"

    committed = client.post(f"{D}/move-web/commit")
    assert committed.status_code == 200, committed.text
    assert committed.json()["revision"] == 2
    assert sorted(r["outcome"] for r in committed.json()["results"]) == [
        "configured",
        "created",
        "deleted",
    ]
    assert revision(client) == 2
    names = [w["metadata"]["name"] for w in client.get("/api/v1/workloads").json()["items"]]
    assert names == ["web-1", "web-2"]
    problem(client.get(f"{D}/move-web"), 404)


def test_an_invalid_draft_is_not_committed(client: TestClient) -> None:
    apply(client, SHOP)
    client.post(D, json={"name": "oops"})
    client.post(
        f"{D}/oops/delete", json={"kind": "FirewallPolicy", "name": "three-tier", "project": "shop"}
    )
    body = problem(client.post(f"{D}/oops/commit"), 422)
    assert body["problems"]
    assert revision(client) == 1
    assert client.get(f"{D}/oops").status_code == 200  # still there to fix


def test_discard(client: TestClient) -> None:
    apply(client, SHOP)
    client.post(D, json={"name": "scratch"})
    client.post(f"{D}/scratch/apply", content=workload("web-9", "10.1.0.99"), headers=YAML)
    r = client.delete(f"{D}/scratch")
    assert r.status_code == 204
    problem(client.get(f"{D}/scratch"), 404)
    problem(client.delete(f"{D}/scratch"), 404)
    assert revision(client) == 1
    problem(client.get("/api/v1/workloads/web-9", params={"project": "shop"}), 404)


def test_draft_requests_are_checked(client: TestClient) -> None:
    assert paths_of(problem(client.post(D, json={"name": "a/b"}), 422)) == {"body.name"}
    problem(client.post(D, json={}), 422)
    problem(client.get(f"{D}/nope"), 404)
    problem(client.get(f"{D}/nope/diff"), 404)
    problem(client.post(f"{D}/nope/commit"), 404)
    problem(client.post(f"{D}/nope/apply", content=workload("w", "10.0.0.1"), headers=YAML), 404)
    client.post(D, json={"name": "d"})
    unknown = problem(client.post(f"{D}/d/delete", json={"kind": "Gizmo", "name": "g"}), 422)
    assert paths_of(unknown) == {"body.kind"}
    problem(
        client.post(f"{D}/d/apply", content="kind: Gizmo\nmetadata: {name: g}", headers=YAML), 422
    )
    problem(client.post(f"{D}/d/apply", content="a: b", headers={"content-type": "text/csv"}), 415)
