"""The controller's analytics role: one flow store, endpoints that follow the live
configuration, and the collectors that feed them.

Who calls what: the controller starts it with the configuration in force (``start``), calls
``update`` with each new revision's configuration, and ``close`` on shutdown; collector
threads call ``ingest`` with what their decoders produced; the API calls the queries (on the
store, through ``store``).  ``_lock`` serializes enrichment against ``update``, so a batch is
enriched against one revision's endpoints, never half of two.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..model import Config
from ._enrich import Endpoints
from ._ingest import Collectors, CollectorSpec, CollectorStatistics
from ._store import FlowStore, StoreStatistics
from .collectors import Decoded

__all__ = ["Analytics", "AnalyticsStatistics"]

log = logging.getLogger("tagwall.analytics")


@dataclass(frozen=True, slots=True)
class AnalyticsStatistics:
    revision: int  # of the configuration flows are enriched against now
    store: StoreStatistics
    collectors: tuple[CollectorStatistics, ...]


class Analytics:
    """Flows in the DuckDB file ``path``, from ``collectors`` (and, through ``ingest``, from
    any other source).  Raises ``OSError`` from ``start`` when a collector port is taken."""

    def __init__(
        self, path: Path, *, collectors: Sequence[CollectorSpec] = (), retention_days: int = 30
    ) -> None:
        self.store = FlowStore(path, retention_days=retention_days)
        self._specs = list(collectors)
        self._lock = threading.Lock()
        self._endpoints: Endpoints | None = None
        self._revision = 0
        self._collectors: Collectors | None = None

    def start(self, config: Config, revision: int = 0) -> None:
        """Enrich against ``config`` (of ``revision``) and start the collectors."""
        with self._lock:
            self._endpoints = self.store.endpoints(config)
            self._revision = revision
        if self._specs:
            collectors = Collectors(self._specs, self.ingest)
            collectors.start()
            self._collectors = collectors
            log.info(
                "collecting flows on %s",
                ", ".join(f"{p} udp/{n}" for p, n in sorted(collectors.ports.items())),
            )

    def update(self, config: Config, revision: int) -> None:
        """Enrich from now on against ``config``'s workloads and tags (of ``revision``)."""
        with self._lock:
            self._endpoints = self.store.endpoints(config)
            self._revision = revision

    def ingest(self, decoded: Decoded) -> None:
        with self._lock:
            endpoints = self._endpoints
            if endpoints is None:
                raise RuntimeError("Analytics.ingest before start")
            for batch in decoded.batches:
                self.store.append(batch, endpoints)
        if decoded.messages:
            self.store.append_messages(decoded.messages)

    @property
    def ports(self) -> dict[str, int]:
        """protocol → the UDP port its collector listens on."""
        return dict(self._collectors.ports) if self._collectors else {}

    def statistics(self) -> AnalyticsStatistics:
        collectors = self._collectors.statistics() if self._collectors else []
        return AnalyticsStatistics(self._revision, self.store.statistics(), tuple(collectors))

    def close(self) -> None:
        """Stop the collectors (their last bursts are stored), then flush and close the
        store: nothing accepted is lost."""
        if self._collectors is not None:
            self._collectors.stop()
            self._collectors = None
        self.store.close()
