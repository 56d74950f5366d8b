"""The flow store's read half: the questions operators ask (flows, top talkers, the graph by
tags, violations), each run on its own DuckDB cursor from any thread.

A query reads the last committed state (DuckDB is MVCC): the view ``flows`` and the segment
files it names as of that commit.  ``SegmentFiles.reading`` keeps those files on disk until the
query ends, even if compaction or retention unregisters them meanwhile.  The SQL is
``_queries.py``'s, the rows become results in ``_results.py``.

``Reader`` is ``FlowStore``'s read half: ``FlowStore.__init__`` sets the attributes declared on
it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb

from ._filters import FilterError, FlowFilter, Metric, check_count, check_group_type
from ._queries import (
    Query,
    flows_query,
    graph_query,
    oldest_of_newest_query,
    top_talkers_query,
    violations_query,
)
from ._results import (
    FlowRecord,
    Graph,
    Talker,
    Violation,
    flow_record,
    graph_of,
    talker_of,
    violation_of,
)
from ._segments import SegmentFiles

__all__ = ["Reader"]

_EVERY_FLOW = FlowFilter()


class Reader:
    """The queries of ``FlowStore`` (see the module docstring)."""

    # Set by FlowStore.__init__.
    _lock: threading.Condition
    _db: duckdb.DuckDBPyConnection
    _files: SegmentFiles

    def _check_open_locked(self) -> None:
        raise NotImplementedError  # FlowStore's

    def _rows(self, *queries: Query) -> list[tuple[Any, ...]]:
        """The rows of ``queries[-1]``, run after the others in one snapshot (a query's
        ``params`` may be a function of the previous query's rows)."""
        with self._lock:
            self._check_open_locked()
            cursor = self._db.cursor()
        try:
            with self._files.reading():
                cursor.begin()
                rows: list[tuple[Any, ...]] = []
                for query in queries:
                    rows = cursor.execute(query.sql, list(query.bind(rows))).fetchall()
                cursor.rollback()  # it only read
                return rows
        finally:
            cursor.close()

    def flows(self, filter: FlowFilter | None = None, limit: int = 100) -> list[FlowRecord]:
        """The newest ``limit`` (1-10,000) flows that ``filter`` picks, newest first."""
        f, limit = filter or _EVERY_FLOW, check_count("limit", limit, 10_000)
        rows = self._rows(oldest_of_newest_query(f, limit), flows_query(f, limit))
        return [flow_record(row) for row in rows]

    def top_talkers(
        self,
        by: str = "workload",
        filter: FlowFilter | None = None,
        n: int = 10,
        metric: Metric | str = Metric.BYTES,
        *,
        use_rollups: bool = True,
    ) -> list[Talker]:
        """The ``n`` (1-1,000) workloads or values of tag type ``by`` with the most traffic."""
        if isinstance(metric, str):
            metric = _metric(metric)
        by = check_group_type("by", by)
        query = top_talkers_query(
            by, filter or _EVERY_FLOW, check_count("n", n, 1_000), metric, allow_rollup=use_rollups
        )
        return [talker_of(row) for row in self._rows(query)]

    def graph(
        self, by: Sequence[str], filter: FlowFilter | None = None, *, use_rollups: bool = True
    ) -> Graph:
        """Traffic between groups of endpoints, a group per tuple of values of ``by``."""
        types = [check_group_type(f"by[{i}]", t) for i, t in enumerate(by)]
        if not types:
            raise FilterError("by", list(by), "names no tag type")
        query = graph_query(types, filter or _EVERY_FLOW, allow_rollup=use_rollups)
        return graph_of(types, self._rows(query), query.rollup)

    def violations(self, filter: FlowFilter | None = None, limit: int = 100) -> list[Violation]:
        """Denied and would-deny flows by violator and deciding rule, most flows first."""
        query = violations_query(filter or _EVERY_FLOW, check_count("limit", limit, 10_000))
        return [violation_of(row) for row in self._rows(query)]


def _metric(text: str) -> Metric:
    try:
        return Metric(text)
    except ValueError:
        raise FilterError("metric", text, "is not a metric", [m.value for m in Metric]) from None
