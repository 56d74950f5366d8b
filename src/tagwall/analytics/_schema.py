"""The flow store's DuckDB layout: its tables and views, their DDL, and the names of the day
tables.  ``_store.py`` opens (and upgrades) a file with it, ``_writer.py`` writes it,
``_queries.py`` reads it.

Layout (one database file):

* ``flows_dYYYYMMDD``: the flows whose ``start_ms`` falls on that UTC day, in arrival order;
  the view ``flows`` is their ``UNION ALL`` (plus the empty ``flows_template``).  Retention is
  ``DROP TABLE`` of whole days.  Measured here with 10M rows over 30 days: after dropping
  the oldest day, appending a 1M-row day grew the file by 2.4 MB (the freed blocks were
  reused), while ``DELETE`` of that day from one big table left partly deleted row groups
  behind and the same append grew it by 9.2 MB; both answered a one-day query in 23-28 ms
  (zone maps on ``start_ms``) and the whole range in 0.9-1.1 s.
* ``flows_rollup``: the daily rollup (``ROLLUP_SELECT``).  Each flush inserts the rollup of
  its rows in the same transaction as the rows, so rollup and raw flows always agree; partial
  rows of one day are merged by maintenance once the day is over.  Kept
  ``rollup_retention_days`` (longer than the raw flows).
* ``endpoints(id, workload, project, tags)`` and ``rules(id, tier, policy_set, policy, rule)``:
  append-only dictionaries the id columns point into (id 0: none).  A flush inserts the new
  entries before the rows that use them, in the same transaction.
* ``messages``: syslog lines that carry no flow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from ._batch import COLUMNS
from ._filters import ALLOWED, DENIED, WOULD_ALLOW, WOULD_DENY

__all__ = [
    "DAY_MS",
    "FLOW_DDL",
    "ROLLUP_BUCKET_MS",
    "ROLLUP_COUNTS",
    "ROLLUP_SELECT",
    "SCHEMA",
    "day_of",
    "day_table",
    "view_sql",
]

DAY_MS = 86_400_000

# Rollup buckets are UTC days.  Measured (bench/query.py, 10M flows over 7 days, 80k active
# endpoint pairs): hourly buckets kept 7.2M rows (72% of the raw rows) and answered the graph
# slower than the raw flows; a pair is seen every few hours, not every hour, at that density.
ROLLUP_BUCKET_MS = 86_400_000

# The daily rollup of a relation named ``pending`` holding flow rows; the store inserts it
# into ``flows_rollup`` in the transaction that inserts the rows, so it always agrees with them.
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


def view_sql(days: Iterable[int]) -> str:
    parts = ["SELECT * FROM flows_template"]
    parts += [f"SELECT * FROM {day_table(day)}" for day in sorted(days)]
    return "CREATE OR REPLACE VIEW flows AS " + " UNION ALL ".join(parts)
