"""The NFLOG reader on a real kernel: nftables rules ``log group G prefix "tw:…"`` + drop in a
namespace (``twfr-<pid>-<random>-*``, removed at the end, also on failure), packets of known
sizes sent into them, and the records the reader yields for them."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tagwall._netns import NETNS_DIR, entered
from tagwall.agent._conntrack import FiveTuple
from tagwall.agent._nflog import NflogReader, NflogRecord, parse_packet

from .support import iterated, wait_for

WHY_NOT = (
    "needs root (network namespaces, nftables)"
    if os.geteuid() != 0
    else "needs the nft and ip commands"
    if shutil.which("nft") is None or shutil.which("ip") is None
    else None
)
needs_root = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

PREFIX = "twfr-"
GROUP = 7
UDP_PORT, TCP_PORT = 7100, 7101
RULES = f"""
table inet twfr {{
  chain output {{
    type filter hook output priority 0;
    udp dport {UDP_PORT} meta mark set 0x2a log group {GROUP} prefix "tw:deny:r1" drop
    icmp type echo-request log group {GROUP} prefix "tw:ping" drop
  }}
  chain input {{
    type filter hook input priority 0;
    tcp dport {TCP_PORT} log group {GROUP} prefix "tw:deny:r2" drop
  }}
}}
"""

# The docstring's worked example of ``_nflog``, as the kernel sent it.
EXAMPLE = bytes.fromhex(
    "6c000000 0004 0000 00000000 00000000 02000005 08000100 08000300 0a000a00 74773a72"
    "37000000 08000500 00000001 08000200 0000002a 08000b00 00000000 08000e00 00000000"
    "21000900 4500001d 77ff4000 4011c4ce 7f000001 7f000001 9c400035 0009fe1c 78000000"
)


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Fresh namespaces named ``twfr-<pid>-<random>-<role>``; leftovers of killed runs go."""
    for name in os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []:
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    base = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
    names = {role: f"{base}-{role}" for role in roles}
    try:
        for name in names.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            subprocess.run(
                ["ip", "netns", "exec", name, "nft", "-f", "-"], input=RULES, text=True, check=True
            )
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def ns() -> Iterator[dict[str, str]]:
    with namespaces("a", "b") as names:
        yield names


def reading(
    netns: str,
) -> contextlib.AbstractContextManager[tuple[NflogReader, list[NflogRecord]]]:
    return iterated(NflogReader(GROUP, netns, flush_timeout_s=0.01))


def send_udp(netns: str, family: socket.AddressFamily, dst: str, payload: bytes) -> int:
    """Send one datagram that the output rule drops; returns its source port."""
    with entered(netns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.bind((dst, 0))
        with contextlib.suppress(PermissionError):  # EPERM: the rule dropped it
            sock.sendto(payload, (dst, UDP_PORT))
        return int(sock.getsockname()[1])


def test_the_docstring_example_parses_as_documented() -> None:
    record = parse_packet(EXAMPLE, observed_ns=5)
    assert record == NflogRecord(
        prefix="tw:r7",
        flow=FiveTuple("127.0.0.1", "127.0.0.1", 17, 40000, 53),
        length=29,
        mark=0x2A,
        in_ifindex=None,
        out_ifindex=1,
        timestamp_ns=None,
        observed_ns=5,
    )


def test_a_message_without_an_ip_payload_is_not_a_record() -> None:
    truncated = EXAMPLE[:-36]  # the payload attribute cut off
    assert parse_packet(truncated, observed_ns=0) is None


@pytest.mark.parametrize(
    ("family", "address", "overhead"),
    [(socket.AF_INET, "127.0.0.1", 28), (socket.AF_INET6, "::1", 48)],
)
@pytest.mark.privileged
@needs_root
def test_each_logged_udp_packet_is_one_record_with_prefix_tuple_and_length(
    ns: dict[str, str], family: socket.AddressFamily, address: str, overhead: int
) -> None:
    """K datagrams of known sizes (some longer than the 128-byte copy range): K records,
    with the rule's prefix and mark, and the IP length of each packet."""
    sizes = [0, 1, 100, 1000, 1400, 60]
    with reading(ns["a"]) as (reader, seen):
        ports = [send_udp(ns["a"], family, address, b"p" * size) for size in sizes]
        wait_for(lambda: len(seen) >= len(sizes))
        time.sleep(0.1)  # nothing more arrives
    assert [(r.prefix, r.flow, r.length, r.mark) for r in seen] == [
        ("tw:deny:r1", FiveTuple(address, address, 17, port, UDP_PORT), overhead + size, 0x2A)
        for port, size in zip(ports, sizes, strict=True)
    ]
    assert {(r.in_ifindex, r.out_ifindex) for r in seen} == {(None, 1)}  # sent, out of lo
    assert reader.statistics().records == len(sizes)
    assert reader.statistics().lost_overruns == reader.statistics().skipped == 0


@pytest.mark.privileged
@needs_root
def test_tcp_in_the_input_hook_and_icmp_records(ns: dict[str, str]) -> None:
    """A SYN logged on input has the input interface and ports; a ping has type and code."""
    with reading(ns["a"]) as (_, seen):
        with entered(ns["a"]):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        with tcp, icmp:
            tcp.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                tcp.connect(("127.0.0.1", TCP_PORT))
            echo = bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0])  # type 8, code 0, checksum, id, seq
            with contextlib.suppress(PermissionError):
                icmp.sendto(echo, ("127.0.0.1", 0))
            wait_for(lambda: {r.prefix for r in seen} >= {"tw:deny:r2", "tw:ping"})
            sport = tcp.getsockname()[1]
    syn = next(r for r in seen if r.prefix == "tw:deny:r2")
    assert syn.flow == FiveTuple("127.0.0.1", "127.0.0.1", 6, sport, TCP_PORT)
    assert (syn.in_ifindex, syn.out_ifindex, syn.length) == (1, None, 60)  # SYN with options
    ping = next(r for r in seen if r.prefix == "tw:ping")
    assert ping.flow == FiveTuple("127.0.0.1", "127.0.0.1", 1, icmp_type=8, icmp_code=0)
    assert ping.length == 28


@pytest.mark.privileged
@needs_root
def test_a_group_is_one_readers_and_one_namespaces(ns: dict[str, str]) -> None:
    """A second reader of the same group in the same namespace is refused (EPERM); the same
    group in another namespace is another group; closing frees the group at once."""
    with reading(ns["a"]) as (_, seen_a), reading(ns["b"]) as (_, seen_b):
        with pytest.raises(PermissionError, match="group 7 cannot be bound: bound by another"):
            NflogReader(GROUP, ns["a"])
        port_a = send_udp(ns["a"], socket.AF_INET, "127.0.0.1", b"a")
        port_b = send_udp(ns["b"], socket.AF_INET, "127.0.0.1", b"b")
        wait_for(lambda: bool(seen_a and seen_b))
        time.sleep(0.1)
    assert [r.flow.sport for r in seen_a] == [port_a]
    assert [r.flow.sport for r in seen_b] == [port_b]
    NflogReader(GROUP, ns["a"]).close()  # the group was released with the socket
