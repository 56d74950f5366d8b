"""The tables ``describe`` adds above a manifest: a policy's rules, a set's policies.

Works on manifests as the API returns them (raw ``spec``), so it shows what was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from ._common import compact, records_table

__all__ = ["describe_extra"]


def _endpoint(end: object) -> str:
    if not isinstance(end, Mapping):
        return "any"
    if end.get("any"):
        return "any"
    parts = [f"{key}={compact(value)}" if key != "tags" else str(value)
             for key, value in end.items()]  # fmt: skip
    return " ".join(parts)


def _rules(spec: Mapping[str, Any]) -> Table:
    rows = []
    for rule in spec.get("rules") or []:
        if not isinstance(rule, Mapping):
            continue
        services = rule.get("services")
        rows.append(
            {
                "seq": rule.get("sequence"),
                "rule": rule.get("name"),
                "from": _endpoint(rule.get("from")),
                "dir": rule.get("direction", ">"),
                "to": _endpoint(rule.get("to")),
                "services": compact(services) if services else rule.get("serviceGroup", "any"),
                "action": rule.get("action", "allow") + (" +log" if rule.get("log") else ""),
                "matchTags": rule.get("matchTags"),
            }
        )
    return records_table(rows, title=f"rules (mode {spec.get('mode', 'enforce')})")


def _policies(spec: Mapping[str, Any]) -> Table:
    rows = [dict(p) for p in spec.get("policies") or [] if isinstance(p, Mapping)]
    applies = "every workload" if spec.get("all") else f"selector {spec.get('selector')!r}"
    title = (
        f"tier {spec.get('tier', 'application')}, priority {spec.get('priority', 100)}, "
        f"{applies}, directions {compact(spec.get('directions') or ['ingress', 'egress'])}"
    )
    return records_table(rows, title=title)


def describe_extra(kind: str, manifest: Mapping[str, Any]) -> list[Table]:
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        return []
    if kind == "FirewallPolicy":
        return [_rules(spec)]
    if kind == "ApplicationPolicySet":
        return [_policies(spec)]
    return []
