"""Agents: the control stream (WebSocket) and every host's enforcement state.

``GET /api/v1/agents`` lists every host the configuration implies or an agent reported, with
its state (in-sync, pending, rejected, disconnected), desired and realized revision and
controller; ``GET /api/v1/agents/{host}`` one of them.  ``/api/v1/agents/stream`` is the
control protocol of ``tagwall.control`` (its module docstring has the messages).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, WebSocket, WebSocketDisconnect

from ..control.hub import ProgramHub
from ..errors import NotFoundError

__all__ = ["agents_router"]

log = logging.getLogger("tagwall.control")


def agents_router(hub: ProgramHub) -> APIRouter:
    router = APIRouter(tags=["agents"])

    @router.get("/agents", summary="Every host's enforcement state")
    def list_agents() -> dict[str, Any]:
        return {"revision": hub.revision, "items": [v.as_dict() for v in hub.views()]}

    @router.get("/agents/{host}", summary="One host's enforcement state")
    def get_agent(host: Annotated[str, Path(min_length=1)]) -> dict[str, Any]:
        for view in hub.views():
            if view.host == host:
                return view.as_dict()
        raise NotFoundError("host", host)

    @router.websocket("/agents/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            hello = json.loads(await websocket.receive_text())
            if not isinstance(hello, dict):
                raise ValueError("the first message must be a JSON object")
            session = await hub.attach(hello, websocket.send_text)
        except (ValueError, WebSocketDisconnect) as exc:
            log.info("agent stream refused: %s", exc)
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                if not isinstance(message, dict):
                    raise ValueError("messages must be JSON objects")
                await hub.receive(session, message)
        except WebSocketDisconnect:
            pass
        except ValueError as exc:
            log.info("agent %s sent a bad message: %s", session.host, exc)
            await websocket.close(code=1008, reason=str(exc)[:120])
        finally:
            await hub.detach(session)

    return router
