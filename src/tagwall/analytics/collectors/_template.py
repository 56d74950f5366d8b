"""Templates compiled to numpy: the columnar core IPFIX, NetFlow v9 and v5 share.

A template lists field specifiers ``(element, length, enterprise)``.  Compiling it builds
one structured numpy dtype over the fields this package reads, at their offsets, big-endian,
so a data set of fixed-length records becomes columns with one ``np.frombuffer`` and no
per-record Python.  Fields it does not read (enterprise fields, MAC addresses, ...) are
simply left out of the dtype, so skipping them costs nothing.

Worked example: softflowd's IPFIX template ``8/4 12/4 7/2 11/2 4/1 1/8 2/8 152/8 153/8 ...``
compiles to ``{src4: >u4 @0, dst4: >u4 @4, src_port: >u2 @8, ...}`` with ``itemsize`` the
record length; a 1,400-byte data set of 44-byte records is 31 rows in one call.

Variable-length fields (IPFIX length 65535: a 1-byte length, or 255 and a 2-byte length)
make the record length vary; those records take a per-record path that copies the
fixed-length fields into one packed buffer, then the same dtype reads it.

Which element feeds which column (enterprise 0 = IANA, 29305 = RFC 5103 reverse):

=============================  ===============================================
1, 85 / 2, 86                  bytes / packets (delta or total)
29305:1, 29305:85 / 29305:2..  rbytes / rpackets
4, 7, 11                       proto, src_port, dst_port
8, 12 / 27, 28                 IPv4 / IPv6 source, destination
152, 153 / 150, 151            start, end in ms / s since the epoch
154..157                       start, end as NTP timestamps (micro- and nanoseconds)
22, 21                         start, end in ms of SysUpTime (needs the boot time; a
                               time after the export is taken to precede a 32-bit wrap)
158, 159                       start, end as µs before the export time
160 / 34, 305, 306             options: boot time ms / sampling interval, packets, space
=============================  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from .._batch import ipv4_columns
from ._base import DecodeError

__all__ = ["VARIABLE", "Chunk", "FieldSpec", "Sets", "Template", "columns", "read_rows", "uint"]

VARIABLE = 0xFFFF  # IPFIX: the field's length is in the record
REVERSE_PEN = 29305  # RFC 5103: reverse elements carry this enterprise number
_NTP_TO_UNIX_S = 2_208_988_800
_MAX_RECORD = 0xFFFF - 4  # a set's length is 16 bits, its header 4 bytes
_UPTIME_SLACK_MS = 1_000  # export times are whole seconds in IPFIX and NetFlow v9

Rows = npt.NDArray[Any]
U64 = npt.NDArray[np.uint64]

# (enterprise, element) → role; "4" and "16" roles need exactly that many bytes.
_ROLES: dict[tuple[int, int], str] = {
    (0, 1): "bytes", (0, 85): "bytes", (0, 2): "packets", (0, 86): "packets",
    (REVERSE_PEN, 1): "rbytes", (REVERSE_PEN, 85): "rbytes",
    (REVERSE_PEN, 2): "rpackets", (REVERSE_PEN, 86): "rpackets",
    (0, 4): "proto", (0, 7): "src_port", (0, 11): "dst_port",
    (0, 8): "src4", (0, 12): "dst4", (0, 27): "src6", (0, 28): "dst6",
    (0, 152): "start_ms", (0, 153): "end_ms", (0, 150): "start_s", (0, 151): "end_s",
    (0, 154): "start_ntp", (0, 155): "end_ntp", (0, 156): "start_ntp", (0, 157): "end_ntp",
    (0, 22): "start_up", (0, 21): "end_up", (0, 158): "start_delta_us", (0, 159): "end_delta_us",
    (0, 160): "boot_ms", (0, 34): "sampling", (0, 305): "sampling_packets",
    (0, 306): "sampling_space",
}  # fmt: skip
_ENDS = ("src", "dst")
_EXACT = {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field specifier: IANA ``element`` (enterprise 0) or an enterprise's, ``length``
    bytes or :data:`VARIABLE`; ``scope`` fields of options templates are never read."""

    element: int
    length: int
    enterprise: int = 0
    scope: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """A compiled template.

    ``fixed`` means every record is ``dtype.itemsize`` bytes long, laid out as the dtype.
    Invariant: ``1 <= min_length <= 65531`` (a record has bytes and fits in one set)."""

    template_id: int
    fields: tuple[FieldSpec, ...]
    dtype: np.dtype[np.void]  # over the fixed-length fields, packed in order
    roles: dict[str, int]  # role → byte length, for the roles this template carries
    fixed: bool
    min_length: int
    # The record as runs: a fixed run's byte count, or VARIABLE for one variable field.
    runs: tuple[int, ...] = field(repr=False)

    @classmethod
    def compile(
        cls, template_id: int, fields: Sequence[FieldSpec], *, variable_ok: bool = True
    ) -> Template:
        """Raises :class:`DecodeError` if a record would have no bytes or more than a set
        can hold."""
        names: list[str] = []
        formats: list[Any] = []
        offsets: list[int] = []
        roles: dict[str, int] = {}
        runs: list[int] = []
        offset = 0
        for spec in fields:
            if spec.length == VARIABLE and variable_ok:
                runs.append(VARIABLE)
                continue
            if runs and runs[-1] != VARIABLE:
                runs[-1] += spec.length
            else:
                runs.append(spec.length)
            role = None if spec.scope else _ROLES.get((spec.enterprise, spec.element))
            layout = [] if role is None or role in roles else list(_layout(role, spec.length))
            if role is not None and layout:
                roles[role] = spec.length
                for name, fmt, at in layout:
                    names.append(name)
                    formats.append(fmt)
                    offsets.append(offset + at)
            offset += spec.length
        fixed = VARIABLE not in runs
        min_length = offset + runs.count(VARIABLE)
        if not 1 <= min_length <= _MAX_RECORD:
            raise DecodeError("template.fields", "records would not fit a set", template_id)
        dtype = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": offset}
        )
        return cls(template_id, tuple(fields), dtype, roles, fixed, min_length, tuple(runs))


