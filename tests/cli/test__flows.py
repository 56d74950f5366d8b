"""``tagwall flows / graph / top / violations`` against a real controller whose analytics role
collects IPFIX and syslog on loopback ports: what exporters send is what the commands show,
in tag terms, with exact sums; bad filters and a controller without flows are clear errors."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import EXAMPLES, running_controller, tagwall

# softflowd's IPv4 layout: addresses, octets, packets, start/end ms, ports, protocol.
FIELDS = [(8, 4), (12, 4), (1, 8), (2, 8), (152, 8), (153, 8), (7, 2), (11, 2), (4, 1)]
RECORD = struct.Struct("!IIQQQQHHB")
# (source, destination, destination port, bytes): web → app and app → db of shop prod, and a
# client outside every workload.
SENT = [
    ("10.1.1.11", "10.1.1.21", 8080, 1500),
    ("10.1.1.11", "10.1.1.21", 8080, 500),
    ("10.1.1.21", "10.1.1.31", 5432, 700),
    ("192.0.2.7", "10.1.1.11", 443, 300),
]


def ipfix_message(records: list[tuple[str, str, int, int]], sequence: int = 0) -> bytes:
    template = struct.pack("!HH", 256, len(FIELDS)) + b"".join(
        struct.pack("!HH", ie, n) for ie, n in FIELDS
    )
    template_set = struct.pack("!HH", 2, 4 + len(template)) + template
    now = int(time.time() * 1000)
    body = b"".join(
        RECORD.pack(
            int.from_bytes(socket.inet_aton(src), "big"),
            int.from_bytes(socket.inet_aton(dst), "big"),
            nbytes,
            nbytes // 100,
            now - 1000,
            now,
            40000 + i,
            port,
            6,
        )
        for i, (src, dst, port, nbytes) in enumerate(records)
    )
    data_set = struct.pack("!HH", 256, 4 + len(body)) + body
    sets = template_set + data_set
    return struct.pack("!HHIII", 10, 16 + len(sets), now // 1000, sequence, 1) + sets


@pytest.fixture(scope="module")
def collecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """(URL, protocol → UDP port) of a controller with the three-tier example that collects
    IPFIX and syslog on free loopback ports."""
    with running_controller(
        tmp_path_factory.mktemp("flows"),
        "-f",
        str(EXAMPLES / "three-tier"),
        "--collect",
        "ipfix:127.0.0.1:0",
        "--collect",
        "syslog:127.0.0.1:0",
    ) as url:
        stats = _wait_enriching(url, revision=1)  # the example, applied at start
        ports = {c["protocol"]: c["port"] for c in stats["collectors"]}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(ipfix_message(SENT), ("127.0.0.1", ports["ipfix"]))
            sock.sendto(b"\x00\x0a garbage", ("127.0.0.1", ports["ipfix"]))
        _wait_stored(url, len(SENT))
        yield url, ports


def _wait_enriching(url: str, revision: int, timeout_s: float = 15) -> dict[str, Any]:
    """The collectors' statistics once flows are enriched against ``revision`` or later."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats: dict[str, Any] = httpx.get(f"{url}/api/v1/flows/collectors").json()
        if stats["revision"] >= revision:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"flows not enriched against revision {revision} in {timeout_s} s")


