"""What the agent's reader tests share: ctnetlink messages as the kernel lays them out (and a
hypothesis strategy of them), a netlink reader iterated by a thread, and waiting for a
condition."""

from __future__ import annotations

import contextlib
import ipaddress
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

DESTROY_TYPE = 1 << 8 | 2  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE


def attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def nest(kind: int, *children: bytes) -> bytes:
    return attr(kind | 0x8000, b"".join(children))


def be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def _tuple(kind: int, src: str, dst: str, proto: int, ports: tuple[int, ...] | None) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    v4 = a.version == 4
    ip = nest(1, attr(1 if v4 else 3, a.packed), attr(2 if v4 else 4, b.packed))
    children = [attr(1, bytes([proto]))]
    if proto in (1, 58) and ports is not None:  # ICMP: id, type, code
        first = 4 if proto == 1 else 7
        ident, icmp_type, icmp_code = ports
        children += [
            attr(first, be(ident, 2)),
            attr(first + 1, bytes([icmp_type])),
            attr(first + 2, bytes([icmp_code])),
        ]
    elif ports is not None:
        children += [attr(2, be(ports[0], 2)), attr(3, be(ports[1], 2))]
    return nest(kind, ip, nest(2, *children))


def message(
    *,
    ct_id: int = 4242,
    mark: int = 0x0007_0003,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = 6,
    ports: tuple[int, ...] | None = (40000, 80),
    counters: tuple[int, int, int, int] | None = (3, 180, 2, 120),
    start_ns: int | None = 10**9,
    stop_ns: int | None = 3 * 10**9,
    tcp_state: int | None = 7,
    labels: int | None = None,
    msg_type: int = DESTROY_TYPE,
) -> bytes:
    """A message with the attributes a DESTROY of this kernel carries (the reply tuple,
    status, use count and TCP protocol info too, which the decoder skips).  ``ports`` is
    (sport, dport), or (id, type, code) for ICMP/ICMPv6; None leaves them out."""
    reply_ports = ports if ports is None or proto in (1, 58) else (ports[1], ports[0])
    parts = [
        _tuple(1, src, dst, proto, ports),
        _tuple(2, dst, src, proto, reply_ports),
        attr(3, be(0x18E, 4)),  # CTA_STATUS
        attr(8, be(mark, 4)),
    ]
    if counters is not None:
        p, b, rp, rb = counters
        parts += [
            nest(9, attr(1, be(p, 8)), attr(2, be(b, 8))),
            nest(10, attr(1, be(rp, 8)), attr(2, be(rb, 8))),
        ]
    stamp = [attr(k, be(v, 8)) for k, v in ((1, start_ns), (2, stop_ns)) if v is not None]
    if stamp:
        parts.append(nest(20, *stamp))
    parts += [attr(12, be(ct_id, 4)), attr(11, be(1, 4))]  # CTA_ID, CTA_USE
    if tcp_state is not None:
        tcp = (attr(1, bytes([tcp_state])), attr(2, b"\x07"), attr(3, b"\x07"))
        tcp += (attr(4, b"\x00\x00"), attr(5, b"\x00\x00"))
        parts.append(nest(4, nest(1, *tcp)))
    if labels is not None:
        parts.append(attr(22, labels.to_bytes(16, sys.byteorder)))
    body = b"".join(parts)
    return struct.pack("=IHHII", 20 + len(body), msg_type, 0, 0, 0) + bytes([2, 0, 0, 0]) + body


U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
FEW_IDS = st.integers(1, 40) | U32  # ids repeat: several flows, or a reused id


@st.composite
def messages(draw: st.DrawFn, ct_ids: st.SearchStrategy[int] = FEW_IDS) -> bytes:
    """A DESTROY of any protocol and family, with or without counters, times and labels;
    values are drawn from small sets too, so that several flows share ids, marks, labels."""
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([6, 17, 6, 17, 58 if v6 else 1, 47]))
    if proto in (1, 58):
        ports: tuple[int, ...] | None = draw(
            st.tuples(st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255))
        )
    elif proto == 47:
        ports = None
    else:
        ports = draw(st.tuples(st.integers(0, 65535), st.integers(0, 65535)))
    host = st.integers(1, 3)
    src, dst = draw(host), draw(host)
    address = "fd00::{}" if v6 else "10.0.0.{}"
    return message(
        ct_id=draw(ct_ids),
        mark=draw(st.sampled_from([0, 0x0007_0003, 0x0007_0000, 0x002A_0003]) | U32),
        src=address.format(src),
        dst=address.format(dst),
        proto=proto,
        ports=ports,
        counters=draw(st.none() | st.tuples(U64, U64, U64, U64)),
        start_ns=draw(st.none() | st.just(0) | st.integers(0, 2**63)),
        stop_ns=draw(st.none() | st.just(0) | st.integers(0, 2**63)),
        tcp_state=draw(st.integers(0, 10)) if proto == 6 else None,
        labels=draw(st.none() | st.sampled_from([0, 1, 2**64, 2**127 + 5])),
    )


class Reader(Protocol):
    """What ``ConntrackReader`` and ``NflogReader`` share."""

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


R = TypeVar("R", bound=Reader)


@contextlib.contextmanager
def iterated(reader: R) -> Iterator[tuple[R, list[Any]]]:
    """``reader`` iterated by a thread into a list; closed (and the thread joined) after."""
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.extend(reader), daemon=True)
    thread.start()
    try:
        yield reader, seen
    finally:
        reader.close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "close() did not stop the iterator"


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
