"""Flow query benchmark: 10M flows over 10,000 workloads of 100 applications, in DuckDB.

Measures, on one generated estate and traffic (fixed seeds):
* load — ``FlowStore.append`` of large batches (enrichment, Arrow, Parquet segment files)
  until ``flush`` returns, in flows/s; then ``compact`` (the rollup, merges and rewrites that the
  background thread would do), in seconds;
* the application graph and top talkers by workload (median of ``--runs``), as the API runs
  them (whole UTC days from the daily rollup) and over the raw flows only;
* the graph by application and deployment, and the application graph of the last day;
* the baseline in the same run: the same application graph by a naive query that joins the
  endpoint table per flow row before grouping, reported as a ratio to the raw-flow query.

Traffic: each workload talks to 6 peers of its own application and 2 elsewhere; 3% of flows
come from outside addresses; 2% are denied and 1% would be denied by an audit policy; start
times spread over the last 7 days, batches arriving in time order.

Usage: python bench/query.py [--json] [--flows N] [--workloads N] [--batch N] [--runs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from _estate import address, doc, report, say, workload_tags

from tagwall.analytics import FlowBatch, FlowFilter, FlowStore, RuleRef, Source, Verdict
from tagwall.model import Config, Document, load

DAY_MS = 86_400_000
PORTS = np.array([443, 8080, 5432, 6379, 53, 9000], np.uint16)


def estate(n_workloads: int, seed: int = 7) -> Config:
    rng = random.Random(seed)
    docs = [doc("Project", f"proj{p}", {}) for p in range(20)]
    for i in range(n_workloads):
        tags = workload_tags(rng, 100)
        app = int(tags["application"].removeprefix("app"))
        spec = {"interfaces": [{"name": "eth0", "ips": [address(i)]}], "tags": tags}
        docs.append(doc("Workload", f"w{i}", spec, f"proj{app % 20}"))
    return load([Document(d, "bench", i) for i, d in enumerate(docs)])


def peers(config: Config, n_workloads: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """``(n_workloads, 8)`` workload indexes: 6 of the same application, 2 anywhere."""
    app = np.array([config.effective[f"w{i}"].value("application") for i in range(n_workloads)])
    out = rng.integers(0, n_workloads, (n_workloads, 8))
    for name in np.unique(app):
        members = np.flatnonzero(app == name)
        out[members, :6] = rng.choice(members, (len(members), 6))
    return out


def traffic(
    n: int, start_ms: int, span_ms: int, peer: np.ndarray[Any, Any], rng: np.random.Generator
) -> FlowBatch:
    """``n`` flows starting in [start_ms, start_ms + span_ms), in time order."""
    src = rng.integers(0, len(peer), n)
    dst = peer[src, rng.integers(0, 8, n)]
    src_ip = (10 << 24) + src.astype(np.uint64)
    outside = rng.random(n) < 0.03
    src_ip[outside] = (203 << 24) + (113 << 8) + rng.integers(0, 256, int(outside.sum()))
    src_verdict = np.full(n, Verdict.ALLOW, np.uint8)
    src_verdict[outside] = Verdict.NONE
    dst_verdict = np.where(rng.random(n) < 0.02, Verdict.DENY, Verdict.ALLOW).astype(np.uint8)
    audit = np.where(rng.random(n) < 0.01, Verdict.WOULD_DENY, Verdict.NONE).astype(np.uint8)
    start = start_ms + np.sort(rng.integers(0, span_ms, n))
    size = rng.lognormal(8, 2, n).astype(np.uint64)
    v4 = np.uint64(0xFFFF_0000_0000)
    return FlowBatch.of(
        Source.AGENT,
        "bench",
        {
            "start_ms": start,
            "end_ms": start + rng.integers(0, 60_000, n),
            "src_hi": np.zeros(n, np.uint64),
            "src_lo": src_ip | v4,
            "dst_hi": np.zeros(n, np.uint64),
            "dst_lo": ((10 << 24) + dst.astype(np.uint64)) | v4,
            "proto": np.where(PORTS[dst % 6] == 53, 17, 6),
            "src_port": rng.integers(32768, 61000, n),
            "dst_port": PORTS[dst % 6],
            "packets": size // 1000 + 1,
            "bytes": size,
            "rpackets": size // 500 + 1,
            "rbytes": size * 2,
            "src_verdict": src_verdict,
            "dst_verdict": dst_verdict,
            "dst_rule": rng.integers(0, 1000, n),
            "src_audit": audit,
            "src_audit_rule": np.where(audit == Verdict.WOULD_DENY, rng.integers(0, 1000, n), -1),
        },
        rules=[
            RuleRef("application", f"aps{r // 20}", f"fp{r // 20}", f"r{r}") for r in range(1000)
        ],
    )


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


NAIVE_GRAPH = """
SELECT coalesce(array_to_string(list_sort(s.tags['application']), ','),
                CASE WHEN f.src_ep = 0 THEN 'external' ELSE 'unknown' END) AS src,
       coalesce(array_to_string(list_sort(d.tags['application']), ','),
                CASE WHEN f.dst_ep = 0 THEN 'external' ELSE 'unknown' END) AS dst,
       count(*), sum(f.bytes + f.rbytes)
