"""Flow questions on a controller's analytics role: ``flows`` (``--follow`` streams new ones
like ``hubble observe``), ``graph``, ``top`` and ``violations``.  Clients of ``GET
/api/v1/flows…`` (``api/_flows.py``); every command takes the same filter options."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ._common import Client, OutputFormat, OutputOpt, ServerOpt, emit, out, records_table

__all__ = ["flows", "graph", "top", "violations"]

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Flows that started in the last DURATION (30s, 15m, 2h, 7d)."),
]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="key=value at either end.")]
SrcTagOpt = Annotated[list[str] | None, typer.Option("--from-tag", help="key=value at the source.")]
DstTagOpt = Annotated[
    list[str] | None, typer.Option("--to-tag", help="key=value at the destination.")
]
WorkloadOpt = Annotated[str | None, typer.Option("--workload", help="Either end is this workload.")]
VerdictOpt = Annotated[
    str | None, typer.Option("--verdict", help="allow, deny, would-deny or would-allow.")
]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="The deciding policy.")]
RuleOpt = Annotated[str | None, typer.Option("--rule", help="The deciding rule.")]
ProtoOpt = Annotated[str | None, typer.Option("--proto", help="tcp, udp, icmp, … or a number.")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Destination port.")]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since_ms(text: str | None) -> str | None:
    if text is None:
        return None
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit():
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h or 7d")
    return str(int(time.time() * 1000) - int(number) * _UNITS[unit] * 1000)


def _params(
    since: str | None,
    *,
    tag: list[str] | None = None,
    from_tag: list[str] | None = None,
    to_tag: list[str] | None = None,
    port: int | None = None,
    **rest: str | None,
) -> dict[str, str | list[str] | None]:
    """The query parameters of ``GET /flows…`` from the commands' filter options; ``rest``
    are the ones passed as they are (workload, verdict, policy, rule, proto)."""
    return {
        "since_ms": _since_ms(since),
        "tag": tag or [],
        "src_tag": from_tag or [],
        "dst_tag": to_tag or [],
        "port": None if port is None else str(port),
        **rest,
    }


def _end(side: dict[str, Any]) -> str:
    who = side.get("workload") or side.get("address")
    port = side.get("port")
    return f"{who}:{port}" if port else str(who)


def _rule(by: dict[str, Any] | None) -> str:
    """``admin: guard/staged/no-db``, or the default's name: ``application-default-deny``."""
    if not by:
        return ""
    if by.get("rule") is None:
        return str(by.get("policy") or by.get("tier"))
    path = "/".join(str(by[k]) for k in ("policy_set", "policy", "rule") if by.get(k))
    return f"{by['tier']}: {path}"


def _decision(side: dict[str, Any]) -> str:
    verdict = side.get("verdict", "none")
    text = "" if verdict == "none" else f"{verdict} ({_rule(side.get('decided_by'))})"
    audit = side.get("audit", "none")
    if audit != "none":
        text += f"; {audit} ({_rule(side.get('audit_by'))})"
    return text.removeprefix("; ")


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def _flow_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "time": _clock(f["start_ms"]),
            "from": _end(f["src"]),
            "to": _end(f["dst"]),
            "proto": f["proto"],
            "bytes": f["bytes"] + f["rbytes"],
            "at source": _decision(f["src"]),
            "at destination": _decision(f["dst"]),
            "through": f.get("via") or "",  # the service instances that carried it
            "reported by": f"{f['source']} {f['exporter']}",
        }
        for f in items
    ]


def flows(
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
    since: SinceOpt = None,
    tag: TagOpt = None,
    from_tag: SrcTagOpt = None,
    to_tag: DstTagOpt = None,
    workload: WorkloadOpt = None,
    verdict: VerdictOpt = None,
    policy: PolicyOpt = None,
    rule: RuleOpt = None,
    proto: ProtoOpt = None,
    port: PortOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep printing new flows as they arrive.")
    ] = False,
) -> None:
    """Flows the analytics role stored, newest first (oldest first with --follow)."""
    params = _params(
        since,
        tag=tag,
        from_tag=from_tag,
        to_tag=to_tag,
        port=port,
        workload=workload,
        verdict=verdict,
        policy=policy,
        rule=rule,
        proto=proto,
    )
    with Client(server) as client:
        items = client.request("GET", "/flows", params={**params, "limit": str(limit)})["items"]
        if not follow:
            if not emit(items, output):
                out.print(records_table(_flow_rows(items), title=f"{len(items)} flow(s)"))
            return
        seen = max((f["start_ms"] for f in items), default=int(time.time() * 1000) - 1)
        _follow(client, params, list(reversed(items)), seen, output)


