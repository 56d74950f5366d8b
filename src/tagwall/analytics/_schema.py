"""The flow store's layout: its DuckDB tables and views, the raw flows' segment files beside
the DuckDB file, and their names.  ``_store.py`` opens (and upgrades) a store with it,
``_writer.py`` writes it, ``_queries.py`` reads it.

Layout (``flows.duckdb`` and the directory ``flows.duckdb.segments/`` beside it):

* raw flows: Parquet files in the segment directory (``_segments.py``), each holding rows of
  one UTC day of ``start_ms``, registered in the table ``flow_segments`` (name, day, rows, level,
  first and last ``start_ms``).  A file is visible only once registered: the writer writes and
  fsyncs it, then registers it in the transaction that also inserts its rollup, the new
  endpoints and rules, and agents' progress.  Retention deletes whole days' registrations (and
  then their files).  Why files and not DuckDB tables: DuckDB's ``INSERT`` into a day table
  cost ~540 ns of CPU per row of these 25 columns; writing the same rows as an uncompressed
  Parquet file costs ~110-160 ns (an Arrow IPC file ~40 ns, but DuckDB reads IPC only through
  an extension, which this machine cannot download, or a Python object registered per
  connection, which the other cursors do not see).
* the view ``flows``: every raw flow: the segments (one ``read_parquet`` over the registered
  files), plus the day tables ``flows_dYYYYMMDD`` of files written before segments existed
  (read as they are, dropped by retention like segments) and the empty ``flows_template``.
  ``view_sql`` builds it; the writer replaces it in each transaction that changes the files.
* ``flows_rollup``: the daily rollup (``ROLLUP_SELECT``) of every segment marked
  ``rolled_up`` and every legacy day table.  The background thread (``_compact.py``) rolls up
  new segments: one transaction inserts a segment's rollup rows and marks it, so rollup and
  raw flows always agree; the view ``flows_unrolled`` holds the rows of the segments not yet
  rolled up, which queries read beside the rollup.  Partial rows of one day are merged by
  maintenance once the day is over.  Kept ``rollup_retention_days`` (longer than the raw
  flows).
* ``endpoints(id, workload, project, tags)`` and ``rules(id, tier, policy_set, policy, rule)``:
  append-only dictionaries the id columns point into (id 0: none).  A flush inserts the new
  entries in the transaction that registers the rows that use them.
* ``flow_segments``: the registered segment files (``Segment``).
* ``messages``: syslog lines that carry no flow.
* ``agent_progress``: per agent spool, the last report stored (committed with the rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ._batch import COLUMNS
from ._filters import ALLOWED, DENIED, WOULD_ALLOW, WOULD_DENY

__all__ = [
    "DAY_MS",
    "FLOW_DDL",
    "ROLLUP_BUCKET_MS",
    "ROLLUP_COUNTS",
    "ROLLUP_SELECT",
    "SCHEMA",
    "SEGMENT_COLUMNS",
    "SEGMENT_SCHEMA",
    "day_of",
    "day_table",
    "rollup_of_files_sql",
    "view_sql",
]

DAY_MS = 86_400_000

# Rollup buckets are UTC days.  Measured (bench/query.py, 10M flows over 7 days, 80k active
# endpoint pairs): hourly buckets kept 7.2M rows (72% of the raw rows) and answered the graph
# slower than the raw flows; a pair is seen every few hours, not every hour, at that density.
ROLLUP_BUCKET_MS = 86_400_000

# The daily rollup of a relation named ``pending`` holding flow rows (``rollup_of_files_sql``
# puts segment files in its place).
ROLLUP_SELECT = f"""
SELECT start_ms - start_ms % {ROLLUP_BUCKET_MS} AS bucket_ms, src_ep, dst_ep, proto, dst_port,
       count(*) AS flows, sum(packets)::UBIGINT AS packets, sum(bytes)::UBIGINT AS bytes,
       sum(rpackets)::UBIGINT AS rpackets, sum(rbytes)::UBIGINT AS rbytes,
       count(*) FILTER (WHERE {ALLOWED}) AS allowed,
       count(*) FILTER (WHERE {DENIED}) AS denied,
       count(*) FILTER (WHERE {WOULD_DENY}) AS would_deny,
       count(*) FILTER (WHERE {WOULD_ALLOW}) AS would_allow