FROM flows f LEFT JOIN endpoints s ON s.id = f.src_ep LEFT JOIN endpoints d ON d.id = f.dst_ep
GROUP BY ALL"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--flows", type=int, default=10_000_000)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    say(f"estate: {args.workloads} workloads")
    config = estate(args.workloads)
    peer = peers(config, args.workloads, rng)
    now_ms = int(time.time() * 1000)
    first_ms = now_ms - 7 * DAY_MS
    n_batches = -(-args.flows // args.batch)
    slice_ms = 7 * DAY_MS // n_batches
    say(f"generating {args.flows:,} flows in {n_batches} batches")
    batches = [
        traffic(
            min(args.batch, args.flows - i * args.batch),
            first_ms + i * slice_ms,
            slice_ms,
            peer,
            rng,
        )
        for i in range(n_batches)
    ]
    result: dict[str, Any] = {"flows": args.flows, "workloads": args.workloads}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flows.duckdb"
        store = FlowStore(path, flush_rows=args.batch, maintenance_interval_s=None)
        endpoints = store.endpoints(config)
        say("loading")
        t = time.perf_counter()
        for batch in batches:
            store.append(batch, endpoints)
        store.flush()
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        store.compact()  # what the background compaction would reach: small files merged
        result["compact_s"] = round(time.perf_counter() - t, 2)
        store.enforce_retention(now_ms)
        result["load_s"] = round(load_s, 2)
        result["load_flows_per_s"] = round(args.flows / load_s)
        result["stored_flows"] = store.statistics().stored_rows
        result["segments"] = store.statistics().segments
        segments = Path(f"{path}.segments")
        result["file_mb"] = round(path.stat().st_size / 1e6, 1)
        result["segments_mb"] = round(sum(f.stat().st_size for f in segments.iterdir()) / 1e6, 1)
        say("querying")
        every = FlowFilter()
        last_day = FlowFilter(since_ms=now_ms - DAY_MS, until_ms=now_ms)
        queries: dict[str, Callable[[], object]] = {
            "graph_query_s": lambda: store.graph(["application"]),
            "graph_raw_query_s": lambda: store.graph(["application"], every, use_rollups=False),
            "top_talkers_query_s": lambda: store.top_talkers("workload", every, 10),
            "top_talkers_raw_query_s": lambda: store.top_talkers(
                "workload", every, 10, use_rollups=False
            ),
            "graph_app_deployment_query_s": lambda: store.graph(["application", "deployment"]),
            "graph_last_day_query_s": lambda: store.graph(["application"], last_day),
            "graph_last_day_raw_query_s": lambda: store.graph(
                ["application"], last_day, use_rollups=False
            ),
            "violations_query_s": lambda: store.violations(every, 100),
            "flows_query_s": lambda: store.flows(every, 100),
        }
        answers = {}
        for name, query in queries.items():
            seconds, answers[name] = timed(query, args.runs)
            result[name] = round(seconds, 4)
            say(f"  {name}: {seconds:.3f} s")
        store.close()
        with duckdb.connect(str(path), read_only=True) as db:
            result["rollup_rows"] = db.execute("SELECT count(*) FROM flows_rollup").fetchone()[0]  # type: ignore[index]
            seconds, naive = timed(lambda: db.execute(NAIVE_GRAPH).fetchall(), args.runs)
        graph = answers["graph_raw_query_s"]
        mine = {(e.src[0], e.dst[0]): (e.flows, e.bytes) for e in graph.edges}  # type: ignore[attr-defined]
        theirs = {(s, d): (int(f), int(b)) for s, d, f, b in naive}
        assert mine == theirs, "the naive graph disagrees"
        result["baseline_naive_graph_s"] = round(seconds, 4)
        result["baseline_ratio"] = round(seconds / result["graph_raw_query_s"], 2)
        result["graph_edges"] = len(graph.edges)  # type: ignore[attr-defined]
    report(result, args.json)


if __name__ == "__main__":
    main()
