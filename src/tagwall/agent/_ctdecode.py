"""The ctnetlink message decoder: one message at a time (``decode``), and a run of DESTROY
messages at once, column by column (``decode_destroys`` → ``ConntrackBatch``).

Why two: the per-message walk costs ~13 µs an event, which made decoding the largest part of
what recording a connection costs (docs/benchmarks.md, data path).  DESTROY messages repeat a
layout, as IPFIX data sets do: every TCP/IPv4 DESTROY of one host has the same attributes at
the same offsets, only the values differ.  So a run is grouped by message length, one message
of a group is walked (its *layout*: where each attribute header sits and which value is
where), every other message of the group is checked to carry the same header bytes at those
offsets (numpy, all rows at once), and the values of the matching ones are read with one
structured dtype.  What does not match, or is laid out in a way the columns do not cover, is
walked one message at a time; the result is the same either way (``decode`` of each message,
to the last field; the tests fuzz this).

Why identical header bytes at the visited offsets suffice: the walk reads nothing but headers
(``u16 len, u16 type``) and the message length to decide where it goes next and what each
value's range is, so two messages of one length that agree on the headers it read decode from
the same offsets.

Wire layout (``linux/netfilter/nfnetlink_conntrack.h``): after the netlink header and the
4-byte ``nfgenmsg``, attributes ``u16 len, u16 type`` (host order; type bit 15 = nested, bit 14
= network byte order, masked off), values big-endian, each padded to 4 bytes.  Read here:
``CTA_TUPLE_ORIG`` (1) → ``CTA_TUPLE_IP`` (1: v4 src 1, dst 2; v6 src 3, dst 4) and
``CTA_TUPLE_PROTO`` (2: number 1 u8, ports 2 and 3 be16, ICMP type 5 and code 6, ICMPv6 type
8 and code 9), ``CTA_PROTOINFO`` (4) → ``CTA_PROTOINFO_TCP`` (1) → state (1, u8), ``CTA_MARK``
(8, be32), ``CTA_COUNTERS_ORIG``/``_REPLY`` (9/10 → packets 1, bytes 2, be64), ``CTA_ID`` (12,
be32), ``CTA_TIMESTAMP`` (20 → start 1, stop 2, be64 ns), ``CTA_LABELS`` (22: the kernel's
label bitmap, an array of native ``unsigned long``, so bit n of the little-endian integer is
label n here).
"""

from __future__ import annotations

import enum
import socket
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from ._netlink import NLMSG

__all__ = [
    "TCP_CLOSING_STATES",
    "ConntrackBatch",
    "ConntrackEvent",
    "EventKind",
    "FiveTuple",
    "decode",
    "decode_destroys",
]

# enum tcp_conntrack: FIN_WAIT 4, CLOSE_WAIT 5, LAST_ACK 6, TIME_WAIT 7, CLOSE 8 — a FIN or an
# RST was seen, the connection is over for its ends although the entry lingers (TIME_WAIT 2 min).
TCP_CLOSING_STATES = frozenset({4, 5, 6, 7, 8})


class EventKind(enum.Enum):
    NEW = "new"  # the first packet was accepted and the entry confirmed
    UPDATE = "update"  # state, mark or timeout changed (only with ``include_updates``)
    DESTROY = "destroy"  # the entry was removed: timed out, reaped after close, or flushed
    SNAPSHOT = "snapshot"  # the entry as the periodic dump found it


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """A flow's original direction.  ``sport``/``dport`` are None for protocols without
    ports; ``icmp_type``/``icmp_code`` are set only for ICMP and ICMPv6."""

    src: str
    dst: str
    proto: int  # IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


@dataclass(frozen=True, slots=True)
class ConntrackEvent:
    """Counters count IP packets and bytes of whole IP packets (headers included), None when
    the kernel sent none (NEW, or acct off when the flow began).  Times are ns since the epoch;
    ``start_ns``/``stop_ns`` come from the kernel (None without timestamps, ``stop_ns`` only on
    DESTROY), ``observed_ns`` is when the reader received the event."""

    kind: EventKind
    ct_id: int
    flow: FiveTuple
    mark: int  # ct mark, uint32; 0 when no rule set one
    packets_orig: int | None
    bytes_orig: int | None
    packets_reply: int | None
    bytes_reply: int | None
    start_ns: int | None
    stop_ns: int | None
    observed_ns: int
    tcp_state: int | None = None  # the kernel's TCP state (``TCP_CLOSING_STATES``); None: not TCP
    labels: int = 0  # ct label, 128 bits (bit n = label n); 0 when none is set


