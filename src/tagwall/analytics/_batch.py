"""Flow records in columns: the one shape every source produces and the store takes.

Why columns: a collector that builds one Python object per record parses IPFIX at ~19k
records/s on this machine, Debian's nfcapd at ~1.5M (FIELD-NOTES "Flow records").  So decoders
turn a whole data set into numpy columns at once (one structured dtype per template), and the
columns go to DuckDB through Arrow without a per-record step.

Encodings (worked example: ``10.1.2.3:40000 → 10.4.5.6:443/tcp``):

* an address is two ``uint64`` columns, ``*_hi`` and ``*_lo``, the 128 bits of its IPv6 form;
  IPv4 is IPv4-mapped (``::ffff:10.1.2.3`` → ``hi = 0``, ``lo = 0x0000_ffff_0a01_0203``), so
  one column pair holds both families and sorts and compares like the addresses;
* times are ``int64`` milliseconds since the Unix epoch, UTC; ``end_ms >= start_ms``;
* ``packets``/``bytes`` count the initiator's direction (source → destination),
  ``rpackets``/``rbytes`` the replies; a source that sees one direction only (NetFlow, sFlow)
  reports the other as 0.  Sampled sources (sFlow) have the sampling rate already applied;
* ``proto`` is the IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP); ports are
  0 for protocols without them.

What only tagwall's agents know travels in the per-end columns (``src_*`` for the source's
end, ``dst_*`` for the destination's): ``*_verdict`` (:class:`Verdict`: what decided the flow
at that end, or NONE where no agent of tagwall enforces that end) and ``*_rule``, an index into
the batch's ``rules`` tuple (-1: none).  ``*_audit`` and ``*_audit_rule`` do the same for
policies in ``audit`` mode: ``WOULD_ALLOW`` / ``WOULD_DENY`` where an audited policy decided.

Which service instances carried a flow (a redirect rule steered it) is ``via``, only agents
know it: one text per record, ``"fw-1/fw-a"`` (instance/workload; a chain's hops joined by
``,``, in order), None where nothing steered it; None as a whole for a batch without any.

Invariant: every column has the same length, the batch's ``len`` (``via`` too when set);
columns are never mutated after the batch is built (consumers may share them).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "COLUMNS",
    "FlowBatch",
    "RuleRef",
    "Source",
    "Verdict",
    "concat",
    "ip_columns",
    "ip_text",
    "ipv4_columns",
]

Column = npt.NDArray[Any]


class Source(enum.Enum):
    """Where a batch came from."""

    AGENT = "agent"  # a tagwall agent: conntrack and NFLOG on its host
    IPFIX = "ipfix"  # RFC 7011
    NETFLOW5 = "netflow5"
    NETFLOW9 = "netflow9"  # RFC 3954
    SFLOW = "sflow"  # sFlow v5 flow samples, scaled by the sampling rate
    SYSLOG = "syslog"  # a firewall log line a known format matched


class Verdict(enum.IntEnum):
    """The decision at one end, as stored (``uint8``)."""

    NONE = 0  # not evaluated at this end (no agent there, or a collector's record)
    ALLOW = 1
    DENY = 2
    WOULD_ALLOW = 3  # an audit-mode policy would have allowed
    WOULD_DENY = 4  # an audit-mode policy would have denied


@dataclass(frozen=True, slots=True)
class RuleRef:
    """What decided at one end.  ``rule`` is ``None`` for a tier's or the posture's implicit
    default (``policy`` then names that default, e.g. ``"default-deny"``)."""

    tier: str
    policy_set: str | None
    policy: str | None
    rule: str | None


# name → numpy dtype of every column, in the store's order.
COLUMNS: Mapping[str, np.dtype[Any]] = {
    "start_ms": np.dtype(np.int64),
    "end_ms": np.dtype(np.int64),
    "src_hi": np.dtype(np.uint64),
    "src_lo": np.dtype(np.uint64),
    "dst_hi": np.dtype(np.uint64),
    "dst_lo": np.dtype(np.uint64),
    "proto": np.dtype(np.uint8),
    "src_port": np.dtype(np.uint16),
    "dst_port": np.dtype(np.uint16),
    "packets": np.dtype(np.uint64),
    "bytes": np.dtype(np.uint64),
    "rpackets": np.dtype(np.uint64),
    "rbytes": np.dtype(np.uint64),
    "src_verdict": np.dtype(np.uint8),
    "dst_verdict": np.dtype(np.uint8),
    "src_rule": np.dtype(np.int32),
    "dst_rule": np.dtype(np.int32),
    "src_audit": np.dtype(np.uint8),
    "dst_audit": np.dtype(np.uint8),
    "src_audit_rule": np.dtype(np.int32),
    "dst_audit_rule": np.dtype(np.int32),
}

# Columns a collector may leave out: they default to these values.
_DEFAULTS: Mapping[str, int] = {
    "rpackets": 0,
    "rbytes": 0,
    "src_verdict": Verdict.NONE,
    "dst_verdict": Verdict.NONE,
    "src_rule": -1,
    "dst_rule": -1,
    "src_audit": Verdict.NONE,
    "dst_audit": Verdict.NONE,
    "src_audit_rule": -1,
    "dst_audit_rule": -1,
}


@dataclass(frozen=True, slots=True)
class FlowBatch:
    """Flow records of one source and one exporter (or agent host), in columns.

    Build it with :meth:`of`, which checks lengths and fills optional columns.
    """

    source: Source
    exporter: str  # the exporter's address, or the agent's host name
    columns: Mapping[str, Column]
    rules: tuple[RuleRef, ...] = ()
    # Records the decoder could not take (malformed, unknown template); counted, not stored.
    dropped: int = 0
    via: tuple[str | None, ...] | None = None

    @classmethod
    def of(
        cls,
        source: Source,
        exporter: str,
        columns: Mapping[str, Sequence[Any] | Column],
        *,
        rules: Sequence[RuleRef] = (),
        dropped: int = 0,
        via: Sequence[str | None] | None = None,
    ) -> FlowBatch:
        """A batch from ``columns`` (arrays or sequences), cast to :data:`COLUMNS`' dtypes.

        Raises ``ValueError`` naming the column for an unknown or missing column or a length
        that differs from ``start_ms``'s.
        """
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown flow columns {unknown}; known: {list(COLUMNS)}")
        n = len(columns["start_ms"]) if "start_ms" in columns else 0
        out: dict[str, Column] = {}
        for name, dtype in COLUMNS.items():
            if name in columns:
                array = np.asarray(columns[name], dtype=dtype)
                if array.shape != (n,):
                    raise ValueError(f"flow column {name!r} has shape {array.shape}, want ({n},)")
                out[name] = array
            elif name in _DEFAULTS:
                out[name] = np.full(n, _DEFAULTS[name], dtype=dtype)
            else:
                raise ValueError(f"flow column {name!r} is required")
        if via is not None and len(via) != n:
            raise ValueError(f"flow column 'via' has {len(via)} values, want {n}")
        return cls(
            source, exporter, out, tuple(rules), dropped, None if via is None else tuple(via)
        )

    def __len__(self) -> int:
        return len(self.columns["start_ms"])


def concat(batches: Sequence[FlowBatch]) -> FlowBatch:
    """One batch of ``batches`` (same source and exporter), rule indexes renumbered."""
    if not batches:
        raise ValueError("concat needs at least one batch")
    first = batches[0]
    if any((b.source, b.exporter) != (first.source, first.exporter) for b in batches):
        raise ValueError("concat takes batches of one source and exporter")
    index: dict[RuleRef, int] = {}
    parts: dict[str, list[Column]] = {name: [] for name in COLUMNS}
    for batch in batches:
        remap = np.array([index.setdefault(r, len(index)) for r in batch.rules] + [-1], np.int32)
        for name in COLUMNS:
            column = batch.columns[name]
            if name.endswith("_rule"):
                column = remap[column]  # -1 indexes the trailing -1
            parts[name].append(column)
    rules = sorted(index, key=index.__getitem__)
    columns = {name: np.concatenate(parts[name]) for name in COLUMNS}
    via = None
    if any(b.via is not None for b in batches):
        via = tuple(v for b in batches for v in (b.via or (None,) * len(b)))
    return FlowBatch(
        first.source, first.exporter, columns, tuple(rules), sum(b.dropped for b in batches), via
    )


_V4_MAPPED = np.uint64(0x0000_FFFF_0000_0000)


def ipv4_columns(addresses: Column) -> tuple[Column, Column]:
    """``(hi, lo)`` of IPv4 addresses given as ``uint32`` (host order values)."""
    lo = addresses.astype(np.uint64) | _V4_MAPPED
    return np.zeros(len(addresses), np.uint64), lo


def ip_columns(addresses: Sequence[str]) -> tuple[Column, Column]:
    """``(hi, lo)`` of textual IPv4 or IPv6 addresses (slow path: agents, syslog, tests)."""
    hi = np.empty(len(addresses), np.uint64)
    lo = np.empty(len(addresses), np.uint64)
    for i, text in enumerate(addresses):
        address = ipaddress.ip_address(text)
        value = int(address) if address.version == 6 else int(address) | 0xFFFF_0000_0000
        hi[i] = value >> 64
        lo[i] = value & 0xFFFF_FFFF_FFFF_FFFF
    return hi, lo


def ip_text(hi: int, lo: int) -> str:
    """The address of one ``(hi, lo)`` pair, IPv4-mapped shown as IPv4."""
    v6 = ipaddress.IPv6Address((int(hi) << 64) | int(lo))
    return str(v6.ipv4_mapped or v6)
