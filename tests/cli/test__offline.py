"""``trace``, ``reach``, ``convert``, ``compile`` on files, run as a user runs them (subprocess)."""

from __future__ import annotations

import json
import re

import yaml

from .support import run_tagwall

THREE_TIER = "examples/three-tier"
GUARDRAILS = "examples/guardrails"

APPS = ("shop", "crm")
DEPLOY = ("prod", "dev")
WORKLOADS = sorted(
    [f"{a}-{t}-{d}" for a in APPS for t in ("web", "app", "db") for d in DEPLOY] + ["payments-api"]
)


def test_reach_json_is_exactly_the_matrix() -> None:
    """tcp/8080 reaches only from web to the app of the same application and deployment
    (three-tier's web-to-app with matchTags), plus every workload to itself."""
    result = run_tagwall("reach", "-f", THREE_TIER, "--service", "tcp/8080", "-o", "json")
    assert result.returncode == 0, result.stderr
    expected = {
        src: {
            dst: src == dst
            or any(src == f"{a}-web-{d}" and dst == f"{a}-app-{d}" for a in APPS for d in DEPLOY)
            for dst in WORKLOADS
        }
        for src in WORKLOADS
    }
    assert json.loads(result.stdout) == expected
    assert result.stdout.lstrip().startswith("{") and result.stdout.rstrip().endswith("}")


def test_reach_takes_several_files_and_directories() -> None:
    result = run_tagwall(
        "reach",
        "-f",
        f"{THREE_TIER}/apps.yaml",
        "-f",
        f"{THREE_TIER}/policy.yaml",
        "-f",
        GUARDRAILS,
        "-f",
        f"{THREE_TIER}/external.yaml",
        "--service",
        "udp/53",
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    matrix = json.loads(result.stdout)
    assert matrix["shop-app-prod"]["dns-1"] is True  # admin allow-dns
    assert matrix["shop-app-prod"]["shop-db-prod"] is False  # implicit deny
    assert set(matrix) == set(matrix["dns-1"]) and len(matrix) == len(WORKLOADS) + 3


def test_trace_json_is_the_verdict_with_both_ends() -> None:
    result = run_tagwall(
        "trace",
        "-f",
        THREE_TIER,
        "-f",
        GUARDRAILS,
        "--from",
        "shop-app-prod",
        "--to",
        "10.0.0.53",
        "--service",
        "udp/53",
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["flow"] == {
        "from": {"workload": "shop-app-prod", "ip": "10.1.1.21"},
        "to": {"workload": "dns-1", "ip": "10.0.0.53"},
        "service": "udp/53",
    }
    assert verdict["allowed"] is True
    for end in ("egress", "ingress"):
        assert verdict[end]["tier"] == "admin"
        assert (verdict[end]["policySet"], verdict[end]["rule"]) == ("guardrails", "allow-dns")


def test_trace_readable_names_each_end() -> None:
    result = run_tagwall(
        "trace",
        "-f",
        THREE_TIER,
        "--from",
        "shop-web-prod",
        "--to",
        "shop-db-prod",
        "--service",
        "tcp/5432",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("DENIED  shop-web-prod (10.1.1.11) → shop-db-prod (10.1.1.31)")
    assert "egress at source shop-web-prod (10.1.1.11): deny" in result.stdout
    assert "ingress at destination shop-db-prod (10.1.1.31): deny" in result.stdout
    assert result.stdout.count("application tier: implicit deny") == 2


def test_trace_readable_shows_a_differing_shadow_verdict() -> None:
    result = run_tagwall(
        "trace",
        "-f",
        THREE_TIER,
        "-f",
        GUARDRAILS,
        "--from",
        "203.0.113.5",
        "--to",
        "crm-web-dev",
        "--service",
        "tcp/443",
    )
    assert result.returncode == 0, result.stderr
    assert "would-deny" in result.stdout.splitlines()[0]
    assert re.search(
        r"shadow \(audit policies enforced\): deny, admin tier: rule "
        r"no-partners-on-dev of policy staged-lockdown",
        result.stdout,
    )


def test_bad_manifest_names_file_object_and_field() -> None:
    bad = "apiVersion: tagwall/v1\nkind: Workload\nmetadata: {name: w}\nspec: {kind: vn}\n"
    result = run_tagwall("trace", "-f", "-", "--from", "w", "--to", "w", "-s", "tcp/1", stdin=bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "<stdin>#0" in result.stderr and "Workload/w" in result.stderr
    assert "spec.kind" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_workload_and_missing_file_are_errors_not_tracebacks() -> None:
    result = run_tagwall(
        "trace", "-f", THREE_TIER, "--from", "nope", "--to", "shop-web-prod", "-s", "tcp/443"
    )
    assert result.returncode == 1 and "'nope' does not exist" in result.stderr
    result = run_tagwall("reach", "-f", "no/such/file.yaml", "-s", "tcp/443")
    assert result.returncode == 1 and "no/such/file.yaml: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_service_is_a_usage_error() -> None:
    result = run_tagwall("reach", "-f", THREE_TIER, "--service", "tcp/http-alt")
    assert result.returncode == 2
    assert "needs a port" not in result.stdout and "tcp/http-alt" in result.stderr


def test_convert_prints_native_manifests() -> None:
    result = run_tagwall("convert", "-f", "examples/kubernetes/shop.yaml")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs and all(d["apiVersion"] == "tagwall/v1" for d in docs)
    as_json = json.loads(
        run_tagwall("convert", "-f", "examples/kubernetes/shop.yaml", "-o", "json").stdout
    )
    assert as_json["kind"] == "List" and as_json["items"] == docs


def test_compile_prints_the_program_of_one_host() -> None:
    result = run_tagwall("compile", "-f", THREE_TIER, "--host", "host-3", "-o", "json")
    assert result.returncode == 0, result.stderr
    program = json.loads(result.stdout)
    assert program["host"] == "host-3"
    addresses = {a for i in program["interfaces"] for a in i["addresses"]}
    assert addresses == {
        "10.1.2.11",
        "10.1.2.21",
        "10.1.2.31",
        "10.2.2.11",
        "10.2.2.21",
        "10.2.2.31",
    }
