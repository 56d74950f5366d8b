"""What the flow store tests share: a small estate as a ``Config``, flow batches built from
readable rows, and a process to crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tagwall.analytics import FlowBatch, RuleRef, Source, ip_columns
from tagwall.model import Config, Document, load

DAY_MS = 86_400_000
T0 = 1_700_000_000_000 // DAY_MS * DAY_MS  # a UTC midnight (2023-11-14)


def estate(
    tags: Mapping[str, Mapping[str, Any]], ips: Mapping[str, Sequence[str]] | None = None
) -> Config:
    """Workloads ``name → tags`` in project ``shop``, the i-th at ``10.0.0.<i+1>`` unless
    ``ips`` gives its addresses."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "tagwall/v1", "kind": "Project", "metadata": {"name": "shop"}, "spec": {}}
    ]
    for i, (name, workload_tags) in enumerate(tags.items()):
        addresses = list((ips or {}).get(name, [f"10.0.0.{i + 1}"]))
        spec = {"interfaces": [{"name": "eth0", "ips": addresses}]}
        docs.append(
            {
                "apiVersion": "tagwall/v1",
                "kind": "Workload",
                "metadata": {"name": name, "project": "shop"},
                "spec": {**spec, "tags": dict(workload_tags)},
            }
        )
    return load([Document(d, "test", i) for i, d in enumerate(docs)])


DENY_RULE = RuleRef("application", "apps", "three-tier", "no-db")
ALLOW_RULE = RuleRef("application", "apps", "three-tier", "web-to-app")
AUDIT_RULE = RuleRef("admin", "guard", "staged", "no-ssh")


def batch(
    rows: Sequence[Mapping[str, Any]],
    *,
    source: Source = Source.AGENT,
    exporter: str = "host-1",
    dropped: int = 0,
) -> FlowBatch:
    """Rows with keys ``t`` (start ms), ``src``, ``dst`` (IP text), optional ``dport``,
    ``proto``, ``bytes``, ``rbytes``, ``verdict``/``dverdict``/``audit`` (Verdict ints) and
    ``rule``/``drule``/``arule`` (RuleRef)."""
    rules = [ALLOW_RULE, DENY_RULE, AUDIT_RULE]
    src_hi, src_lo = ip_columns([r["src"] for r in rows])
    dst_hi, dst_lo = ip_columns([r["dst"] for r in rows])

    def rule(r: Mapping[str, Any], key: str) -> int:
        return rules.index(r[key]) if key in r else -1

    return FlowBatch.of(
        source,
        exporter,
        {
            "start_ms": [r["t"] for r in rows],
            "end_ms": [r["t"] + 10 for r in rows],
            "src_hi": src_hi,
            "src_lo": src_lo,
            "dst_hi": dst_hi,
            "dst_lo": dst_lo,
            "proto": [r.get("proto", 6) for r in rows],
            "src_port": [40000 for _ in rows],
            "dst_port": [r.get("dport", 443) for r in rows],
            "packets": [1 for _ in rows],
            "bytes": [r.get("bytes", 100) for r in rows],
            "rpackets": [1 for _ in rows],
            "rbytes": [r.get("rbytes", 0) for r in rows],
            "src_verdict": [r.get("verdict", 1) for r in rows],
            "dst_verdict": [r.get("dverdict", 1) for r in rows],
            "src_rule": [rule(r, "rule") for r in rows],
            "dst_rule": [rule(r, "drule") for r in rows],
            "src_audit": [r.get("audit", 0) for r in rows],
            "src_audit_rule": [rule(r, "arule") for r in rows],
        },
        rules=rules,
        dropped=dropped,
    )


def run_until_crash(script: str, *, crash_at_commit: bool) -> None:
    """Run ``script`` (Python, with ``os``, ``Path``, ``T0``, ``batch``, ``estate``,
    ``Analytics``, ``FlowStore`` and ``Writer`` imported) in a fresh interpreter that dies like
    a killed process (``os._exit``, nothing flushed or closed) at the flow store's first
    commit (``crash_at_commit``) or at the end of ``script``."""
    preamble = textwrap.dedent(
        """
        import os
        from pathlib import Path
        from analytics.flows_support import T0, batch, estate
        from tagwall.analytics import Analytics, FlowStore
        from tagwall.analytics._writer import Writer
        if CRASH:
            Writer._commit = lambda self, w: os._exit(17)
        """
    )
    tests = Path(__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    code = f"CRASH = {crash_at_commit}\n{preamble}\n{textwrap.dedent(script)}\nos._exit(17)\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 17, done.stderr


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Until ``condition()`` holds (the timeout only stops a hung test)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
