"""Service instances as they run: agents report their service workloads' health and steered
traffic, ``GET /status/serviceinstances`` joins that with the configuration."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tagwall.api._services import STALE_S, ServiceBoard

from .support import apply, problem

CHAIN = """\
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw-a}
spec:
  host: host-1
  interfaces:
  - {name: left, ips: [10.9.0.1], role: left}
  - {name: right, ips: [10.9.1.1], role: right}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: fw-b}
spec:
  host: host-2
  interfaces:
  - {name: left, ips: [10.9.0.2], role: left}
  - {name: right, ips: [10.9.1.2], role: right}
---
apiVersion: tagwall/v1
kind: ServiceTemplate
metadata: {name: l7}
spec: {mode: in-network, function: l7-firewall, whenAllDown: fail-open}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1}
spec: {template: l7, workloads: [fw-a, fw-b]}
"""

URL = "/api/v1/status/serviceinstances"


def entry(workload: str, healthy: bool, packets: int = 0, flows: int = 0) -> dict[str, Any]:
    return {
        "instance": "fw-1",
        "workload": workload,
        "healthy": healthy,
        "packets": packets,
        "flows": flows,
    }


def instance(client: TestClient) -> dict[str, Any]:
    response = client.get(URL)
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    assert isinstance(item, dict)
    return item


def test_an_instance_is_unknown_until_every_host_reported(client: TestClient) -> None:
    assert apply(client, CHAIN).status_code == 200
    item = instance(client)
    assert (item["name"], item["template"], item["mode"], item["whenAllDown"]) == (
        "fw-1",
        "l7",
        "in-network",
        "fail-open",
    )
    assert item["health"] == "unknown"
    assert [(w["workload"], w["host"], w["healthy"]) for w in item["workloads"]] == [
        ("fw-a", "host-1", None),
        ("fw-b", "host-2", None),
    ]

    posted = client.post(URL, json={"host": "host-1", "services": [entry("fw-a", True, 120, 4)]})
    assert posted.status_code == 200, posted.text
    item = instance(client)
    assert item["health"] == "unknown"  # host-2 has not said
    fw_a = item["workloads"][0]
    assert (fw_a["healthy"], fw_a["packets"], fw_a["flows"]) == (True, 120, 4)
    assert fw_a["reportedAt"] is not None


def test_health_is_up_degraded_or_down_from_the_workloads(client: TestClient) -> None:
    apply(client, CHAIN)
    client.post(URL, json={"host": "host-1", "services": [entry("fw-a", True)]})
    client.post(URL, json={"host": "host-2", "services": [entry("fw-b", True)]})
    assert instance(client)["health"] == "up"
    client.post(URL, json={"host": "host-2", "services": [entry("fw-b", False)]})
    assert instance(client)["health"] == "degraded"
    client.post(URL, json={"host": "host-1", "services": [entry("fw-a", False)]})
    assert instance(client)["health"] == "down"
    # A host's new report replaces its last one: fw-a no longer reported by host-1.
    client.post(URL, json={"host": "host-1", "services": []})
    assert instance(client)["health"] == "unknown"


def test_a_malformed_report_names_the_field(client: TestClient) -> None:
    body = problem(client.post(URL, json={"services": []}), 422)
    assert body["problems"][0]["path"] == "host"
    bad = {**entry("fw-a", True), "packets": "many"}
    body = problem(client.post(URL, json={"host": "host-1", "services": [bad]}), 422)
    assert body["problems"][0]["path"] == "services[0].packets"
    body = problem(client.post(URL, json={"host": "host-1", "services": [entry("fw-a", 1)]}), 422)  # type: ignore[arg-type]
    assert body["problems"][0]["path"] == "services[0].healthy"


def test_reports_go_stale() -> None:
    now = [1000.0]
    board = ServiceBoard(clock=lambda: now[0])
    board.put("host-1", [entry("fw-a", True)])
    assert set(board.fresh()) == {("fw-1", "fw-a")}
    now[0] += STALE_S + 0.1
    assert board.fresh() == {}
