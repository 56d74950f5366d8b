"""Flows: what the analytics role stored, asked in tag terms.

``GET /api/v1/flows`` (newest first), ``/flows/graph`` (nodes and edges by any tag types),
``/flows/top`` (top talkers), ``/flows/violations`` (denied and would-deny flows by violator
and rule) and ``/flows/collectors`` (what each collector and the store counted).  Every route
takes the same filter parameters; a bad one is a 422 naming the parameter.  Without an
analytics role (``tagwall controller --flows off``) the routes answer 404 with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query

from ..analytics import Analytics, FilterError, FlowFilter
from ..errors import Problem, ValidationError
from ._http import HttpError

__all__ = ["flows_router"]

T = TypeVar("T")


def _filter(
    since_ms: Annotated[
        int | None, Query(description="flows that started at or after (Unix ms)")
    ] = None,
    until_ms: Annotated[
        int | None, Query(description="flows that started before (Unix ms)")
    ] = None,
    tag: Annotated[list[str], Query(description="key=value at either end; repeatable")] = [],  # noqa: B006
    src_tag: Annotated[list[str], Query(description="key=value at the source")] = [],  # noqa: B006
    dst_tag: Annotated[list[str], Query(description="key=value at the destination")] = [],  # noqa: B006
    workload: Annotated[str | None, Query(description="either end is this workload")] = None,
    verdict: Annotated[
        str | None, Query(description="allow, deny, would-deny, would-allow")
    ] = None,
    policy: Annotated[str | None, Query(description="the deciding policy")] = None,
    rule: Annotated[str | None, Query(description="the deciding rule")] = None,
    proto: Annotated[str | None, Query(description="tcp, udp, icmp, … or a number")] = None,
    port: Annotated[int | None, Query(description="destination port")] = None,
) -> FlowFilter:
    try:
        return FlowFilter.of(
            since_ms=since_ms,
            until_ms=until_ms,
            tags=tag,
            src_tags=src_tag,
            dst_tags=dst_tag,
            workload=workload,
            verdict=verdict,
            policy=policy,
            rule=rule,
            proto=proto,
            port=port,
        )
    except FilterError as exc:
        raise _bad(exc) from exc


def _bad(exc: FilterError) -> ValidationError:
    return ValidationError(
        [Problem(exc.reason, path=exc.field, value=exc.value, allowed=tuple(exc.allowed))]
    )


Flt = Annotated[FlowFilter, Depends(_filter)]


def flows_router(analytics: Analytics | None) -> APIRouter:
    router = APIRouter(tags=["flows"])

    def need() -> Analytics:
        if analytics is None:
            raise HttpError(404, "no analytics", "this controller runs without a flow store")
        return analytics

    @router.get("/flows", summary="Flows, newest first")
    def flows(f: Flt, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict[str, Any]:
        items = _ask(lambda: need().store.flows(f, limit))
        return {"items": [r.as_dict() for r in items]}

    @router.get("/flows/graph", summary="The graph of who talks to whom, by tag types")
    def graph(
        f: Flt,
        by: Annotated[list[str], Query(description="tag types; repeatable")] = ["application"],  # noqa: B006
    ) -> dict[str, Any]:
        return _ask(lambda: need().store.graph(by, f)).as_dict()

    @router.get("/flows/top", summary="Top talkers")
    def top(
        f: Flt,
        by: str = "workload",
        metric: Annotated[str, Query(description="bytes or flows")] = "bytes",
        n: Annotated[int, Query(ge=1, le=1000)] = 10,
    ) -> dict[str, Any]:
        talkers = _ask(lambda: need().store.top_talkers(by, f, n, metric))
        return {"by": by, "metric": metric, "items": [dataclasses.asdict(t) for t in talkers]}

    @router.get("/flows/violations", summary="Denied and would-deny flows by violator and rule")
    def violations(f: Flt, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict[str, Any]:
        items = _ask(lambda: need().store.violations(f, limit))
        return {"items": [v.as_dict() for v in items]}

    @router.get("/flows/collectors", summary="What the collectors and the flow store counted")
    def collectors() -> dict[str, Any]:
        stats = need().statistics()
        return {
            "revision": stats.revision,
            "store": dataclasses.asdict(stats.store),
            "collectors": [dataclasses.asdict(c) for c in stats.collectors],
        }

    return router


def _ask(question: Callable[[], T]) -> T:
    """Run a store query; a ``FilterError`` it raises (a bad tag type, metric…) is a 422."""
    try:
        return question()
    except FilterError as exc:
        raise _bad(exc) from exc