def _wait_stored(url: str, rows: int, timeout_s: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = httpx.get(f"{url}/api/v1/flows/collectors").json()
        if stats["store"]["stored_rows"] >= rows:
            return dict(stats)
        time.sleep(0.1)
    raise AssertionError(f"fewer than {rows} flows stored within {timeout_s} s: {stats}")


def test_flows_show_what_the_exporter_sent_with_workloads_and_tags(
    collecting: tuple[str, dict[str, int]],
) -> None:
    url, _ = collecting
    code, stdout, stderr = tagwall(url, "flows", "--proto", "tcp", "-o", "json")
    assert code == 0, stderr
    flows = json.loads(stdout)
    assert sorted(
        (f["src"]["address"], f["dst"]["address"], f["dst"]["port"], f["bytes"]) for f in flows
    ) == sorted(SENT)
    web_to_app = [f for f in flows if f["dst"]["port"] == 8080]
    assert {f["src"]["workload"] for f in web_to_app} == {"shop-web-prod"}
    assert web_to_app[0]["dst"]["tags"]["tier"] == ["app"]
    assert all(f["source"] == "ipfix" and f["exporter"] == "127.0.0.1" for f in flows)
    outside = [f for f in flows if f["src"]["address"] == "192.0.2.7"]
    assert outside[0]["src"]["workload"] is None


def test_filters_pick_exactly_their_flows(collecting: tuple[str, dict[str, int]]) -> None:
    url, _ = collecting
    code, stdout, _ = tagwall(url, "flows", "--to-tag", "tier=db", "-o", "json")
    assert code == 0
    assert [(f["src"]["workload"], f["dst"]["workload"]) for f in json.loads(stdout)] == [
        ("shop-app-prod", "shop-db-prod")
    ]
    code, stdout, _ = tagwall(url, "flows", "--port", "8080", "--since", "1h", "-o", "json")
    assert code == 0 and len(json.loads(stdout)) == 2


def test_graph_by_application_and_tier_sums_each_edge(
    collecting: tuple[str, dict[str, int]],
) -> None:
    url, _ = collecting
    code, stdout, stderr = tagwall(
        url, "graph", "--by", "application", "--by", "tier", "-o", "json"
    )
    assert code == 0, stderr
    edges = {
        ("/".join(e["src"]), "/".join(e["dst"])): (e["flows"], e["bytes"])
        for e in json.loads(stdout)["edges"]
    }
    assert edges == {
        ("shop/web", "shop/app"): (2, 2000),
        ("shop/app", "shop/db"): (1, 700),
        ("external/external", "shop/web"): (1, 300),
    }


def test_top_talkers_by_workload(collecting: tuple[str, dict[str, int]]) -> None:
    url, _ = collecting
    code, stdout, _ = tagwall(url, "top", "--by", "workload", "-n", "1", "-o", "json")
    assert code == 0
    # a talker sends or receives: shop-app-prod received 2,000 bytes and sent 700
    assert json.loads(stdout) == [{"label": "shop-app-prod", "flows": 3, "bytes": 2700}]


def test_malformed_packets_are_counted_and_collection_goes_on(
    collecting: tuple[str, dict[str, int]],
) -> None:
    url, _ = collecting
    stats = httpx.get(f"{url}/api/v1/flows/collectors").json()
    ipfix = next(c for c in stats["collectors"] if c["protocol"] == "ipfix")
    assert sum(ipfix["decoder"]["errors"].values()) == 1
    assert ipfix["decoder"]["records"] == len(SENT)


@pytest.mark.skipif(shutil.which("logger") is None, reason="logger(1) (bsdutils) is missing")
def test_syslog_firewall_lines_become_flows_and_other_lines_messages(
    collecting: tuple[str, dict[str, int]],
) -> None:
    url, ports = collecting
    before = httpx.get(f"{url}/api/v1/flows/collectors").json()["store"]
    line = (
        "kernel: DROP IN=eth0 OUT= SRC=198.51.100.9 DST=10.1.1.31 LEN=60 PROTO=TCP SPT=5555 DPT=22"
    )
    for text in (line, "an ordinary message"):
        subprocess.run(
            ["logger", "-n", "127.0.0.1", "-P", str(ports["syslog"]), "-d", text], check=True
        )
    _wait_stored(url, before["stored_rows"] + 1)
    code, stdout, _ = tagwall(url, "flows", "--port", "22", "-o", "json")
    assert code == 0
    [flow] = json.loads(stdout)
    assert (flow["source"], flow["src"]["address"], flow["dst"]["workload"]) == (
        "syslog",
        "198.51.100.9",
        "shop-db-prod",
    )
    deadline = time.monotonic() + 10
    while (
        httpx.get(f"{url}/api/v1/flows/collectors").json()["store"]["messages"]
        <= before["messages"]
    ):
        assert time.monotonic() < deadline, "the free-text line was not kept as a message"
        time.sleep(0.1)


def test_a_bad_filter_names_the_option_and_what_is_allowed(
    collecting: tuple[str, dict[str, int]],
) -> None:
    url, _ = collecting
    code, _, stderr = tagwall(url, "flows", "--verdict", "maybe")
    assert code == 1
    assert "verdict" in stderr and "would-deny" in stderr
    code, _, stderr = tagwall(url, "flows", "--since", "yesterday")
    assert code == 2 and "duration" in stderr


def test_a_controller_runs_the_analytics_role_by_default(controller: str) -> None:
    code, stdout, _ = tagwall(controller, "flows", "-o", "json")
    assert code == 0 and json.loads(stdout) == []


def test_flows_off_answers_404_with_the_reason(tmp_path: Path) -> None:
    with running_controller(tmp_path, "--flows", "off") as url:
        code, _, stderr = tagwall(url, "graph")
    assert code == 1 and "without a flow store" in stderr
