"""The agent's report of its service workloads to the controllers: health and steered
traffic (``NftDatapath.service_status``), every ``interval_s``, to every controller it knows,
so that whichever one an operator asks (``tagwall get serviceinstances``) knows.

Best effort: a controller that does not answer misses that report and gets the next one; the
report is small (one entry per local service workload).  Nothing is sent while the host has no
service workload, except one empty report when the last one goes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

import httpx

__all__ = ["STATUS_PATH", "StatusReporter"]

log = logging.getLogger("tagwall.agent")

STATUS_PATH = "/api/v1/status/serviceinstances"


class ServiceStatusSource(Protocol):
    def service_status(self) -> Sequence[Any]: ...  # dataclasses (``datapath.ServiceStatus``)


class StatusReporter:
    def __init__(
        self,
        host: str,
        controllers: Sequence[str],
        datapath: ServiceStatusSource,
        *,
        interval_s: float = 2.0,
    ) -> None:
        self.host = host
        self._urls = [u.rstrip("/") + STATUS_PATH for u in controllers]
        self._datapath = datapath
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service-status", daemon=True)
        self._failing: set[str] = set()  # controllers whose last report failed (logged once)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        sent_any = False
        with httpx.Client(timeout=self._interval_s) as client:
            while not self._stopping.wait(self._interval_s):
                services = [asdict(s) for s in self._datapath.service_status()]
                if not services and not sent_any:
                    continue
                sent_any = bool(services)
                body = {"host": self.host, "services": services}
                for url in self._urls:
                    self._send(client, url, body)

    def _send(self, client: httpx.Client, url: str, body: dict[str, Any]) -> None:
        try:
            client.post(url, json=body).raise_for_status()
        except httpx.HTTPError as exc:
            if url not in self._failing:
                log.info("service status to %s: %s", url, exc)
            self._failing.add(url)
        else:
            self._failing.discard(url)
