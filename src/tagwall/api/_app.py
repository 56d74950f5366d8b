"""``create_app``: the FastAPI application, its routers and its one way of reporting errors.

Every error a client sees is ``application/problem+json`` (RFC 9457) with the ``problems`` list
of ``tagwall.errors.Problem``:

- ``TagwallError`` subclasses: ``status`` and ``title`` from the class (errors.py), ``detail``
  the message, ``problems`` the error's own (``ValidationError``) or none;
- FastAPI request validation (a missing field, a query parameter of the wrong type): 422, one
  problem per error, ``path`` naming the field (``body.service``, ``query.dryRun``);
- Starlette HTTP errors (unknown route 404, wrong method 405, unparsable JSON 400): their status.

Bad input is a 4xx, never a 5xx: tests/api/test__app.py fuzzes every route to hold us to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..analytics import Analytics
from ..control.hub import ProgramHub
from ..errors import Problem, TagwallError, ValidationError
from ..store import Store
from ._agents import agents_router
from ._drafts import drafts_router
from ._flows import flows_router
from ._http import (
    MAX_BODY_BYTES,
    BodySizeLimit,
    HttpError,
    ProblemOut,
    SafeJSONResponse,
    problem_response,
)
from ._live import LiveConfig
from ._objects import objects_router
from ._query import query_router
from ._services import ServiceBoard, services_router

__all__ = ["API_PREFIX", "create_app"]

log = logging.getLogger("tagwall.api")

API_PREFIX = "/api/v1"

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemOut, "content": {"application/problem+json": {}}}
    for status in (400, 404, 409, 413, 415, 422, 503)
}


class HealthOut(BaseModel):
    status: str
    revision: int


def create_app(
    store: Store,
    *,
    title: str = "tagwall controller",
    max_body_bytes: int = MAX_BODY_BYTES,
    controller_id: str = "controller",
    analytics: Analytics | None = None,
) -> FastAPI:
    """The controller's REST API over ``store``; the caller owns (and closes) the store.

    ``max_body_bytes`` caps every request body (inclusive); larger bodies get 413.  While the
    app runs (its lifespan), a ``ProgramHub`` follows the store and streams programs to
    agents; ``controller_id`` names this controller in the agents' status.  With
    ``analytics`` (not started; the app starts it, follows every revision with it and closes
    it) the flow routes answer from its store.
    """
    live = LiveConfig(store)
    hub = ProgramHub(store, live.config, controller_id)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(hub.run(), name="program-hub")]
        if analytics is not None:
            revision, config = await asyncio.to_thread(live.config)
            await asyncio.to_thread(analytics.start, config, revision)
            tasks.append(asyncio.create_task(follow(analytics, revision), name="analytics"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if analytics is not None:
                await asyncio.to_thread(analytics.close)

    async def follow(analytics: Analytics, revision: int) -> None:
        """Enrich flows against each revision after ``revision``'s workloads and tags."""
        while True:
            async for _event in store.awatch(revision):
                break
            try:
                revision, config = await asyncio.to_thread(live.config)
            except TagwallError as exc:  # a foreign writer stored an invalid configuration
                log.error("analytics keeps revision %s's endpoints: %s", revision, exc)
                revision = store.revision()
                continue
            await asyncio.to_thread(analytics.update, config, revision)

    app = FastAPI(
        title=title,
        version="1",
        summary="Intent-driven distributed firewall: policy objects, drafts, traces, programs.",
        default_response_class=SafeJSONResponse,
        responses=_ERRORS,
        lifespan=lifespan,
    )
    app.state.live = live
    app.state.hub = hub
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(TagwallError, _tagwall_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    # Query routes first: /hosts/{host}/program must win over /hosts/{name:path}.
    app.include_router(query_router(live), prefix=API_PREFIX)
    app.include_router(drafts_router(live), prefix=API_PREFIX)
    app.include_router(agents_router(hub), prefix=API_PREFIX)
    app.include_router(flows_router(analytics), prefix=API_PREFIX)
    app.include_router(services_router(live.config, ServiceBoard()), prefix=API_PREFIX)
    app.include_router(objects_router(live), prefix=API_PREFIX)

    @app.get("/healthz", summary="Liveness: the store answers", tags=["health"])
    def healthz() -> HealthOut:
        return HealthOut(status="ok", revision=store.revision())

    return app


# -- exception handlers -----------------------------------------------------------------------
# Starlette types handlers as taking ``Exception``; each narrows to the class it is bound to.


async def _tagwall_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TagwallError)  # bound to TagwallError above
    return problem_response(exc)


async def _request_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # bound to RequestValidationError above
    problems = [
        Problem(
            str(err.get("msg", "invalid")),
            path=".".join(str(part) for part in err.get("loc", ())),
            value=_scalar(err.get("input")),
        )
        for err in exc.errors()
    ]
    return problem_response(ValidationError(problems))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # bound to StarletteHTTPException above
    response = problem_response(HttpError(exc.status_code, _phrase(exc.status_code), exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)  # e.g. Allow on 405
    return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def _scalar(value: object) -> object:
    """Echo small scalar inputs; anything else would just repeat the request body."""
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, int | float | bool):
        return value
    return None
