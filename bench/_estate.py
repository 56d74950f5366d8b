"""What the benchmarks share: the tag vocabulary of their generated estates, manifest and
address helpers, the random tier rule they all draw, ports, percentiles, and how a result is
printed.

Each benchmark keeps its own estate (sizes, placement, services, seeds); drawing rules
through one function keeps the draws, and so every recorded figure, reproducible.
"""

from __future__ import annotations

import json
import random
import socket
import sys
from collections.abc import Sequence
from typing import Any

TIERS = ["web", "app", "db", "cache"]
DEPLOYMENTS = ["prod", "staging", "dev"]
SITES = ["ams", "fra", "lon", "nyc", "sfo"]
LABELS = [f"l{i}" for i in range(10)]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def say(msg: str) -> None:
    """Progress, on stderr (stdout carries the one JSON object)."""
    print(msg, file=sys.stderr, flush=True)


def doc(kind: str, name: str, spec: dict[str, Any], project: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if project:
        meta["project"] = project
    return {"apiVersion": "tagwall/v1", "kind": kind, "metadata": meta, "spec": spec}


def address(i: int) -> str:
    """The ``i``-th address of 10.0.0.0/8."""
    return f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"


def workload_tags(rng: random.Random, applications: int = 100) -> dict[str, Any]:
    """Tags of one generated workload: an application, a tier, a deployment, a site, and for
    30% two labels."""
    tags: dict[str, Any] = {
        "application": f"app{rng.randrange(applications)}",
        "tier": rng.choice(TIERS),
        "deployment": rng.choice(DEPLOYMENTS),
        "site": rng.choice(SITES),
    }
    if rng.random() < 0.3:
        tags["label"] = rng.sample(LABELS, 2)
    return tags


def tier_rule(
    rng: random.Random,
    index: int,
    *,
    services: Sequence[str],
    actions: Sequence[str],
    p_group: float,
    p_label: float,
) -> dict[str, Any]:
    """A rule from one tier to another tier of a deployment; half with ``matchTags:
    [application, deployment]``, else with probability ``p_group`` from the address group
    ``partners``, else with ``p_label`` to a ``site,label`` selector."""
    a, b = rng.sample(TIERS, 2)
    rule: dict[str, Any] = {
        "name": f"r{index}",
        "sequence": (index + 1) * 10,
        "from": {"tags": f"tier={a}"},
        "to": {"tags": f"tier={b},deployment={rng.choice(DEPLOYMENTS)}"},
        "services": [rng.choice(services)],
        "action": rng.choice(actions),
    }
    if rng.random() < 0.5:
        rule["matchTags"] = ["application", "deployment"]
    elif rng.random() < p_group:
        rule["from"] = {"addressGroup": "partners"}
    elif rng.random() < p_label:
        rule["to"] = {"tags": f"site={rng.choice(SITES)},label={rng.choice(LABELS)}"}
    return rule


def report(result: dict[str, Any], as_json: bool) -> None:
    """One JSON object, or one aligned ``key value`` line per figure."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result)) + 2
    for key, value in result.items():
        print(f"{key:{width}} {value}")
