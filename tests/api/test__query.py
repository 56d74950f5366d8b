"""Query API: trace, reach and host programs answer from the validated live configuration."""

from __future__ import annotations

import time

import pytest
import yaml
from fastapi.testclient import TestClient

from tagwall.model import Config, Document, WorkloadMemo, load
from tagwall.store import Put, SqliteStore

from .support import SHOP, apply, paths_of, problem, workload


def trace(client: TestClient, src: str, dst: str, service: str) -> dict[str, object]:
    r = client.post("/api/v1/trace", json={"from": src, "to": dst, "service": service})
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def test_trace_explains_allow_and_deny(client: TestClient) -> None:
    apply(client, SHOP)
    allowed = trace(client, "web-1", "app-1", "tcp/8080")
    assert allowed["verdict"] == "allow" and allowed["allowed"] is True
    assert allowed["flow"] == {
        "from": {"workload": "web-1", "ip": "10.1.0.11"},
        "to": {"workload": "app-1", "ip": "10.1.0.21"},
        "service": "tcp/8080",
    }
    denied = trace(client, "10.1.0.21", "web-1", "tcp/8080")
    assert denied["verdict"] == "deny"


def test_trace_refuses_bad_requests(client: TestClient) -> None:
    apply(client, SHOP)
    problem(
        client.post("/api/v1/trace", json={"from": "nobody", "to": "web-1", "service": "tcp/80"}),
        404,
    )
    bad_service = problem(
        client.post("/api/v1/trace", json={"from": "web-1", "to": "app-1", "service": "tcp"}), 422
    )
    assert paths_of(bad_service) == {"service"}
    unknown_proto = problem(
        client.post("/api/v1/trace", json={"from": "web-1", "to": "app-1", "service": "gre/1"}), 422
    )
    assert "tcp" in unknown_proto["problems"][0]["allowed"]
    missing = problem(client.post("/api/v1/trace", json={"to": "app-1", "service": "tcp/80"}), 422)
    assert paths_of(missing) == {"body.from"}
    problem(
        client.post("/api/v1/trace", content=b"{", headers={"content-type": "application/json"}),
        422,
    )


def test_reach_covers_every_ordered_pair(client: TestClient) -> None:
    apply(client, SHOP)
    r = client.post("/api/v1/reach", json={"service": "tcp/8080"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revision"] == 1 and body["service"] == "tcp/8080"
    assert body["matrix"] == {
        "app-1": {"app-1": True, "web-1": False},
        "web-1": {"app-1": True, "web-1": True},
    }
    assert paths_of(problem(client.post("/api/v1/reach", json={"service": "tcp/x"}), 422)) == {
        "service"
    }


def test_host_program(client: TestClient) -> None:
    apply(client, SHOP)
    r = client.get("/api/v1/hosts/host-1/program")
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), dict)
    body = problem(client.get("/api/v1/hosts/host-9/program"), 404)
    assert "host-9" in body["detail"]


def test_reads_use_the_config_validated_by_the_write(
    client: TestClient, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write caches the Config its check built; reads (the program hub's included) validate
    only when someone else moved the revision, and then only once."""
    deadline = time.monotonic() + 10
    while not client.app.state.hub.ready:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the program hub did not start"
        time.sleep(0.01)
    loads: list[int] = []

    def counting_load(documents: list[Document], memo: WorkloadMemo | None = None) -> Config:
        loads.append(len(documents))
        return load(documents, memo)

    monkeypatch.setattr("tagwall.api._live.load", counting_load)
    apply(client, SHOP)
    assert len(loads) == 1
    trace(client, "web-1", "app-1", "tcp/8080")
    client.post("/api/v1/reach", json={"service": "tcp/8080"})
    client.get("/api/v1/hosts/host-1/program")
    assert len(loads) == 1

    store.commit([Put(yaml.safe_load(workload("web-2", "10.1.0.12")))])  # behind the API's back
    assert trace(client, "web-2", "app-1", "tcp/8080")["verdict"] == "allow"
    trace(client, "web-1", "app-1", "tcp/8080")
    assert len(loads) == 2
