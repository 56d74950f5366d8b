"""The queries: each filter picks exactly the flows it names, the graph and top talkers sum
what was stored, violations group by violator and rule, and bad input is a FilterError that
names the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagwall.analytics import FilterError, FlowFilter, FlowStore, Verdict

from .flows_support import ALLOW_RULE, AUDIT_RULE, DENY_RULE, T0, batch, estate

TAGS = {
    "web-1": {"application": "shop", "tier": "web", "label": ["pci", "eu"]},
    "db-1": {"application": "shop", "tier": "db"},
    "crm-1": {"application": "crm", "tier": "web"},
    "bare-1": {},
}
WEB, DB, CRM, BARE, OUT = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "198.51.100.7"
D, WD, WA = Verdict.DENY, Verdict.WOULD_DENY, Verdict.WOULD_ALLOW
# start offset (ms) identifies each flow in assertions
ROWS: list[dict[str, Any]] = [
    {"t": 0, "src": WEB, "dst": DB, "bytes": 100, "rbytes": 5, "rule": ALLOW_RULE},
    {"t": 1, "src": WEB, "dst": DB, "bytes": 200, "dport": 5432, "dverdict": D, "drule": DENY_RULE},
    {"t": 2, "src": CRM, "dst": DB, "bytes": 300, "audit": WD, "arule": AUDIT_RULE},
    {"t": 3, "src": OUT, "dst": WEB, "bytes": 400, "verdict": 0, "dverdict": D, "drule": DENY_RULE},
    {"t": 4, "src": DB, "dst": CRM, "bytes": 500, "proto": 17, "dport": 53, "audit": WA},
    {"t": 5, "src": BARE, "dst": OUT, "bytes": 600, "dverdict": 0},
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlowStore]:
    s = FlowStore(tmp_path / "flows.duckdb", maintenance_interval_s=None)
    s.append(batch([{**r, "t": T0 + r["t"]} for r in ROWS]), s.endpoints(estate(TAGS)))
    s.flush()
    yield s
    s.close()


def picked(store: FlowStore, **kw: Any) -> list[int]:
    return sorted(f.start_ms - T0 for f in store.flows(FlowFilter.of(**kw)))


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, [0, 1, 2, 3, 4, 5]),
        ({"since_ms": T0 + 2, "until_ms": T0 + 4}, [2, 3]),
        ({"tags": ["tier=web"]}, [0, 1, 2, 3, 4]),
        ({"src_tags": ["tier=web"]}, [0, 1, 2]),
        ({"dst_tags": ["tier=web"]}, [3, 4]),
        ({"tags": ["label=eu", "application=shop"]}, [0, 1, 3]),
        ({"tags": ["project=shop"], "src_tags": ["application=crm"]}, [2]),
        ({"workload": "crm-1"}, [2, 4]),
        ({"verdict": "allow"}, [0, 2, 4, 5]),
        ({"verdict": "deny"}, [1, 3]),
        ({"verdict": "would-deny"}, [2]),
        ({"verdict": "would-allow"}, [4]),
        ({"policy": "three-tier"}, [0, 1, 3]),
        ({"rule": "no-db"}, [1, 3]),
        ({"rule": "no-ssh"}, [2]),
        ({"proto": "udp"}, [4]),
        ({"proto": "6", "port": "443"}, [0, 2, 3, 5]),
        ({"port": 5432}, [1]),
    ],
)
def test_each_filter_picks_exactly_its_flows(
    store: FlowStore, kw: dict[str, Any], expected: list[int]
) -> None:
    assert picked(store, **kw) == expected


def test_flows_are_newest_first_with_both_ends_and_the_deciding_rules(store: FlowStore) -> None:
    flows = store.flows(limit=6)
    assert [f.start_ms - T0 for f in flows] == [5, 4, 3, 2, 1, 0]
    denied = flows[4].as_dict()
    assert denied["src"]["workload"] == "web-1"
    assert denied["src"]["tags"]["label"] == ["eu", "pci"]
    assert denied["dst"] == {
        "address": DB,
        "port": 5432,
        "workload": "db-1",
        "project": "shop",
        "tags": {"application": ["shop"], "project": ["shop"], "tier": ["db"]},
        "verdict": "deny",
        "decided_by": {
            "tier": "application",
            "policy_set": "apps",
            "policy": "three-tier",
            "rule": "no-db",
        },
        "audit": "none",
        "audit_by": None,
    }
    assert (denied["source"], denied["exporter"], denied["bytes"]) == ("agent", "host-1", 200)
    assert flows[3].src.audit == "would-deny" and flows[3].src.audit_by is not None
    assert [f.start_ms - T0 for f in store.flows(limit=2)] == [5, 4]


def test_graph_edges_by_application_sum_the_flows(store: FlowStore) -> None:
    graph = store.graph(["application"])
    edges = {
        (e.src[0], e.dst[0]): (e.flows, e.bytes, e.allowed, e.denied, e.would_deny)
        for e in graph.edges
    }
    assert edges == {
        ("shop", "shop"): (2, 305, 1, 1, 0),
        ("crm", "shop"): (1, 300, 1, 0, 1),
        ("external", "shop"): (1, 400, 0, 1, 0),
        ("shop", "crm"): (1, 500, 1, 0, 0),
        ("unknown", "external"): (1, 600, 1, 0, 0),
    }
    assert graph.nodes == (("crm",), ("external",), ("shop",), ("unknown",))
    assert graph.as_dict()["by"] == ("application",)


def test_graph_at_two_tag_types_and_by_many_valued_labels(store: FlowStore) -> None:
    two = {(e.src, e.dst): e.flows for e in store.graph(["application", "tier"]).edges}
    assert two[(("shop", "web"), ("shop", "db"))] == 2
    assert two[(("crm", "web"), ("shop", "db"))] == 1
    labels = {(e.src, e.dst) for e in store.graph(["label"], FlowFilter(workload="web-1")).edges}
    assert labels == {(("eu,pci",), ("unknown",)), (("external",), ("eu,pci",))}


def test_top_talkers_count_each_flow_once_per_group_at_its_ends(store: FlowStore) -> None:
    by_bytes = store.top_talkers("application", n=10)
    assert [(t.label, t.flows, t.bytes) for t in by_bytes] == [
        ("shop", 5, 1505),
        ("external", 2, 1000),
        ("crm", 2, 800),
        ("unknown", 1, 600),
    ]
    by_flows = store.top_talkers("workload", n=2, metric="flows")
    assert [(t.label, t.flows) for t in by_flows] == [("db-1", 4), ("web-1", 3)]


def test_violations_group_by_violator_and_rule(store: FlowStore) -> None:
    more = [{"t": T0 + 10, "src": WEB, "dst": DB, "bytes": 1, "dverdict": D, "drule": DENY_RULE}]
    store.append(batch(more), store.endpoints(estate(TAGS)))
    store.flush()
    found = {
        (v.kind, v.violator, v.decided_by and v.decided_by.rule): v for v in store.violations()
    }
    assert set(found) == {
        ("deny", "web-1", "no-db"),
        ("deny", OUT, "no-db"),
        ("would-deny", "crm-1", "no-ssh"),
    }
    web = found[("deny", "web-1", "no-db")]
    assert (web.flows, web.bytes, web.first_seen_ms, web.last_seen_ms) == (2, 201, T0 + 1, T0 + 20)
    assert found[("deny", OUT, "no-db")].address == OUT
    assert store.violations()[0] is not None and store.violations()[0].flows == 2


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"verdict": "blocked"}, "verdict"),
        ({"port": "https"}, "port"),
        ({"port": 70000}, "port"),
        ({"proto": "gre"}, "proto"),
        ({"tags": ["tier"]}, "tags"),
        ({"src_tags": ["tier=web,app=x"]}, "src_tags"),
        ({"dst_tags": ["tier!=web"]}, "dst_tags"),
        ({"tags": ["bad key=x"]}, "tags"),
        ({"since_ms": 5, "until_ms": 4}, "until_ms"),
    ],
)
def test_bad_filter_input_names_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as caught:
        FlowFilter.of(**kw)
    assert isinstance(caught.value, FilterError)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_bad_query_arguments_name_the_field(store: FlowStore) -> None:
    for call, field in [
        (lambda: store.graph(["tier in (a)"]), "by[0]"),
        (lambda: store.graph([]), "by"),
        (lambda: store.top_talkers("tier", metric="packets"), "metric"),
        (lambda: store.top_talkers("tier", n=0), "n"),
        (lambda: store.flows(limit=10**6), "limit"),
    ]:
        with pytest.raises(FilterError) as caught:
            call()
        assert caught.value.field == field