# -- one message at a time ----------------------------------------------------------------------

_ATTR = struct.Struct("=HH")  # length, type (host order)
_NESTED_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_CTA_TUPLE_ORIG, _CTA_PROTOINFO, _CTA_MARK = 1, 4, 8
_CTA_COUNTERS_ORIG, _CTA_COUNTERS_REPLY, _CTA_ID, _CTA_TIMESTAMP = 9, 10, 12, 20
_CTA_LABELS = 22
_ICMP_TYPE_CODE = {1: (5, 6), 58: (8, 9)}  # protocol → (type attribute, code attribute)
_Attrs = dict[int, tuple[int, int]]


def _attributes(data: bytes, start: int, end: int, visited: list[int] | None = None) -> _Attrs:
    """type → (value start, value end) of the attributes in ``data[start:end]``; the offset
    of each header read is appended to ``visited`` when given (``_layout``)."""
    out: _Attrs = {}
    end = min(end, len(data))
    unpack = _ATTR.unpack_from  # the hot loop of the per-message walk: no lookups
    while start + 4 <= end:
        if visited is not None:
            visited.append(start)
        length, kind = unpack(data, start)
        if length < 4:
            break  # malformed: the kernel never sends it; stop rather than loop
        stop = start + length
        out[kind & _NESTED_TYPE_MASK] = (start + 4, stop if stop < end else end)
        start += (length + 3) & ~3
    return out


def _nested(data: bytes, attrs: _Attrs, kind: int, visited: list[int] | None = None) -> _Attrs:
    where = attrs.get(kind)
    return _attributes(data, *where, visited) if where else {}


def _be(data: bytes, attrs: _Attrs, kind: int) -> int | None:
    where = attrs.get(kind)
    return int.from_bytes(data[where[0] : where[1]], "big") if where else None


@dataclass(frozen=True, slots=True)
class _Walk:
    """Where one message keeps what ``decode`` reads: attribute dicts by name."""

    top: _Attrs
    ip: _Attrs
    proto: _Attrs
    orig: _Attrs
    reply: _Attrs
    stamp: _Attrs
    tcp: _Attrs
    family: int
    size: int  # address bytes
    src: tuple[int, int] | None
    dst: tuple[int, int] | None

    def addresses_ok(self) -> bool:
        src, dst, size = self.src, self.dst, self.size
        return not (
            src is None or dst is None or src[1] - src[0] != size or dst[1] - dst[0] != size
        )


def _walk(data: bytes, visited: list[int] | None = None) -> _Walk:
    top = _attributes(data, NLMSG.size + 4, len(data), visited)
    tuple_ = _nested(data, top, _CTA_TUPLE_ORIG, visited)
    ip, proto = _nested(data, tuple_, 1, visited), _nested(data, tuple_, 2, visited)
    family, size, (src_kind, dst_kind) = (
        (socket.AF_INET, 4, (1, 2)) if 1 in ip else (socket.AF_INET6, 16, (3, 4))
    )
    orig = _nested(data, top, _CTA_COUNTERS_ORIG, visited)
    reply = _nested(data, top, _CTA_COUNTERS_REPLY, visited)
    stamp = _nested(data, top, _CTA_TIMESTAMP, visited)
    tcp = _nested(data, _nested(data, top, _CTA_PROTOINFO, visited), 1, visited)
    return _Walk(
        top, ip, proto, orig, reply, stamp, tcp, family, size, ip.get(src_kind), ip.get(dst_kind)
    )