FROM pending GROUP BY ALL"""

# The counted columns of flows_rollup, after its key (bucket_ms, src_ep, dst_ep, proto, dst_port).
ROLLUP_COUNTS = (
    *("flows", "packets", "bytes", "rpackets", "rbytes"),
    *("allowed", "denied", "would_deny", "would_allow"),
)

_SQL_TYPES = {"int64": "BIGINT", "uint64": "UBIGINT", "int32": "INTEGER", "uint8": "UTINYINT"}
_SQL_TYPES["uint16"] = "USMALLINT"
# The raw flow row, in order: the batch's columns, the endpoint ids, where it came from.  In
# a segment, every column but ``via`` is non-nullable (Parquet REQUIRED: no definition levels
# to write, ~106 ns per row against ~137 nullable), ``source`` and ``exporter`` are
# dictionary-encoded (one value per batch).
SEGMENT_COLUMNS = (*COLUMNS, "src_ep", "dst_ep", "source", "exporter", "via")
_TEXT = pa.dictionary(pa.int8(), pa.string())
SEGMENT_SCHEMA = pa.schema(
    [pa.field(name, pa.from_numpy_dtype(dtype), nullable=False) for name, dtype in COLUMNS.items()]
    + [pa.field(name, pa.int32(), nullable=False) for name in ("src_ep", "dst_ep")]
    + [pa.field(name, _TEXT, nullable=False) for name in ("source", "exporter")]
    + [pa.field("via", pa.string())]
)
FLOW_DDL = ", ".join(
    [f"{name} {_SQL_TYPES[dtype.name]}" for name, dtype in COLUMNS.items()]
    + ["src_ep INTEGER", "dst_ep INTEGER", "source VARCHAR", "exporter VARCHAR", "via VARCHAR"]
)
_DAY_TABLE = re.compile(r"flows_d(\d{8})")
_ROLLUP_KEY = "bucket_ms BIGINT, src_ep INTEGER, dst_ep INTEGER, proto UTINYINT, dst_port USMALLINT"
SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS flows_template ({FLOW_DDL})",
    "CREATE TABLE IF NOT EXISTS endpoints (id INTEGER, workload VARCHAR, project VARCHAR, "
    "tags MAP(VARCHAR, VARCHAR[]))",
    "CREATE TABLE IF NOT EXISTS rules (id INTEGER, tier VARCHAR, policy_set VARCHAR, "
    "policy VARCHAR, rule VARCHAR)",
    f"CREATE TABLE IF NOT EXISTS flows_rollup ({_ROLLUP_KEY}, "
    + ", ".join(f"{c} UBIGINT" for c in ROLLUP_COUNTS)
    + ")",
    "CREATE TABLE IF NOT EXISTS messages (received_ms BIGINT, exporter VARCHAR, "
    "facility UTINYINT, severity UTINYINT, timestamp_ms BIGINT, hostname VARCHAR, "
    "app VARCHAR, text VARCHAR)",
    "CREATE TABLE IF NOT EXISTS flow_segments (name VARCHAR, day INTEGER, rows BIGINT, "
    "level UTINYINT, first_ms BIGINT, last_ms BIGINT, rolled_up BOOLEAN)",
    # How far each agent's spool (host, spool identity) is stored: agents' reports are
    # numbered, so a batch sent again after a lost answer or a restart is stored once.
    "CREATE TABLE IF NOT EXISTS agent_progress (host VARCHAR, spool VARCHAR, "
    "stored_through BIGINT, PRIMARY KEY (host, spool))",
]


def day_table(day: int) -> str:
    """``flows_dYYYYMMDD`` of day number ``day`` (days since the epoch, UTC)."""
    return "flows_d" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def day_of(table: str) -> int | None:
    match = _DAY_TABLE.fullmatch(table)
    if match is None:
        return None
    moment = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(moment.timestamp()) // 86_400


def view_sql(days: Iterable[int], segments: Sequence[str], unrolled: Sequence[str]) -> list[str]:
    """The views ``flows`` over the legacy day tables of ``days`` and the segment files at the
    absolute paths ``segments``, and ``flows_unrolled`` over those of ``unrolled`` (the
    segments whose rows the rollup does not hold yet)."""
    parts = ["SELECT * FROM flows_template"]
    parts += [f"SELECT * FROM {day_table(day)}" for day in sorted(days)]
    return [
        "CREATE OR REPLACE VIEW flows AS " + " UNION ALL ".join([*parts, *_scan(segments)]),
        "CREATE OR REPLACE VIEW flows_unrolled AS "
        + " UNION ALL ".join(["SELECT * FROM flows_template", *_scan(unrolled)]),
    ]


def rollup_of_files_sql(paths: Sequence[str]) -> str:
    """``ROLLUP_SELECT`` over the segment files at ``paths``."""
    (scan,) = _scan(paths)
    return ROLLUP_SELECT.replace("FROM pending", f"FROM ({scan})")


def _scan(paths: Sequence[str]) -> list[str]:
    if not paths:
        return []
    files = ", ".join(_quoted(path) for path in paths)
    return [f"SELECT {', '.join(SEGMENT_COLUMNS)} FROM read_parquet([{files}])"]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
