"""``POST /api/v1/flows/agent``: agents' flow reports are stored by the controller's analytics
and answered with the last sequence number stored; a malformed batch is a 422 naming the
field and stores nothing; a controller without analytics answers 404.

The estate is ``support.SHOP``: web-1 (10.1.0.11) on host-1, app-1 (10.1.0.21) on host-2,
web → app on tcp/8080 allowed by ``web-to-app``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tagwall.analytics import Analytics
from tagwall.api import create_app
from tagwall.control import REPORTS_PATH, EndDecision, FlowReport
from tagwall.store import SqliteStore

from .support import SHOP, apply, paths_of, problem

NOW_MS = 1_764_150_000_000
WEB_TO_APP = EndDecision("allow", "application", "shop/apps", "shop/three-tier", "web-to-app")
DECIDED = WEB_TO_APP.to_wire()


def wire(
    dst: str = "10.1.0.21",
    *,
    start_ms: int = NOW_MS,
    egress: EndDecision | None = WEB_TO_APP,
    ingress: EndDecision | None = None,
    packets: int = 12,
) -> dict[str, Any]:
    """A report of web-1 → ``dst`` tcp/8080 as an agent sends it."""
    return FlowReport(
        start_ms, start_ms + 2500, "10.1.0.11", dst, 6, 40000, 8080, packets, 2100, 10, 5800,
        egress, ingress,
    ).to_wire()  # fmt: skip


@pytest.fixture
def flows_client(store: SqliteStore, tmp_path: Path) -> Iterator[TestClient]:
    """A controller with analytics, started on the SHOP estate already in the store."""
    with TestClient(create_app(store)) as setup:
        assert apply(setup, SHOP).status_code == 200
    analytics = Analytics(tmp_path / "flows.duckdb")
    with TestClient(create_app(store, analytics=analytics)) as c:
        yield c


def post(client: TestClient, body: object) -> Any:
    return client.post(REPORTS_PATH, json=body)


def stored_through(client: TestClient) -> dict[str, int]:
    response = client.get("/api/v1/flows/collectors")
    assert response.status_code == 200, response.text
    value: dict[str, int] = response.json()["agents"]["stored_through"]
    return value


def test_reports_are_stored_and_answered_with_the_last_sequence_number(
    flows_client: TestClient,
) -> None:
    """host-1's half of web-1 → app-1 and host-2's half become one flow with both ends'
    decisions; a flow to an address of no workload is stored as it came."""
    outside = wire("198.51.100.7", start_ms=NOW_MS + 1000)
    first = post(flows_client, {"host": "host-1", "first_seq": 1, "reports": [wire(), outside]})
    assert (first.status_code, first.json()) == (200, {"stored_through": 2})
    destination = wire(egress=None, ingress=WEB_TO_APP, packets=11)
    second = post(flows_client, {"host": "host-2", "first_seq": 7, "reports": [destination]})
    assert (second.status_code, second.json()) == (200, {"stored_through": 7})

    items = flows_client.get("/api/v1/flows").json()["items"]
    assert [(f["exporter"], f["dst"]["address"]) for f in items] == [
        ("host-1", "198.51.100.7"),
        ("host-1", "10.1.0.21"),
    ]
    paired = items[1]
    assert (paired["source"], paired["packets"]) == ("agent", 12)
    assert (paired["src"]["workload"], paired["dst"]["workload"]) == ("web-1", "app-1")
    decided = {"tier": "application", "policy_set": "shop/apps", "policy": "shop/three-tier"}
    for end in ("src", "dst"):
        assert paired[end]["verdict"] == "allow"
        assert paired[end]["decided_by"] == {**decided, "rule": "web-to-app"}
    assert stored_through(flows_client) == {"host-1": 2, "host-2": 7}


def test_collectors_show_what_the_agents_sent(flows_client: TestClient) -> None:
    """The lone half of web-1 → app-1 waits for host-2's; host-1 said its spool dropped 4."""

    def agents() -> dict[str, Any]:
        body: dict[str, Any] = flows_client.get("/api/v1/flows/collectors").json()["agents"]
        return body

    before = agents()
    assert (before["stored_through"], before["waiting"], before["duplicates"]) == ({}, 0, 0)
    body = {"host": "host-1", "first_seq": 1, "dropped": 4, "reports": [wire()]}
    assert post(flows_client, body).status_code == 200
    after = agents()
    assert (after["stored_through"], after["waiting"], after["duplicates"]) == ({"host-1": 1}, 1, 0)
    assert after["spool_dropped"] == {"host-1": 4}