def decode(kind: EventKind, data: bytes, observed_ns: int) -> ConntrackEvent | None:
    """The event of one ctnetlink message; None when it has no readable original tuple (the
    kernel always sends one: the reader counts such a message and goes on)."""
    w = _walk(data)
    if not w.addresses_ok():
        return None
    src, dst, proto = w.src, w.dst, w.proto
    assert src is not None and dst is not None  # addresses_ok
    number = _be(data, proto, 1) or 0
    icmp = _ICMP_TYPE_CODE.get(number)
    flow = FiveTuple(
        src=socket.inet_ntop(w.family, data[src[0] : src[1]]),
        dst=socket.inet_ntop(w.family, data[dst[0] : dst[1]]),
        proto=number,
        sport=_be(data, proto, 2),
        dport=_be(data, proto, 3),
        icmp_type=_be(data, proto, icmp[0]) if icmp else None,
        icmp_code=_be(data, proto, icmp[1]) if icmp else None,
    )
    top, orig, reply, stamp = w.top, w.orig, w.reply, w.stamp
    return ConntrackEvent(
        kind=kind,
        ct_id=_be(data, top, _CTA_ID) or 0,
        flow=flow,
        mark=_be(data, top, _CTA_MARK) or 0,
        packets_orig=_be(data, orig, 1),
        bytes_orig=_be(data, orig, 2),
        packets_reply=_be(data, reply, 1),
        bytes_reply=_be(data, reply, 2),
        start_ns=_be(data, stamp, 1),
        stop_ns=_be(data, stamp, 2),
        observed_ns=observed_ns,
        tcp_state=_be(data, w.tcp, 1),
        labels=_labels(data, top),
    )


def _labels(data: bytes, attrs: _Attrs) -> int:
    where = attrs.get(_CTA_LABELS)
    return int.from_bytes(data[where[0] : where[1]], sys.byteorder) if where else 0


# -- a run of DESTROY messages at once ----------------------------------------------------------

# Below this many messages of one length, they are walked one by one: a group costs ~55 µs
# whatever its size (numpy's fixed cost per call), a walk ~15-18 µs a message.  Measured, the
# whole pipeline (decode, assemble, JSON) per message: runs of 1 as columns 59 µs, walked 33;
# 2: 32 and 32; 4: 17.5 and 30.5; 8: 11 and 30 (bench/flow_pipeline.py messages).
MIN_COLUMNAR = 3
_MAX_LAYOUTS = 4  # layouts found per message length and run (and kept per length)
_BE = {1: ">u1", 2: ">u2", 4: ">u4", 8: ">u8"}
_NATIVE = {1: "=u1", 2: "=u2", 4: "=u4", 8: "=u8"}
Column = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class _Layout:
    header_bytes: npt.NDArray[np.intp]  # offsets of every header byte the walk read
    header_values: npt.NDArray[np.uint8]  # those bytes in a message of this layout
    family: int
    dtype: np.dtype[np.void]  # the fields below at their offsets, itemsize = message length
    zero: frozenset[str]  # fields present with an empty value: 0
    labels: tuple[str, ...]  # "labels" or ("labels_0", "labels_1") low part first; () none


def _layout(data: bytes) -> _Layout | None:
    """The layout of one message, or None when its values do not fit the columns (a width
    other than 0/1/2/4/8 bytes, labels not 0/8/16 bytes) or it has no readable tuple."""
    visited: list[int] = []
    w = _walk(data, visited)
    if not w.addresses_ok():
        return None
    fields: dict[str, tuple[str, int]] = {}
    zero: set[str] = set()
    wanted = {
        "ct_id": (w.top, _CTA_ID),
        "mark": (w.top, _CTA_MARK),
        "proto": (w.proto, 1),
        "sport": (w.proto, 2),
        "dport": (w.proto, 3),
        "icmp_type_1": (w.proto, 5),
        "icmp_code_1": (w.proto, 6),
        "icmp_type_58": (w.proto, 8),
        "icmp_code_58": (w.proto, 9),
        "packets_orig": (w.orig, 1),
        "bytes_orig": (w.orig, 2),
        "packets_reply": (w.reply, 1),
        "bytes_reply": (w.reply, 2),
        "start_ns": (w.stamp, 1),
        "stop_ns": (w.stamp, 2),
        "tcp_state": (w.tcp, 1),
    }
    for name, (attrs, kind) in wanted.items():
        where = attrs.get(kind)
        if where is None:
            continue
        width = where[1] - where[0]
        if width == 0:
            zero.add(name)
        elif width in _BE:
            fields[name] = (_BE[width], where[0])
        else:
            return None
    assert w.src is not None and w.dst is not None  # addresses_ok
    fields["src"] = (f"V{w.size}", w.src[0])
    fields["dst"] = (f"V{w.size}", w.dst[0])
    labels: tuple[str, ...] = ()
    where = w.top.get(_CTA_LABELS)
    if where is not None:
        width = where[1] - where[0]
        if width == 0:
            pass  # int.from_bytes(b"") is 0, as no labels
        elif width in _NATIVE:
            labels, fields["labels"] = ("labels",), (_NATIVE[width], where[0])
        elif width == 16:
            low, high = (0, 8) if sys.byteorder == "little" else (8, 0)
            fields["labels_0"] = ("=u8", where[0] + low)
            fields["labels_1"] = ("=u8", where[0] + high)
            labels = ("labels_0", "labels_1")
        else:
            return None
    names = list(fields)
    dtype = np.dtype(
        {
            "names": names,
            "formats": [fields[n][0] for n in names],
            "offsets": [fields[n][1] for n in names],
            "itemsize": len(data),
        }
    )
    header_bytes = (np.array(visited, np.intp)[:, None] + np.arange(4)).ravel()
    header_values = np.frombuffer(data, np.uint8)[header_bytes]
    return _Layout(header_bytes, header_values, w.family, dtype, frozenset(zero), labels)


