"""The application as a client sees it: problem+json everywhere, OpenAPI, size cap, fuzzing,
and one real server on a loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import uvicorn
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagwall.api import KIND_OF_PLURAL, create_app
from tagwall.store import SqliteStore

from .support import JSON, SHOP, YAML, apply, paths_of, problem


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "revision": 0}
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for route in (
        "/api/v1/revision",
        "/api/v1/apply",
        "/api/v1/trace",
        "/api/v1/reach",
        "/api/v1/hosts/{host}/program",
        "/api/v1/drafts",
        "/api/v1/drafts/{draft}/diff",
        "/api/v1/drafts/{draft}/commit",
    ):
        assert route in paths, route
    for plural in KIND_OF_PLURAL:
        assert f"/api/v1/{plural}" in paths
        assert {"get", "put", "delete"} <= set(paths[f"/api/v1/{plural}/{{name}}"])
    assert "application/yaml" in paths["/api/v1/apply"]["post"]["requestBody"]["content"]
    assert all(op.get("summary") for item in paths.values() for op in item.values())
    assert client.get("/docs").status_code == 200


def test_errors_are_problem_json(client: TestClient) -> None:
    problem(client.get("/api/v1/nothing-here"), 404)
    allowed = problem(client.patch("/api/v1/revision"), 405)
    assert allowed["title"] == "method not allowed"
    missing = problem(client.post("/api/v1/reach", json={}), 422)
    assert paths_of(missing) == {"body.service"}
    extra = problem(client.post("/api/v1/reach", json={"service": "tcp/1", "x": 1}), 422)
    assert paths_of(extra) == {"body.x"}
    problem(
        client.post("/api/v1/apply", params={"dryRun": "maybe"}, content=SHOP, headers=YAML), 422
    )


def test_bodies_over_the_cap_are_refused(tmp_path: Path) -> None:
    with (
        SqliteStore(tmp_path / "db") as store,
        TestClient(create_app(store, max_body_bytes=2048)) as c,
    ):
        big = "#" * 4096 + "\n" + SHOP
        problem(c.post("/api/v1/apply", content=big, headers=YAML), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while received
            yield big.encode()[:1500]
            yield big.encode()[1500:]

        problem(c.post("/api/v1/apply", content=chunks(), headers=YAML), 413)
        json_chunks = (part.encode() for part in ['{"from": "', "x" * 4096, '"}'])
        problem(c.post("/api/v1/trace", content=json_chunks, headers=JSON), 413)
        problem(
            c.post(
                "/api/v1/trace",
                content=json.dumps({"from": "x" * 4096}),
                headers={"content-type": "application/json"},
            ),
            413,
        )
        assert apply(c, SHOP[:2000].rsplit("---", 1)[0]).status_code == 200


def test_absurd_nesting_is_bad_input(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    problem(
        client.post("/api/v1/apply", content=deep, headers={"content-type": "application/json"}),
        422,
    )
    problem(client.post("/api/v1/apply", content="a: " + deep, headers=YAML), 422)
    assert (
        client.post(
            "/api/v1/trace", content=deep, headers={"content-type": "application/json"}
        ).status_code
        < 500
    )


def test_yaml_alias_bombs_are_refused(client: TestClient) -> None:
    """A few hundred bytes of nested aliases must not expand into billions of nodes."""
    lines = ['a0: &a0 ["x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    body = problem(client.post("/api/v1/apply", content="\n".join(lines), headers=YAML), 422)
    assert "aliases expand" in body["detail"]
    anchors = """\
kind: List
items:
- apiVersion: tagwall/v1
  kind: Workload
  metadata: {name: web-2}
  spec: &spec {kind: vm, host: host-1, tags: {tier: web}}
- apiVersion: tagwall/v1
  kind: Workload
  metadata: {name: web-3}
  spec: *spec
