"""HTTP-only concerns shared by the routers: manifest bodies, size cap, problem+json shapes.

Errors that only exist at the HTTP edge (wrong media type, body too large, body not UTF-8) are
``TagwallError`` subclasses too, so that one exception handler renders every error the same
way (``_app.tagwall_error_handler``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Problem, TagwallError
from ..model import Document, parse_documents

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "MANIFEST_OPENAPI",
    "MAX_BODY_BYTES",
    "BadRequestError",
    "BodySizeLimit",
    "BodyTooLargeError",
    "HttpError",
    "ProblemOut",
    "ProblemResponse",
    "SafeJSONResponse",
    "UnsupportedMediaTypeError",
    "manifest_text",
    "parse_manifests",
    "problem_response",
]

MAX_BODY_BYTES = 16 * 1024 * 1024  # 16 MiB, inclusive: a body of exactly this size is accepted

MANIFEST_MEDIA_TYPES = (
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "application/json",
)

# OpenAPI for routes that read a manifest body themselves (not through a pydantic model).
MANIFEST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One or many manifests: YAML documents separated by `---`, a JSON "
        "object, a JSON list, or a `kind: List` with `items`.",
        "content": {
            media: {"schema": {"type": "string" if "yaml" in media else "object"}}
            for media in MANIFEST_MEDIA_TYPES
        },
    }
}


class BadRequestError(TagwallError):
    status = 400
    title = "bad request"


class UnsupportedMediaTypeError(TagwallError):
    status = 415
    title = "unsupported media type"


class HttpError(TagwallError):
    """An error Starlette raised (unknown route, wrong method, unparsable JSON), re-dressed."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        self.status = status
        self.title = title
        super().__init__(detail)


class BodyTooLargeError(TagwallError):
    status = 413
    title = "request body too large"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(f"the request body exceeds {max_bytes} bytes")


class ProblemItemOut(BaseModel):
    reason: str
    source: str | None = None
    kind: str | None = None
    name: str | None = None
    path: str | None = None
    value: Any = None
    allowed: list[str] | None = None


class ProblemOut(BaseModel):
    """RFC 9457 problem details, plus every ``Problem`` found (``tagwall.errors``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    problems: list[ProblemItemOut] = Field(default_factory=list)


def parse_manifests(text: str, source: str = "<api>") -> list[Document]:
    """``parse_documents`` for a request body, named ``<api>`` in every ``Problem``.

    The limits on untrusted YAML and JSON (alias expansion, cycles, nesting) are
    ``parse_documents``'s own, so the CLI and every other caller share them.
    """
    return parse_documents(text, source)


async def manifest_text(request: Request) -> str:
    """The request body as text, after checking its media type (FastAPI dependency).

    The size cap is enforced by ``BodySizeLimit`` before this reads anything.
    """
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in MANIFEST_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(
            f"manifests are sent as {', '.join(MANIFEST_MEDIA_TYPES)}; got {media or 'nothing'!r}"
        )
    body = await request.body()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(
            f"the body is not UTF-8 text: byte {exc.start} is {body[exc.start : exc.start + 1]!r}"
        ) from exc


class BodySizeLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413.

    A declared ``Content-Length`` over the cap is refused before the app runs.  A chunked body
    is counted as it is received; the receive call that crosses the cap raises a 413
    ``HTTPException`` inside the app, where the exception handlers render it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value.decode("latin-1").strip()
                if not declared.isdigit() or int(declared) > self.max_bytes:
                    await self._refuse(scope, receive, send, declared)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException, because FastAPI turns any other exception raised while
                    # it reads a JSON body into a 400; ``_app._http_error`` renders it.
                    raise HTTPException(413, str(BodyTooLargeError(self.max_bytes)))
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, declared: str) -> None:
        if declared.isdigit():
            error: TagwallError = BodyTooLargeError(self.max_bytes)
        else:
            error = BadRequestError(f"Content-Length {declared!r} is not a byte count")
        await problem_response(error)(scope, receive, send)


def problem_response(error: TagwallError, problems: list[Problem] | None = None) -> JSONResponse:
    """``error`` as ``application/problem+json``; ``problems`` defaults to the error's own."""
    if problems is None:
        problems = list(getattr(error, "problems", ()))
    body = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": str(error),
        "problems": [p.as_dict() for p in problems],
    }
    return ProblemResponse(body, status_code=error.status)


class SafeJSONResponse(JSONResponse):
    """JSON that any input can be echoed in: ASCII-escaped (lone surrogates from a JSON body
    stay encodable) and non-finite floats written as strings (JSON has no NaN)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            _finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")


class ProblemResponse(SafeJSONResponse):
    media_type = "application/problem+json"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
