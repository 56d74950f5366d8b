"""Service instances as they run: health and steered traffic, reported by the agents.

``POST /api/v1/status/serviceinstances`` — an agent's report of the service workloads on its
host: ``{"host": H, "services": [{"instance": "fw-1", "workload": "fw-a", "healthy": true,
"packets": 120, "flows": 4}, …]}`` (counters since the agent's data path began steering
through that workload).  Each controller keeps the last report of each host in memory; agents
report to every controller they know, so any of them answers.

``GET /api/v1/status/serviceinstances`` — every ServiceInstance of the configuration with its
template's mode, function and ``whenAllDown``, and per service workload: its host, healthy
(null while no fresh report says), packets and flows steered into it, and when that was
reported.  An instance is ``up`` when every workload is healthy, ``degraded`` when some are,
``down`` when none is, ``unknown`` while some are not reported.  A report older than
``STALE_S`` counts as none (that host's agent is gone).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body

from ..errors import Problem, ValidationError
from ..model import Config, Ref

__all__ = ["STALE_S", "ServiceBoard", "services_router"]

STALE_S = 15.0
_FIELDS = {"instance": str, "workload": str, "healthy": bool, "packets": int, "flows": int}


@dataclass(frozen=True, slots=True)
class _Report:
    at: float  # time.time()
    services: tuple[dict[str, Any], ...]


class ServiceBoard:
    """The last report of each host.  Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, _Report] = {}

    def put(self, host: str, services: list[dict[str, Any]]) -> None:
        with self._lock:
            self._reports[host] = _Report(self._clock(), tuple(services))

    def fresh(self) -> dict[tuple[str, str], tuple[float, dict[str, Any]]]:
        """(instance, workload) → (reported at, entry) of every report younger than
        ``STALE_S``."""
        now = self._clock()
        with self._lock:
            reports = list(self._reports.values())
        return {
            (s["instance"], s["workload"]): (r.at, s)
            for r in reports
            if now - r.at < STALE_S
            for s in r.services
        }


def services_router(config: Callable[[], tuple[int, Config]], board: ServiceBoard) -> APIRouter:
    router = APIRouter(tags=["services"])

    @router.post("/status/serviceinstances", summary="An agent's report of its service workloads")
    def report(body: Annotated[dict[str, Any], Body()]) -> dict[str, int]:
        host, services = _report(body)
        board.put(host, services)
        return {"services": len(services)}

    @router.get("/status/serviceinstances", summary="Every service instance's health and traffic")
    def status() -> dict[str, Any]:
        revision, current = config()
        fresh = board.fresh()
        items = [
            _instance(current, ref, fresh)
            for ref in sorted(current.service_instances, key=lambda r: (r.project or "", r.name))
        ]
        return {"revision": revision, "items": items}

    return router


def _report(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    host, services = body.get("host"), body.get("services")
    if not isinstance(host, str) or not host:
        raise ValidationError([Problem("must be a non-empty string", path="host", value=host)])
    if not isinstance(services, list):
        raise ValidationError([Problem("must be a list", path="services")])
    for i, entry in enumerate(services):
        if not isinstance(entry, dict):
            raise ValidationError([Problem("must be an object", path=f"services[{i}]")])
        for name, kind in _FIELDS.items():
            value = entry.get(name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValidationError(
                    [Problem(f"must be {kind.__name__}", path=f"services[{i}].{name}", value=value)]
                )
    return host, [{name: entry[name] for name in _FIELDS} for entry in services]


def _instance(
    config: Config, ref: Ref, fresh: dict[tuple[str, str], tuple[float, dict[str, Any]]]
) -> dict[str, Any]:
    instance = config.service_instances[ref]
    template = config.service_templates.get(instance.template)
    workloads = []
    for name in instance.workloads:
        workload = config.workloads.get(name)
        at, entry = fresh.get((str(ref), name), (None, None))
        workloads.append(
            {
                "workload": name,
                "host": workload.host if workload else None,
                "healthy": entry["healthy"] if entry else None,
                "packets": entry["packets"] if entry else None,
                "flows": entry["flows"] if entry else None,
                "reportedAt": datetime.fromtimestamp(at, UTC).isoformat() if at else None,
            }
        )
    known = [w["healthy"] for w in workloads if w["healthy"] is not None]
    if len(known) < len(workloads) or not workloads:
        health = "unknown"
    elif all(known):
        health = "up"
    else:
        health = "degraded" if any(known) else "down"
    return {
        "name": ref.name,
        "project": ref.project,
        "template": str(instance.template),
        "mode": template.mode.value if template else None,
        "function": template.function.value if template else None,
        "whenAllDown": template.when_all_down.value if template else None,
        "health": health,
        "workloads": workloads,
    }