"""
    r = apply(client, anchors)
    assert r.status_code == 200, r.text


# -- fuzzing ----------------------------------------------------------------------------------

_MEDIA = st.sampled_from(
    ["application/yaml", "application/x-yaml", "text/yaml", "application/json", "text/plain", ""]
)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_MANIFESTISH = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["tagwall/v1", "v1", "networking.k8s.io/v1"])
        | st.text(max_size=5),
        "kind": st.sampled_from(sorted(KIND_OF_PLURAL.values())) | st.text(max_size=8),
        "metadata": st.fixed_dictionaries(
            {"name": st.text(max_size=12) | st.integers()},
            optional={"project": st.text(max_size=6) | _JSONISH, "namespace": st.text(max_size=6)},
        )
        | _JSONISH,
        "spec": _JSONISH,
    }
)
_ENDPOINT = st.text(max_size=16) | st.sampled_from(
    [
        "web-1",
        "app-1",
        "10.1.0.11",
        "10.1.0.21",
        "::1",
        "0.0.0.0",
        "255.255.255.255",
        "fe80::1%eth0",
    ]
)
_SERVICE = st.text(max_size=10) | st.from_regex(
    r"\A(tcp|udp|icmp|icmpv6|sctp|TCP)/[0-9a-z-]{0,7}\Z"
)
_SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="?#"), min_size=0, max_size=12)


def _body(data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["bytes", "json", "yaml", "manifests", "flow"]))
    if kind == "flow":  # the shape of trace and reach requests, with random values
        flow = {
            "from": data.draw(_ENDPOINT),
            "to": data.draw(_ENDPOINT),
            "service": data.draw(_SERVICE),
        }
        return json.dumps(flow).encode()
    if kind == "bytes":
        return data.draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(data.draw(_JSONISH)).encode()
    docs = data.draw(st.lists(_MANIFESTISH if kind == "manifests" else _JSONISH, max_size=3))
    if kind == "manifests":
        return json.dumps(docs).encode()
    return yaml.safe_dump_all(docs).encode()


def test_fuzzed_requests_never_get_a_5xx(tmp_path: Path) -> None:
    """Random bodies, media types, paths and names against every route: always < 500."""
    with SqliteStore(tmp_path / "db") as store, TestClient(create_app(store)) as c:
        assert apply(c, SHOP).status_code == 200
        c.post("/api/v1/drafts", json={"name": "fuzz"})
        plurals = sorted(KIND_OF_PLURAL)

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            plural = data.draw(st.sampled_from([*plurals, "drafts", "hosts"]))
            name = quote(data.draw(_SEGMENT), safe="/")
            method, path = data.draw(
                st.sampled_from(
                    [
                        ("POST", "/api/v1/apply"),
                        ("PUT", f"/api/v1/{plural}/{name}"),
                        ("GET", f"/api/v1/{plural}/{name}"),
                        ("DELETE", f"/api/v1/{plural}/{name}"),
                        ("GET", f"/api/v1/{plural}"),
                        ("POST", "/api/v1/trace"),
                        ("POST", "/api/v1/reach"),
                        ("GET", f"/api/v1/hosts/{name}/program"),
                        ("POST", "/api/v1/drafts"),
                        ("POST", "/api/v1/drafts/fuzz/apply"),
                        ("POST", "/api/v1/drafts/fuzz/delete"),
                        ("POST", f"/api/v1/drafts/{name}/commit"),
                        ("GET", f"/api/v1/drafts/{name}/diff"),
                        ("POST", f"/api/v1/{name}"),
                    ]
                )
            )
            params = data.draw(
                st.dictionaries(
                    st.sampled_from(["project", "dryRun", "expectRevision"]),
                    st.text(max_size=6),
                    max_size=3,
                )
            )
            headers = {"content-type": data.draw(_MEDIA)}
            r = c.request(method, path, content=_body(data), params=params, headers=headers)
            assert r.status_code < 500, (method, path, r.text)
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json", r.text

        check()


def test_fuzzed_flows_never_get_a_5xx(tmp_path: Path) -> None:
    """Random names, addresses and services for trace and reach: always < 500."""
    with SqliteStore(tmp_path / "db") as store, TestClient(create_app(store)) as c:
        assert apply(c, SHOP).status_code == 200

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            route=st.sampled_from(["/api/v1/trace", "/api/v1/reach"]),
            end=st.lists(_ENDPOINT, min_size=2, max_size=2),
            service=_SERVICE,
        )
        def check(route: str, end: list[str], service: str) -> None:
            flow = {"from": end[0], "to": end[1], "service": service}
            if route.endswith("reach"):
                flow = {"service": service}
            r = c.post(route, json=flow)
            assert r.status_code < 500, (route, flow, r.text)

        check()


# -- a real server ----------------------------------------------------------------------------


def test_real_server_over_loopback(tmp_path: Path) -> None:
    """The app behind uvicorn on a free loopback port, spoken to over real HTTP."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with SqliteStore(tmp_path / "db") as store:
        config = uvicorn.Config(create_app(store), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.01)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                r = http.post("/api/v1/apply", content=SHOP, headers=YAML)
                assert r.status_code == 200, r.text
                assert r.json()["revision"] == 1
                trace = http.post(
                    "/api/v1/trace", json={"from": "web-1", "to": "app-1", "service": "tcp/8080"}
                )
                assert trace.json()["verdict"] == "allow"
                problem(http.get("/api/v1/workloads/nobody"), 404)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
        assert not thread.is_alive()


def test_public_names() -> None:
    import tagwall.api

    assert sorted(tagwall.api.__all__) == [
        "API_PREFIX",
        "KIND_OF_PLURAL",
        "MANIFEST_MEDIA_TYPES",
        "MAX_BODY_BYTES",
        "create_app",
    ]
    assert all(hasattr(tagwall.api, name) for name in tagwall.api.__all__)