# The layouts found so far, by message length, the latest first: a host's DESTROYs have a
# handful (one per family, protocol, with or without labels), and finding one (walk, dtype)
# costs ~70 µs, which was the larger part of a run of 8 (bench/flow_pipeline.py).  A cached
# layout is exact: a message that has its header bytes at its offsets walks the same way.
# Readers in several threads may share it (an item is replaced whole, never changed in
# place); it is forgotten past ``_MAX_KNOWN`` lengths (a stream of garbage must not grow it).
_known: dict[int, tuple[_Layout, ...]] = {}
_MAX_KNOWN = 64


@dataclass(frozen=True, slots=True, eq=False)
class DestroyColumns:
    """DESTROY events of one layout and one protocol class (ICMP, ICMPv6, any other), a
    column per field.  Invariant: every column has one row per entry of ``index``; a field
    the layout lacks is absent from ``columns`` (the event's None; ``mark`` and ``ct_id``
    are then 0, as in ``decode``)."""

    index: npt.NDArray[np.int64]  # each row's position in the run
    family: int
    icmp: int | None  # 1 or 58: every row is that protocol and has ICMP type/code columns
    columns: dict[str, Column]

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: npt.NDArray[np.bool_]) -> DestroyColumns:
        return DestroyColumns(
            self.index[rows],
            self.family,
            self.icmp,
            {name: column[rows] for name, column in self.columns.items()},
        )

    def values(self, name: str, default: int | None = None) -> list[Any]:
        """A column as Python values (``default`` for each row where the field is absent)."""
        column = self.columns.get(name)
        return column.tolist() if column is not None else [default] * len(self.index)

    def addresses(self, name: str) -> list[str]:
        ntop, family = socket.inet_ntop, self.family
        return [ntop(family, raw) for raw in self.columns[name].tolist()]

    def labels(self) -> list[int] | None:
        """Each row's ct label, None when no row has one."""
        return _optional(self.columns.get("labels"))

    def events(self, observed_ns: int) -> list[ConntrackEvent]:
        """The rows as the events ``decode`` makes of them."""
        none = [None] * len(self)
        kinds = (
            (self.values("icmp_type"), self.values("icmp_code"))
            if self.icmp is not None
            else (none, none)
        )
        flows = [
            FiveTuple(*row)
            for row in zip(
                self.addresses("src"),
                self.addresses("dst"),
                self.values("proto", 0),
                self.values("sport"),
                self.values("dport"),
                *kinds,
                strict=True,
            )
        ]
        labels = self.labels() or [0] * len(self)
        destroy = EventKind.DESTROY
        return [
            ConntrackEvent(destroy, i, flow, mark, p, b, rp, rb, start, stop, observed_ns, tcp, lab)
            for i, flow, mark, p, b, rp, rb, start, stop, tcp, lab in zip(
                self.values("ct_id", 0),
                flows,
                self.values("mark", 0),
                self.values("packets_orig"),
                self.values("bytes_orig"),
                self.values("packets_reply"),
                self.values("bytes_reply"),
                self.values("start_ns"),
                self.values("stop_ns"),
                self.values("tcp_state"),
                labels,
                strict=True,
            )
        ]


def _optional(column: Column | None) -> list[int] | None:
    return None if column is None or not column.any() else column.tolist()


