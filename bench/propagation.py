"""Propagation benchmark: API write → every agent has applied and acknowledged the change.

A controller process (``tagwall controller``) serves 100 hosts with 10 workloads each; 100
agents on the ``sim`` data path run in this process, one WebSocket each, with no persistence
(100 fsyncs on one disk per change would measure the disk, not tagwall).  Each trial flips
one workload's tier through the REST API — a change that reaches the programs of every host —
and records, per agent, when it acknowledged the new revision.  Figures: p50/p99 over trials
of the time until *every* agent acknowledged, and p50/p99 over all single acknowledgements.

Baseline in the same run: the transport floor — a bare WebSocket server process (the same
``websockets`` library, no compiler, no store) fanning one message of the same size as an
average delta out to the same number of clients, each answering with an ack; time until all
acks are in.  The ratio says what compile, diff, validation and apply add on top.

With ``--lab`` the same write is timed against agents already running in a lab (``tagwall lab
up``, nftables data path): the time until ``GET /api/v1/agents`` shows every lab host at the
new revision (polled every 2 ms, so figures include up to one poll interval).

Usage: python bench/propagation.py [--json] [--agents N] [--trials N] [--lab URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from _estate import free_port, percentile
from _fanout import websocket_fanout

from tagwall.agent import Agent
from tagwall.datapath import SimDatapath

REPO = Path(__file__).resolve().parents[1]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def manifests(hosts: int, per_host: int) -> list[dict[str, Any]]:
    tiers = ["web", "app", "db"]
    docs: list[dict[str, Any]] = []
    for i in range(hosts * per_host):
        docs.append(
            {
                "apiVersion": "tagwall/v1",
                "kind": "Workload",
                "metadata": {"name": f"w{i}"},
                "spec": {
                    "host": f"host{i % hosts}",
                    "tags": {"application": f"app{i % 7}", "tier": tiers[i % 3]},
                    "interfaces": [
                        {"name": "eth0", "ips": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"]}
                    ],
                },
            }
        )
    rules = [
        {"name": "web-app", "from": {"tags": "tier=web"}, "to": {"tags": "tier=app"},
         "services": ["tcp/8080"], "action": "allow"},
        {"name": "app-db", "from": {"tags": "tier=app"}, "to": {"tags": "tier=db"},
         "services": ["tcp/5432"], "action": "allow"},
    ]  # fmt: skip
    docs.append(
        {"apiVersion": "tagwall/v1", "kind": "FirewallPolicy", "metadata": {"name": "tiers"},
         "spec": {"rules": rules}}
    )  # fmt: skip
    docs.append(
        {"apiVersion": "tagwall/v1", "kind": "ApplicationPolicySet", "metadata": {"name": "all"},
         "spec": {"all": True, "policies": [{"name": "tiers", "sequence": 10}]}}
    )  # fmt: skip
    return docs


def summary(all_acked: list[float], single: list[float]) -> dict[str, float]:
    return {
        "p50_s": percentile(all_acked, 0.5),
        "p99_s": percentile(all_acked, 0.99),
        "single_ack_p50_s": percentile(single, 0.5),
        "single_ack_p99_s": percentile(single, 0.99),
    }


# -- tagwall -----------------------------------------------------------------------------------


def start_controller(
    data_dir: Path, docs: list[dict[str, Any]]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    manifest = data_dir / "estate.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    process = subprocess.Popen(
        [sys.executable, "-m", "tagwall.cli", "controller", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(data_dir / "store"), "-f", str(manifest)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/revision", timeout=1).json().get("revision", 0) >= 1:
                return process, url
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the controller did not start")


def flip(client: httpx.Client, url: str, trial: int) -> int:
    body = {
        "apiVersion": "tagwall/v1",
        "kind": "Workload",
        "metadata": {"name": "w0"},
        "spec": {
            "host": "host0",
            "tags": {"application": "app0", "tier": "app" if trial % 2 == 0 else "web"},
            "interfaces": [{"name": "eth0", "ips": ["10.0.0.0"]}],
        },
    }
    reply = client.post(f"{url}/api/v1/apply", json=[body])
    reply.raise_for_status()
    revision: int = reply.json()["revision"]
    return revision


async def sim_agents(url: str, n_agents: int, trials: int) -> tuple[list[float], list[float], int]:
    acked: dict[int, dict[str, float]] = {}

    def recorder(host: str) -> Any:
        def on_applied(revision: int) -> None:
            acked.setdefault(revision, {})[host] = time.perf_counter()

        return on_applied

    agents = [
        Agent(f"host{i}", [url], SimDatapath(), None, on_applied=recorder(f"host{i}"))
        for i in range(n_agents)
    ]
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        deadline = time.monotonic() + 60
        while not all(a.revision is not None for a in agents):
            if time.monotonic() > deadline:
                raise SystemExit("agents did not connect")
            await asyncio.sleep(0.05)
        say(f"{n_agents} agents in sync; {trials} trials …")
        all_acked, single, delta_bytes = [], [], 0
        with httpx.Client(timeout=30) as client:
            for trial in range(trials):
                start = time.perf_counter()
                revision = await asyncio.to_thread(flip, client, url, trial)
                while len(acked.get(revision, {})) < n_agents:
                    if time.perf_counter() - start > 30:
                        raise SystemExit(f"trial {trial}: not every agent acknowledged")
                    await asyncio.sleep(0.001)
                times = [t - start for t in acked[revision].values()]
                all_acked.append(max(times))
                single.extend(times)
                await asyncio.sleep(0.05)
            program = httpx.get(f"{url}/api/v1/hosts/host1/program").json()
            delta_bytes = len(json.dumps(program)) // 20  # sized like a small delta
        return all_acked, single, max(delta_bytes, 512)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- lab ---------------------------------------------------------------------------------------


def in_sync(status: dict[str, Any], hosts: list[str], revision: int) -> bool:
    """The controller has compiled ``revision`` and every host realized what it desires."""
    views = {v["host"]: v for v in status["items"]}
    return status["revision"] >= revision and all(
        (views[h]["realizedRevision"] or 0) >= (views[h]["desiredRevision"] or 0) for h in hosts
    )


def lab_trials(url: str, trials: int) -> tuple[list[float], int]:
    """Flip a lab workload's tier back and forth; time until every lab host acknowledged."""
    with httpx.Client(timeout=30) as client:
        views = client.get(f"{url}/api/v1/agents").json()["items"]
        hosts = [v["host"] for v in views if v["connected"]]
        workloads = client.get(f"{url}/api/v1/workloads").json()["items"]
        target = next(w for w in workloads if "tier" in (w["spec"].get("tags") or {}))
        original = target["spec"]["tags"]["tier"]
        times = []
        for trial in range(trials):
            target["spec"]["tags"]["tier"] = original if trial % 2 else f"{original}-x"
            start = time.perf_counter()
            revision = client.post(f"{url}/api/v1/apply", json=[target]).json()["revision"]
            while not in_sync(client.get(f"{url}/api/v1/agents").json(), hosts, revision):
                if time.perf_counter() - start > 30:
                    raise SystemExit("the lab's agents did not acknowledge within 30 s")
                time.sleep(0.002)
            times.append(time.perf_counter() - start)
        target["spec"]["tags"]["tier"] = original
        client.post(f"{url}/api/v1/apply", json=[target])
    return times, len(hosts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--workloads-per-host", type=int, default=10)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--lab", metavar="URL", help="also time the agents of a running lab")
    args = ap.parse_args(argv)

    result: dict[str, Any] = {"agents": args.agents, "trials": args.trials}
    with tempfile.TemporaryDirectory(prefix="tagwall-bench-") as tmp:
        say(f"controller: {args.agents} hosts, {args.workloads_per_host} workloads each …")
        process, url = start_controller(Path(tmp), manifests(args.agents, args.workloads_per_host))
        try:
            all_acked, single, size = asyncio.run(sim_agents(url, args.agents, args.trials))
        finally:
            process.terminate()
            process.wait(10)
    tagwall = summary(all_acked, single)
    say(f"baseline: bare WebSocket fan-out of {size} bytes to {args.agents} clients …")
    arrivals = websocket_fanout(args.agents, args.trials, size)
    base_all, base_single = [max(t) for t in arrivals], [x for t in arrivals for x in t]
    baseline = summary(base_all, base_single)
    result.update(
        propagation_p50_s=tagwall["p50_s"],
        propagation_p99_s=tagwall["p99_s"],
        propagation_single_ack_p50_s=tagwall["single_ack_p50_s"],
        propagation_single_ack_p99_s=tagwall["single_ack_p99_s"],
        fanout_baseline_p50_s=baseline["p50_s"],
        fanout_baseline_p99_s=baseline["p99_s"],
        ratio_p50_vs_fanout=tagwall["p50_s"] / baseline["p50_s"],
        ratio_p99_vs_fanout=tagwall["p99_s"] / baseline["p99_s"],
        mean_all_acked_s=statistics.fmean(all_acked),
    )
    if args.lab:
        say(f"lab at {args.lab}: timing the nftables agents …")
        lab_times, lab_hosts = lab_trials(args.lab, min(args.trials, 20))
        result.update(
            lab_agents=lab_hosts,
            lab_propagation_p50_s=percentile(lab_times, 0.5),
            lab_propagation_p99_s=percentile(lab_times, 0.99),
        )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34} {value:.4f}" if isinstance(value, float) else f"{key:34} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
