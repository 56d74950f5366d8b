"""The controller's analytics role: one flow store, endpoints that follow the live
configuration, and the collectors that feed them.

Who calls what: the controller starts it with the configuration in force (``start``), calls
``update`` with each new revision's configuration, and ``close`` on shutdown; collector
threads call ``ingest`` with what their decoders produced, the API ``ingest_reports`` with
what agents sent (paired and audited by ``_reports.py``); the API calls the queries (on the
store, through ``store``).  ``_lock`` serializes enrichment against ``update``, so a batch is
enriched against one revision's endpoints, never half of two.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..control import FlowReport
from ..model import Config
from ._enrich import Endpoints
from ._ingest import Collectors, CollectorSpec, CollectorStatistics
from ._reports import ReportPairing, Row, reports_batches
from ._store import FlowStore, StoreStatistics
from .collectors import Decoded

__all__ = ["AgentReportStatistics", "Analytics", "AnalyticsStatistics"]

log = logging.getLogger("tagwall.analytics")


@dataclass(frozen=True, slots=True)
class AnalyticsStatistics:
    revision: int  # of the configuration flows are enriched against now
    store: StoreStatistics
    collectors: tuple[CollectorStatistics, ...]
    agents: AgentReportStatistics


@dataclass(frozen=True, slots=True)
class AgentReportStatistics:
    stored_through: dict[str, int]  # host → the last report stored, of the spool it last used
    spool_dropped: dict[str, int]  # host → reports its spool dropped, full (as it last said)
    waiting: int  # reports waiting for their partner from another host
    duplicates: int  # destination-side reports dropped: the source side counted the packets


class Analytics:
    """Flows in the DuckDB file ``path``, from ``collectors`` (and, through ``ingest``, from
    any other source).  Raises ``OSError`` from ``start`` when a collector port is taken."""

    def __init__(
        self,
        path: Path,
        *,
        collectors: Sequence[CollectorSpec] = (),
        retention_days: int = 30,
        pairing_window_s: float = 30.0,
    ) -> None:
        self.store = FlowStore(path, retention_days=retention_days)
        self._specs = list(collectors)
        self._lock = threading.Lock()
        self._endpoints: Endpoints | None = None
        self._revision = 0
        self._collectors: Collectors | None = None
        self._config: Config | None = None
        # Agents' reports: pairing of two hosts' halves, and per agent spool the last sequence
        # number stored (a batch sent again after a lost answer is stored once).  ``_reports_lock``
        # orders them; ``_expiry`` stores the halves whose partner did not come.
        self._reports_lock = threading.Lock()
        self._pairing = ReportPairing(window_s=pairing_window_s)
        # (host, spool) → accepted through: queued with its progress, committed unless the
        # store is failing (then retried, and ingest_reports answers only once committed)
        self._progress: dict[tuple[str, str], int] = {}
        self._current_spool: dict[str, str] = {}  # host → the spool it last sent from
        self._spool_dropped: dict[str, int] = {}
        self._stopping = threading.Event()
        self._expiry = threading.Thread(target=self._expire_loop, name="flow-pairing", daemon=True)

    def start(self, config: Config, revision: int = 0) -> None:
        """Enrich against ``config`` (of ``revision``) and start the collectors."""
        with self._lock:
            self._endpoints = self.store.endpoints(config)
            self._revision = revision
            self._config = config
        with self._reports_lock:
            self._progress = self.store.agent_progress()
        self._expiry.start()
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
            self._config = config

    def ingest(self, decoded: Decoded) -> None:
        with self._lock:
            endpoints = self._endpoints
            if endpoints is None:
                raise RuntimeError("Analytics.ingest before start")
            for batch in decoded.batches:
                self.store.append(batch, endpoints)
        if decoded.messages:
            self.store.append_messages(decoded.messages)

    def ingest_reports(
        self,
        host: str,
        first_seq: int,
        reports: Sequence[FlowReport],
        *,
        spool: str = "",
        dropped: int = 0,
    ) -> int:
        """Store an agent's reports numbered ``first_seq, first_seq + 1, …`` of its spool
        ``spool`` (those already accepted are skipped, also across restarts: the progress is
        in the store); the last sequence number stored, once it is committed.  Reports waiting
        for a partner count as stored: they are stored alone if none comes.  ``dropped``: the
        agent's count of reports its full spool dropped.

        Raises ``StoreError`` when the commit fails.  The reports then stay queued with their
        progress and are retried, so they count as accepted: a resend is not queued again,
        and is answered only once they are committed."""
        with self._reports_lock:
            self._spool_dropped[host] = max(dropped, self._spool_dropped.get(host, 0))
            self._current_spool[host] = spool
            last = first_seq + len(reports) - 1
            done = self._progress.get((host, spool), first_seq - 1)
            fresh = reports[max(0, done - first_seq + 1) :]
            if fresh:
                config = self._current_config()
                now_ms = time.time_ns() // 1_000_000
                rows = self._pairing.take(config, host, fresh, now_ms)
                with self._lock:
                    endpoints = self._endpoints
                    assert endpoints is not None
                    batches = reports_batches(config, rows)
                    self.store.append_agent_reports(batches, endpoints, host, spool, last)
                self._progress[(host, spool)] = last
            self.store.flush()  # the rows and the progress in one transaction, or a resend's
            return max(done, last)

    def _current_config(self) -> Config:
        with self._lock:
            if self._config is None:
                raise RuntimeError("Analytics.ingest_reports before start")
            return self._config

    def _store_rows(self, config: Config, rows: Sequence[Row]) -> None:
        if not rows:
            return
        with self._lock:
            endpoints = self._endpoints
            assert endpoints is not None
            for batch in reports_batches(config, rows):
                self.store.append(batch, endpoints)

    def _expire_loop(self) -> None:
        while not self._stopping.wait(1.0):
            with self._reports_lock:
                rows = self._pairing.expire(time.time_ns() // 1_000_000)
                self._store_rows(self._current_config(), rows)

    @property
    def ports(self) -> dict[str, int]:
        """protocol → the UDP port its collector listens on."""
        return dict(self._collectors.ports) if self._collectors else {}

    def statistics(self) -> AnalyticsStatistics:
        collectors = self._collectors.statistics() if self._collectors else []
        with self._reports_lock:
            agents = AgentReportStatistics(
                {h: self._progress[(h, s)] for h, s in self._current_spool.items()},
                dict(self._spool_dropped),
                self._pairing.waiting,
                self._pairing.dropped_duplicates,
            )
        return AnalyticsStatistics(
            self._revision, self.store.statistics(), tuple(collectors), agents
        )

    def close(self) -> None:
        """Stop the collectors (their last bursts are stored), then flush and close the
        store: nothing accepted is lost."""
        if self._collectors is not None:
            self._collectors.stop()
            self._collectors = None
        self._stopping.set()
        if self._expiry.is_alive():
            self._expiry.join()
        with self._reports_lock:
            if self._config is not None:
                self._store_rows(self._config, self._pairing.drain())
        self.store.close()
