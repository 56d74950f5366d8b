"""Flows: what the analytics role stored, asked in tag terms.

``GET /api/v1/flows`` (newest first), ``/flows/graph`` (nodes and edges by any tag types),
``/flows/top`` (top talkers), ``/flows/violations`` (denied and would-deny flows by violator
and rule) and ``/flows/collectors`` (what each collector, the agents' reports and the store
counted); agents ``POST /flows/agent`` their flow reports.  Every route
takes the same filter parameters; a bad one is a 422 naming the parameter.  Without an
analytics role (``tagwall controller --flows off``) the routes answer 404 with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Query

from ..analytics import Analytics, FilterError, FlowFilter
from ..control import REPORTS_PATH, FlowReport, ReportError
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
            "agents": dataclasses.asdict(stats.agents),
        }

    @router.post(REPORTS_PATH.removeprefix("/api/v1"), summary="An agent's flow reports")
    def agent_reports(body: Annotated[dict[str, Any], Body()]) -> dict[str, int]:
        """``tagwall.control._flow_reports`` is the contract; answers once they are stored."""
        analytics = need()
        host, first_seq, spool, dropped, reports = _reports(body)
        stored = analytics.ingest_reports(host, first_seq, reports, spool=spool, dropped=dropped)
        return {"stored_through": stored}

    return router


def _reports(body: dict[str, Any]) -> tuple[str, int, str, int, list[FlowReport]]:
    host, first_seq, reports = body.get("host"), body.get("first_seq"), body.get("reports")
    spool, dropped = body.get("spool", ""), body.get("dropped", 0)
    problems = []
    if not isinstance(spool, str):
        problems.append(Problem("must be a string", path="spool", value=spool))
    if not isinstance(dropped, int) or isinstance(dropped, bool) or dropped < 0:
        problems.append(Problem("must be an integer >= 0", path="dropped", value=dropped))
    if not isinstance(host, str) or not host:
        problems.append(Problem("must be a non-empty string", path="host", value=host))
    if not isinstance(first_seq, int) or isinstance(first_seq, bool) or first_seq < 1:
        problems.append(Problem("must be an integer >= 1", path="first_seq", value=first_seq))
    if not isinstance(reports, list):
        problems.append(Problem("must be a list of reports", path="reports"))
    if problems:
        raise ValidationError(problems)
    assert isinstance(host, str) and isinstance(first_seq, int) and isinstance(reports, list)
    assert isinstance(dropped, int) and isinstance(spool, str)
    try:
        parsed = [FlowReport.from_wire(r, f"reports[{i}]") for i, r in enumerate(reports)]
    except ReportError as exc:
        raise ValidationError([Problem(exc.reason, path=exc.field)]) from exc
    return host, first_seq, spool, dropped, parsed


def _ask(question: Callable[[], T]) -> T:
    """Run a store query; a ``FilterError`` it raises (a bad tag type, metric…) is a 422."""
    try:
        return question()
    except FilterError as exc:
        raise _bad(exc) from exc
