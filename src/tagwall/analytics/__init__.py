"""Flow analytics: flow records in columns from agents and collectors, their store (Parquet
segment files registered in a DuckDB file, which also holds rollups and dictionaries), and the
questions operators ask of them (flows, top talkers, the graph by tags, violations).

Owns the ``FlowBatch`` column contract (``_batch.py``) that every source produces.  Imports
the model (to name workloads and tags), the evaluator (audit verdicts of agents' reports) and
the control protocol (the reports' wire form), never the compiler, the data path, the API or
the CLI; ``analytics.collectors`` decodes exporters' packets and imports no store.
"""

from ._batch import (
    COLUMNS,
    FlowBatch,
    RuleRef,
    Source,
    Verdict,
    concat,
    ip_columns,
    ip_text,
    ipv4_columns,
)
from ._enrich import Endpoint, Endpoints
from ._filters import FilterError, FlowFilter, FlowVerdict, Metric, TagTerm
from ._ingest import Collectors, CollectorSpec, CollectorStatistics, parse_collector
from ._results import Decision, FlowRecord, FlowSide, Graph, GraphEdge, Talker, Violation
from ._service import AgentReportStatistics, Analytics, AnalyticsStatistics
from ._store import FlowStore, StoreStatistics

__all__ = [
    "COLUMNS",
    "AgentReportStatistics",
    "Analytics",
    "AnalyticsStatistics",
    "CollectorSpec",
    "CollectorStatistics",
    "Collectors",
    "Decision",
    "Endpoint",
    "Endpoints",
    "FilterError",
    "FlowBatch",
    "FlowFilter",
    "FlowRecord",
    "FlowSide",
    "FlowStore",
    "FlowVerdict",
    "Graph",
    "GraphEdge",
    "Metric",
    "RuleRef",
    "Source",
    "StoreStatistics",
    "TagTerm",
    "Talker",
    "Verdict",
    "Violation",
    "concat",
    "ip_columns",
    "ip_text",
    "ipv4_columns",
    "parse_collector",
]
