"""Manifests and assertions shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

YAML = {"content-type": "application/yaml"}
JSON = {"content-type": "application/json"}

# A small shop: web → app on tcp/8080 is allowed by an application-tier set; nothing else is.
SHOP = """\
apiVersion: tagwall/v1
kind: Project
metadata: {name: shop}
spec: {tags: {application: shop}}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: web-1, project: shop}
spec:
  kind: vm
  host: host-1
  interfaces: [{name: eth0, ips: [10.1.0.11]}]
  tags: {tier: web}
---
apiVersion: tagwall/v1
kind: Workload
metadata: {name: app-1, project: shop}
spec:
  kind: vm
  host: host-2
  interfaces: [{name: eth0, ips: [10.1.0.21]}]
  tags: {tier: app}
---
apiVersion: tagwall/v1
kind: FirewallPolicy
metadata: {name: three-tier, project: shop}
spec:
  rules:
  - name: web-to-app
    sequence: 10
    from: {tags: "tier=web"}
    to: {tags: "tier=app"}
    services: [tcp/8080]
    direction: ">"
    action: allow
---
apiVersion: tagwall/v1
kind: ApplicationPolicySet
metadata: {name: apps, project: shop}
spec:
  tier: application
  priority: 100
  selector: "application=shop"
  directions: [ingress, egress]
  policies: [{name: three-tier, sequence: 10}]
"""


def workload(name: str, ip: str, *, project: str | None = "shop", tier: str = "web") -> str:
    meta = f"{{name: {name}, project: {project}}}" if project else f"{{name: {name}}}"
    return f"""\
apiVersion: tagwall/v1
kind: Workload
metadata: {meta}
spec:
  kind: vm
  host: host-1
  interfaces: [{{name: eth0, ips: [{ip}]}}]
  tags: {{tier: {tier}}}
"""


def apply(client: httpx.Client, text: str, **params: Any) -> httpx.Response:
    return client.post("/api/v1/apply", content=text, headers=YAML, params=params)


def revision(client: httpx.Client) -> int:
    value = client.get("/api/v1/revision").json()["revision"]
    assert isinstance(value, int)
    return value


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``response`` is problem+json with ``status``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert isinstance(body["problems"], list)
    return body


def paths_of(body: dict[str, Any]) -> set[str]:
    return {p.get("path", "") for p in body["problems"]}