def test_a_batch_sent_again_is_answered_alike_and_stored_once(flows_client: TestClient) -> None:
    body = {"host": "host-1", "first_seq": 1, "reports": [wire("198.51.100.7")]}
    assert post(flows_client, body).json() == {"stored_through": 1}
    assert post(flows_client, body).json() == {"stored_through": 1}
    assert len(flows_client.get("/api/v1/flows").json()["items"]) == 1


def _with(report: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**report, **changes}


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        (_with(wire(), dport=70000), "reports[1].dport"),
        (_with(wire(), dport="8080"), "reports[1].dport"),
        (_with(wire(), packets=-1), "reports[1].packets"),
        (_with(wire(), src="web-1"), "reports[1].src"),
        (_with(wire(), end_ms=NOW_MS - 1), "reports[1].end_ms"),
        (_with(wire(), egress={**DECIDED, "verdict": "maybe"}), "reports[1].egress.verdict"),
        (_with(wire(), ingress={**DECIDED, "tier": ""}), "reports[1].ingress.tier"),
        (_with(wire(), egress="allow"), "reports[1].egress"),
        ({k: v for k, v in wire().items() if k != "proto"}, "reports[1].proto"),
        ("a report", "reports[1]"),
    ],
    ids=[
        "port-range", "port-text", "negative", "address", "end-before-start", "verdict",
        "empty-tier", "decision-not-object", "missing-proto", "not-an-object",
    ],
)  # fmt: skip
def test_a_malformed_report_is_a_422_naming_its_field_and_nothing_is_stored(
    flows_client: TestClient, bad: object, path: str
) -> None:
    good = wire("198.51.100.7")
    response = post(flows_client, {"host": "host-1", "first_seq": 1, "reports": [good, bad]})
    assert paths_of(problem(response, 422)) == {path}
    assert flows_client.get("/api/v1/flows").json()["items"] == []
    assert stored_through(flows_client) == {}


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"reports": []}, {"host", "first_seq"}),
        ({"host": "", "first_seq": 1, "reports": []}, {"host"}),
        ({"host": "host-1", "first_seq": 0, "reports": []}, {"first_seq"}),
        ({"host": "host-1", "first_seq": True, "reports": []}, {"first_seq"}),
        ({"host": "host-1", "first_seq": "1", "reports": []}, {"first_seq"}),
        ({"host": "host-1", "first_seq": 1}, {"reports"}),
        ({"host": "host-1", "first_seq": 1, "dropped": -1, "reports": []}, {"dropped"}),
        ({"host": "host-1", "first_seq": 1, "reports": {"0": {}}}, {"reports"}),
    ],
)
def test_a_malformed_batch_is_a_422_naming_every_bad_field(
    flows_client: TestClient, body: dict[str, Any], paths: set[str]
) -> None:
    assert paths_of(problem(post(flows_client, body), 422)) == paths
    assert stored_through(flows_client) == {}


def test_a_body_that_is_no_object_is_a_422(flows_client: TestClient) -> None:
    assert paths_of(problem(post(flows_client, [wire()]), 422)) == {"body"}
    assert stored_through(flows_client) == {}


def test_without_analytics_the_route_answers_404(client: TestClient) -> None:
    """``client`` is a controller started without a flow store (``--flows off``)."""
    body = {"host": "host-1", "first_seq": 1, "reports": [wire()]}
    assert "flow store" in problem(post(client, body), 404)["detail"]
    problem(client.get("/api/v1/flows/collectors"), 404)
