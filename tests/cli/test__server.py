"""``apply``, ``get``, ``describe``, ``delete`` against a live controller (in-process CLI)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tagwall.cli._server import plural_of, resolve_kind

from .support import tagwall

pytestmark = pytest.mark.e2e


def test_kinds_resolve_from_any_spelling() -> None:
    assert {resolve_kind(k) for k in ("FirewallPolicy", "firewallpolicies", "fp")} == {
        "FirewallPolicy"
    }
    assert plural_of("Settings") == "settings" and plural_of("NetworkPolicy") == "networkpolicies"


def test_apply_get_describe_delete(controller: str) -> None:
    code, out, err = tagwall(controller, "apply", "-f", "examples/three-tier", "--dry-run")
    assert code == 0, err
    assert "dry run: nothing written" in out
    code, out, err = tagwall(controller, "get", "workloads", "-o", "json")
    assert code == 0 and json.loads(out)["items"] == []

    code, out, err = tagwall(controller, "apply", "-f", "examples/three-tier")
    assert code == 0, err
    code, out, _ = tagwall(controller, "get", "workloads")
    assert code == 0 and "shop-web-prod" in out and "10.1.1.11" in out
    code, out, _ = tagwall(controller, "get", "workloads", "-p", "crm", "-o", "json")
    assert {w["metadata"]["name"] for w in json.loads(out)["items"]} == {
        f"crm-{t}-{d}" for t in ("web", "app", "db") for d in ("prod", "dev")
    }
    code, out, _ = tagwall(controller, "get", "projects", "-o", "yaml")
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == ["crm", "shop"]

    code, out, _ = tagwall(controller, "describe", "fp", "three-tier")
    assert code == 0 and "web-to-app" in out and "application, deployment" in out

    code, out, err = tagwall(controller, "delete", "fp", "three-tier")
    assert code == 1 and "three-tier" in err  # the set `apps` still refers to it
    code, out, err = tagwall(controller, "delete", "-f", "examples/three-tier/policy.yaml")
    assert code == 0, err
    assert "deleted FirewallPolicy/three-tier" in out
    code, out, err = tagwall(controller, "get", "fp", "three-tier")
    assert code == 1 and "does not exist" in err and "HTTP 404" in err


def test_apply_problems_point_at_the_users_file(controller: str, tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text(
        "apiVersion: tagwall/v1\nkind: Project\nmetadata: {name: ok}\n---\n"
        "apiVersion: tagwall/v1\nkind: Workload\nmetadata: {name: w9}\n"
        "spec: {interfaces: [{name: eth0, ips: [10.9.9.300]}]}\n"
    )
    code, out, err = tagwall(controller, "apply", "-f", str(bad))
    assert code == 1 and out == ""
    assert f"{bad}#1 Workload/w9 spec.interfaces[0].ips[0]" in err


def test_usage_errors_exit_2(controller: str) -> None:
    assert tagwall(controller, "get", "gadgets")[0] == 2
    assert tagwall(controller, "delete", "fp")[0] == 2
    assert (
        tagwall(
            controller,
            "trace",
            "--from",
            "a",
            "--to",
            "b",
            "-s",
            "tcp/1",
            "-f",
            "x.yaml",
            "--server",
            controller,
        )[0]
        == 2
    )


SERVICE = """\
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
kind: ServiceTemplate
metadata: {name: l7}
spec: {mode: in-network, function: l7-firewall}
---
apiVersion: tagwall/v1
kind: ServiceInstance
metadata: {name: fw-1}
spec: {template: l7, workloads: [fw-a]}
"""


def test_get_serviceinstances_shows_health_and_steered_traffic(
    controller: str, tmp_path: Path
) -> None:
    """The list is the instances as they run (as ``get hosts`` is); one by name is the object."""
    manifest = tmp_path / "service.yaml"
    manifest.write_text(SERVICE)
    code, _, err = tagwall(controller, "apply", "-f", str(manifest))
    assert code == 0, err
    code, out, _ = tagwall(controller, "get", "serviceinstances")
    assert code == 0 and re.search(r"fw-1 .* unknown .* fw-a .* host-1 .* \?", out), out
    report = {
        "host": "host-1",
        "services": [
            {"instance": "fw-1", "workload": "fw-a", "healthy": True, "packets": 31, "flows": 2}
        ],
    }
    httpx.post(f"{controller}/api/v1/status/serviceinstances", json=report).raise_for_status()
    code, out, _ = tagwall(controller, "get", "serviceinstances", "-o", "json")
    (item,) = json.loads(out)["items"]
    assert item["health"] == "up"
    assert [(w["workload"], w["healthy"], w["packets"], w["flows"]) for w in item["workloads"]] == [
        ("fw-a", True, 31, 2)
    ]
    code, out, _ = tagwall(controller, "get", "serviceinstances")
    assert re.search(r"fw-1 .* up .* fw-a .* host-1 .* yes .* 31 .* 2", out), out
    code, out, _ = tagwall(controller, "get", "serviceinstance", "fw-1", "-o", "json")
    assert json.loads(out)["spec"] == {"template": "l7", "workloads": ["fw-a"]}