def _follow(
    client: Client,
    params: dict[str, Any],
    first: list[dict[str, Any]],
    seen: int,
    fmt: OutputFormat,
) -> None:
    """Print ``first``, then every flow that starts after ``seen``, polling once a second:
    one line per flow (JSON: one object per line)."""
    batch = first
    try:
        while True:
            for flow in batch:
                if fmt is OutputFormat.TABLE:
                    out.print("  ".join(str(v) for v in _flow_rows([flow])[0].values()))
                elif fmt is OutputFormat.JSON:
                    sys.stdout.write(json.dumps(flow) + "\n")
                    sys.stdout.flush()
                else:
                    emit([flow], fmt)
            time.sleep(1.0)
            query = {**params, "since_ms": str(seen + 1), "limit": "10000"}
            batch = list(reversed(client.request("GET", "/flows", params=query)["items"]))
            seen = max((f["start_ms"] for f in batch), default=seen)
    except KeyboardInterrupt:
        return


def graph(
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Tag type(s) to group by; repeatable.")
    ] = None,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
    since: SinceOpt = None,
    tag: TagOpt = None,
    workload: WorkloadOpt = None,
    proto: ProtoOpt = None,
    port: PortOpt = None,
) -> None:
    """Who talks to whom, by application (or any tag types): edges with flows, bytes and
    allowed / denied / would-deny counts."""
    params = _params(since, tag=tag, port=port, workload=workload, proto=proto)
    with Client(server) as client:
        answer = client.request(
            "GET", "/flows/graph", params={**params, "by": by or ["application"]}
        )
    if emit(answer, output):
        return
    rows = [
        {
            "from": "/".join(e["src"]),
            "to": "/".join(e["dst"]),
            **{k: e[k] for k in ("flows", "bytes", "allowed", "denied", "would_deny")},
        }
        for e in answer["edges"]
    ]
    title = f"{len(answer['nodes'])} node(s), {len(rows)} edge(s) by {', '.join(answer['by'])}"
    out.print(records_table(rows, title=title))


def top(
    by: Annotated[str, typer.Option("--by", help="workload or a tag type.")] = "workload",
    metric: Annotated[str, typer.Option("--metric", help="bytes or flows.")] = "bytes",
    n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 10,
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
    since: SinceOpt = None,
    tag: TagOpt = None,
    proto: ProtoOpt = None,
    port: PortOpt = None,
) -> None:
    """Top talkers by bytes or flows."""
    params = _params(since, tag=tag, port=port, proto=proto)
    with Client(server) as client:
        answer = client.request(
            "GET", "/flows/top", params={**params, "by": by, "metric": metric, "n": str(n)}
        )
    if not emit(answer["items"], output):
        out.print(records_table(answer["items"], title=f"top {n} by {metric}, per {by}"))


def violations(
    server: ServerOpt = None,
    output: OutputOpt = OutputFormat.TABLE,
    since: SinceOpt = None,
    tag: TagOpt = None,
    workload: WorkloadOpt = None,
    policy: PolicyOpt = None,
    rule: RuleOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Denied and would-deny flows, grouped by violator and the rule that denied them."""
    params = _params(since, tag=tag, workload=workload, policy=policy, rule=rule)
    with Client(server) as client:
        items = client.request("GET", "/flows/violations", params={**params, "limit": str(limit)})
    if emit(items["items"], output):
        return
    rows = [
        {
            "kind": v["kind"],
            "violator": v["violator"],
            "denied by": _rule(v["decided_by"]),
            "flows": v["flows"],
            "bytes": v["bytes"],
            "last seen": _clock(v["last_seen_ms"]),
        }
        for v in items["items"]
    ]
    out.print(records_table(rows, title=f"{len(rows)} violation(s)"))
