"""Questions about the live configuration: trace one flow, the reach matrix, a host's program.

Each answer is computed from the ``Config`` validated for the current store revision
(``LiveConfig.config``), so reads never validate again unless the revision moved.  The
answers are the core's own JSON (``Verdict.as_dict()``, ``Program.as_dict()``); this module
only shapes requests and picks status codes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from ..compiler import compile_program
from ..errors import NotFoundError, Problem, ValidationError
from ..evaluator import make_flow, reach, trace
from ..model import FlowService, ServiceSyntaxError, parse_flow_service
from ._live import LiveConfig

__all__ = ["query_router"]


class TraceIn(BaseModel):
    """A flow to trace; ``from`` and ``to`` are workload names or IP addresses."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    from_: str = Field(alias="from", min_length=1, examples=["web-1"])
    to: str = Field(min_length=1, examples=["10.1.0.21"])
    service: str = Field(min_length=1, examples=["tcp/8080", "udp/53", "icmp/8"])


class ReachIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, examples=["tcp/443"])


class ReachOut(BaseModel):
    """``matrix[src][dst]``: is ``src`` → ``dst`` allowed (enforced verdict)?  Every ordered
    pair of workloads, self pairs included."""

    revision: int
    service: str
    matrix: dict[str, dict[str, bool]]


def query_router(live: LiveConfig) -> APIRouter:
    router = APIRouter(tags=["query"])

    @router.post("/trace", summary="Would this flow be allowed, and why? (both ends)")
    def trace_flow(request: TraceIn) -> dict[str, Any]:
        _, config = live.config()
        flow = make_flow(config, request.from_, request.to, _flow_service(request.service))
        return dict(trace(config, flow).as_dict())

    @router.post("/reach", summary="Reach matrix: every ordered pair of workloads")
    def reach_matrix(request: ReachIn) -> ReachOut:
        revision, config = live.config()
        service = _flow_service(request.service)
        return ReachOut(revision=revision, service=str(service), matrix=reach(config, service))

    @router.get("/hosts/{host}/program", summary="The compiled program of one host")
    def host_program(host: Annotated[str, Path(min_length=1)]) -> dict[str, Any]:
        _, config = live.config()
        if host not in config.host_names():
            raise NotFoundError("host", host)
        return compile_program(config, host).as_dict()

    return router


def _flow_service(text: str) -> FlowService:
    try:
        return parse_flow_service(text)
    except ServiceSyntaxError as exc:
        raise ValidationError(
            [Problem(exc.reason, path="service", value=exc.text, allowed=exc.allowed)]
        ) from exc