def _layout(role: str, length: int) -> Iterator[tuple[str, Any, int]]:
    """The dtype fields of one role: ``(name, format, offset within the field)``; none if
    the role cannot have that length (an address is 4 or 16 bytes, an integer 1 to 8)."""
    if role in _EXACT:
        if length == 16 == _EXACT[role]:
            yield f"{role}_hi", ">u8", 0
            yield f"{role}_lo", ">u8", 8
        elif length == 4 == _EXACT[role]:
            yield role, ">u4", 0
    elif length in (1, 2, 4, 8):
        yield role, f">u{length}", 0
    elif 0 < length < 8:
        yield role, ("u1", (length,)), 0  # reduced-size encoding: 3, 5, 6 or 7 bytes
    # Longer integers than 8 bytes cannot be a counter, port or time: not read.


def read_rows(template: Template, data: bytes, start: int, end: int) -> tuple[bytes, int]:
    """The records of ``data[start:end]`` (one set's content) as one packed buffer for
    ``template.dtype``, and their count.  Bytes too few for another record are padding.

    Raises :class:`DecodeError` if a variable-length field runs past ``end``.
    """
    if template.fixed:
        size = template.dtype.itemsize
        count = (end - start) // size
        return data[start : start + count * size], count
    pieces: list[bytes] = []
    count = 0
    at = start
    while end - at >= template.min_length:
        for run in template.runs:
            if run != VARIABLE:
                pieces.append(data[at : at + run])
                at += run
                continue
            if at >= end:
                raise DecodeError("data.record", "variable-length field runs past the set")
            length = data[at]
            at += 1
            if length == 255:
                if at + 2 > end:
                    raise DecodeError("data.record", "variable-length field runs past the set")
                length = int.from_bytes(data[at : at + 2], "big")
                at += 2
            at += length
        if at > end:
            raise DecodeError("data.record", "record runs past the set", end - start)
        count += 1
    return b"".join(pieces), count


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records of one data set waiting to be decoded, with what their times need: the
    export time (ms), the exporter's boot time (ms, ``None`` if unknown) and the sampling
    rate (1 = every packet)."""

    rows: bytes
    count: int
    export_ms: int
    boot_ms: int | None
    sampling: int


@dataclass(frozen=True, slots=True)
class Sets:
    """Records of data sets of one template, in columns: ``rows`` holds every record's
    bytes (one row of ``template.dtype.itemsize`` bytes each, set after set) and the other
    arrays have one entry per set, as :class:`Chunk` has (``boot_ms`` is meaningful where
    ``boot_known``).  The IPFIX decoder's burst path builds it for a whole burst at once,
    without a :class:`Chunk` per set.

    Why raw bytes, not ``template.dtype``: numpy copies a structured array with unread gaps
    field by field, bytes with one ``memcpy`` (joining a burst's parts took 3x longer)."""

    rows: npt.NDArray[np.uint8]
    counts: npt.NDArray[np.int64]
    export_ms: npt.NDArray[np.int64]
    boot_ms: npt.NDArray[np.int64]
    boot_known: npt.NDArray[np.bool_]
    sampling: U64

    @property
    def count(self) -> int:
        return len(self.rows)

    @classmethod
    def join(cls, template: Template, parts: Sequence[Chunk | Sets]) -> Sets:
        """One :class:`Sets` of ``parts`` in their order."""
        chunks = [p for p in parts if isinstance(p, Chunk)]
        if len(chunks) == len(parts):
            return cls(
                np.frombuffer(b"".join(c.rows for c in chunks), np.uint8).reshape(
                    -1, template.dtype.itemsize
                ),
                np.array([c.count for c in chunks], np.int64),
                np.array([c.export_ms for c in chunks], np.int64),
                np.array([c.boot_ms or 0 for c in chunks], np.int64),
                np.array([c.boot_ms is not None for c in chunks]),
                np.array([c.sampling for c in chunks], np.uint64),
            )
        whole = [p if isinstance(p, Sets) else cls.join(template, [p]) for p in parts]
        if len(whole) == 1:
            return whole[0]
        return cls(*(np.concatenate([getattr(w, f.name) for w in whole]) for f in fields(cls)))


def uint(rows: Rows, template: Template, role: str) -> U64 | None:
    """The role's column as ``uint64``, or ``None`` if the template lacks it."""
    length = template.roles.get(role)
    if length is None:
        return None
    column = rows[role]
    if length in (1, 2, 4, 8):
        return column.astype(np.uint64)
    value = np.zeros(len(column), np.uint64)
    for i in range(length):
        value = (value << np.uint64(8)) | column[:, i]
    return value


def _address(rows: Rows, template: Template, end: str) -> tuple[U64, U64] | None:
    if f"{end}4" in template.roles:
        return ipv4_columns(rows[f"{end}4"])
    if f"{end}6" in template.roles:
        return rows[f"{end}6_hi"].astype(np.uint64), rows[f"{end}6_lo"].astype(np.uint64)
    return None


def has_addresses(template: Template) -> bool:
    """Whether the template's records name both ends (else they cannot be flows)."""
    return all(f"{end}4" in template.roles or f"{end}6" in template.roles for end in _ENDS)


def columns(template: Template, sets: Sets) -> dict[str, Any]:
    """Columns of the sets' records (the template must have addresses)."""
    rows = sets.rows.reshape(-1).view(template.dtype)
    src = _address(rows, template, "src")
    dst = _address(rows, template, "dst")
    assert src is not None and dst is not None  # the caller checked has_addresses
    counts = sets.counts
    export = np.repeat(sets.export_ms, counts)
    n = len(rows)
    columns: dict[str, Any] = {
        "src_hi": src[0],
        "src_lo": src[1],
        "dst_hi": dst[0],
        "dst_lo": dst[1],
    }
    for role in ("proto", "src_port", "dst_port"):
        column = uint(rows, template, role)
        columns[role] = np.zeros(n, np.uint64) if column is None else column
    # Unsampled (the common case): no per-record multiplication.
    sampling = None if bool((sets.sampling == 1).all()) else np.repeat(sets.sampling, counts)
    for role in ("packets", "bytes", "rpackets", "rbytes"):
        column = uint(rows, template, role)
        if column is None:
            column = np.zeros(n, np.uint64)
        elif sampling is not None:
            column = column * sampling
        columns[role] = column
    start = _time(rows, template, sets, export, "start")
    end = _time(rows, template, sets, export, "end")
    if start is None:
        start = export if end is None else end
    if end is None:
        end = start
    columns["start_ms"] = start
    columns["end_ms"] = np.maximum(start, end)
    return columns


def _time(
    rows: Rows,
    template: Template,
    sets: Sets,
    export: npt.NDArray[np.int64],
    end: str,
) -> npt.NDArray[np.int64] | None:
    """One end's time in Unix ms from whichever element the template carries."""
    if (value := uint(rows, template, f"{end}_ms")) is not None:
        return value.astype(np.int64)
    if (value := uint(rows, template, f"{end}_s")) is not None:
        return value.astype(np.int64) * 1000
    if (value := uint(rows, template, f"{end}_ntp")) is not None:
        seconds = (value >> np.uint64(32)).astype(np.int64) - _NTP_TO_UNIX_S
        fraction = ((value & np.uint64(0xFFFF_FFFF)) * np.uint64(1000)) >> np.uint64(32)
        return seconds * 1000 + fraction.astype(np.int64)
    if (value := uint(rows, template, f"{end}_delta_us")) is not None:
        return export - (value // np.uint64(1000)).astype(np.int64)
    if (value := uint(rows, template, f"{end}_up")) is not None:
        known = np.repeat(sets.boot_known, sets.counts)
        boot = np.repeat(sets.boot_ms, sets.counts)
        moment = np.where(known, boot + value.astype(np.int64), export)
        # SysUpTime is a 32-bit ms counter (it wraps every ~49.7 days): a time after the
        # export was counted before the wrap.
        return np.where(moment > export + _UPTIME_SLACK_MS, moment - (1 << 32), moment)
    return None