@dataclass(frozen=True, slots=True, eq=False)
class ConntrackBatch:
    """A run of DESTROY messages, decoded: ``groups`` column by column, ``others`` (those
    of a layout the columns do not cover, or too few to be worth it) one by one, with their
    position in the run.  ``events()`` is every event in the order of the run; ``malformed``
    messages (no readable original tuple) have none."""

    observed_ns: int
    groups: tuple[DestroyColumns, ...]
    others: tuple[tuple[int, ConntrackEvent], ...]
    malformed: int

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups) + len(self.others)

    def ct_ids(self) -> list[int]:
        ids = [event.ct_id for _, event in self.others]
        for g in self.groups:
            ids += g.values("ct_id", 0)
        return ids

    def events(self) -> list[ConntrackEvent]:
        rows = list(self.others)
        for g in self.groups:
            rows += zip(g.index.tolist(), g.events(self.observed_ns), strict=True)
        rows.sort(key=itemgetter(0))
        return [event for _, event in rows]


def decode_destroys(
    messages: Iterable[bytes], observed_ns: int, *, min_columnar: int = MIN_COLUMNAR
) -> ConntrackBatch:
    """The DESTROY events of ``messages``; the same as ``decode`` of each, faster.  Messages
    of a length fewer than ``min_columnar`` share are walked one by one."""
    run = list(messages)
    by_length: dict[int, list[int]] = {}
    for i, data in enumerate(run):
        by_length.setdefault(len(data), []).append(i)
    groups: list[DestroyColumns] = []
    walked: list[int] = []
    for length, positions in by_length.items():
        if len(positions) < min_columnar:
            walked += positions
            continue
        index = np.array(positions, np.int64)
        joined = b"".join([run[i] for i in positions])
        rows = np.frombuffer(joined, np.uint8).reshape(len(positions), length)
        pending = np.arange(len(positions))
        known, found = _known.get(length, ()), 0
        while len(pending) >= min_columnar:
            if known:
                layout, known = known[0], known[1:]
            elif found < _MAX_LAYOUTS:
                found += 1
                first = positions[int(pending[0])]
                new = _layout(run[first])
                if new is None:
                    walked.append(first)
                    pending = pending[1:]
                    continue
                layout = new
                if len(_known) >= _MAX_KNOWN:
                    _known.clear()
                _known[length] = (layout, *_known.get(length, ()))[:_MAX_LAYOUTS]
            else:
                break
            same = (rows[pending][:, layout.header_bytes] == layout.header_values).all(axis=1)
            if not same.any():
                continue
            matching, pending = pending[same], pending[~same]
            records = np.frombuffer(joined, layout.dtype)[matching]
            groups += _columns(records, index[matching], layout)
        walked += index[pending].tolist()
    others: list[tuple[int, ConntrackEvent]] = []
    for i in sorted(walked):
        event = decode(EventKind.DESTROY, run[i], observed_ns)
        if event is not None:
            others.append((i, event))
    return ConntrackBatch(observed_ns, tuple(groups), tuple(others), len(walked) - len(others))


def _columns(
    records: npt.NDArray[np.void], index: npt.NDArray[np.int64], layout: _Layout
) -> list[DestroyColumns]:
    """The records split by protocol class: ICMP and ICMPv6 read their type and code from
    attributes of their own (``decode``'s ``_ICMP_TYPE_CODE``), every other protocol has none."""
    names = records.dtype.names or ()
    columns: dict[str, Column] = {n: records[n] for n in names if not n.startswith("labels")}
    for name in layout.zero:
        columns[name] = np.zeros(len(records), np.uint8)
    if layout.labels == ("labels",):
        columns["labels"] = records["labels"].astype(object)
    elif layout.labels:
        low, high = records["labels_0"].astype(object), records["labels_1"].astype(object)
        columns["labels"] = low | high << 64
    proto = columns.get("proto")
    classes: list[tuple[int | None, npt.NDArray[np.bool_]]] = []
    if proto is None:
        classes.append((None, np.ones(len(records), np.bool_)))
    else:
        icmp4, icmp6 = proto == 1, proto == 58
        classes += [(None, ~(icmp4 | icmp6)), (1, icmp4), (58, icmp6)]
    out = []
    for icmp, rows in classes:
        if not rows.any():
            continue
        kept = {
            name: column[rows] for name, column in columns.items() if not name.startswith("icmp")
        }
        if icmp is not None:
            for part in ("type", "code"):
                column = columns.get(f"icmp_{part}_{icmp}")
                if column is not None:
                    kept[f"icmp_{part}"] = column[rows]
        out.append(DestroyColumns(index[rows], layout.family, icmp, kept))
    return out
