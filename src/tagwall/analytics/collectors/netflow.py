"""NetFlow v5 and v9 (RFC 3954) packets → flow batches, and the port-2055 dispatcher.

NetFlow v5, big-endian: a 24-byte header — version (2) = 5, count (2), sysUptime (4, ms
since the exporter booted), unix_secs (4), unix_nsecs (4), flow_sequence (4), engine type
(1), engine id (1), sampling (2: mode in the top 2 bits, interval in the low 14) — then
``count`` records of 48 bytes: srcaddr, dstaddr, nexthop (4 each), input, output (2 each),
dPkts, dOctets, First, Last (4 each; First/Last in ms of sysUptime), srcport, dstport (2
each), pad, tcp_flags, prot, tos (1 each), src_as, dst_as (2 each), src_mask, dst_mask (1
each), pad (2).  The boot time is ``unix_secs * 1000 + unix_nsecs // 10**6 - sysUptime``.

Worked example: sysUptime 10,000, unix_secs 1,700,000,000 → boot at 1,699,999,990,000 ms;
a record with First 4,000 and Last 9,000 ran from 1,699,999,994,000 to 1,699,999,999,000.

NetFlow v9: a 20-byte header — version (2) = 9, count (2), sysUptime (4), unix_secs (4),
sequence (4), source id (4) — then flowsets of id (2) and length (2): id 0 holds templates
(template id, field count, then type (2) and length (2) per field: IPFIX's element numbers
for the fields read here), id 1 options templates (template id, scope length in bytes,
option length in bytes, then the scope fields and the option fields), id 256 and up data.
Templates live per (exporter, source id); v9 has no variable-length fields.

Both reuse the IPFIX template machinery (``_template``): v5's fixed record is one more
template, compiled once.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable

from .._batch import Source
from ._base import Counters, Decoded, DecodeError, DecoderStatistics
from ._state import Found, PacketDecoder
from ._template import Chunk, FieldSpec, Template, read_rows

__all__ = ["Netflow5Decoder", "Netflow9Decoder", "NetflowDecoder"]

_V5_HEADER = struct.Struct(">HHIIIIBBH")
_V9_HEADER = struct.Struct(">HHIIII")
_PAIR = struct.Struct(">HH")
_V9_OPTIONS = struct.Struct(">HHH")
_PAD = 210  # IANA paddingOctets: never read
# v5's record as IPFIX field specifiers, in wire order (48 bytes).
V5_RECORD = Template.compile(
    5,
    [
        FieldSpec(element, length, 0)
        for element, length in (
            (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4),
            (7, 2), (11, 2), (_PAD, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1),
            (13, 1), (_PAD, 2),
        )
    ],
)  # fmt: skip


class Netflow5Decoder(PacketDecoder):
    """Decodes NetFlow v5 packets; stateless but for its counters."""

    source = Source.NETFLOW5

    def _message(self, packet: bytes, exporter: str) -> Found:
        if len(packet) < _V5_HEADER.size:
            raise DecodeError("netflow5.header", "shorter than 24 bytes", len(packet))
        version, count, uptime_ms, secs, nsecs, *_, sampling = _V5_HEADER.unpack_from(packet)
        if version != 5:
            raise DecodeError("netflow5.header.version", "not 5", version)
        end = _V5_HEADER.size + count * V5_RECORD.dtype.itemsize
        if end > len(packet):
            raise DecodeError("netflow5.header.count", "records run past the packet", count)
        export_ms = secs * 1000 + nsecs // 1_000_000
        interval = sampling & 0x3FFF
        rate = interval if sampling >> 14 and interval > 1 else 1
        rows, n = read_rows(V5_RECORD, packet, _V5_HEADER.size, end)
        return [(V5_RECORD, Chunk(rows, n, export_ms, export_ms - uptime_ms, rate))]


class Netflow9Decoder(PacketDecoder):
    """Decodes NetFlow v9 packets of any number of exporters; keeps their templates."""

    source = Source.NETFLOW9

    def _message(self, packet: bytes, exporter: str) -> Found:
        if len(packet) < _V9_HEADER.size:
            raise DecodeError("netflow9.header", "shorter than 20 bytes", len(packet))
        version, _count, uptime_ms, secs, _seq, source_id = _V9_HEADER.unpack_from(packet)
        if version != 9:
            raise DecodeError("netflow9.header.version", "not 9", version)
        flowsets: list[tuple[int, int, int]] = []  # (flowset id, first byte, end)
        at = _V9_HEADER.size
        while len(packet) - at >= _PAIR.size:  # fewer bytes: padding after the last set
            flowset_id, length = _PAIR.unpack_from(packet, at)
            if length < _PAIR.size or at + length > len(packet):
                raise DecodeError("netflow9.flowset.length", "outside the packet", length)
            flowsets.append((flowset_id, at + _PAIR.size, at + length))
            at += length
        found: Found = []
        export_ms = secs * 1000
        for flowset_id, start, end in flowsets:
            if flowset_id == 0:
                self._templates_set(packet, start, end, exporter, source_id)
            elif flowset_id == 1:
                self._options_set(packet, start, end, exporter, source_id)
            elif flowset_id >= 256:
                data = self._data_rows(packet, start, end, exporter, source_id, flowset_id)
                if data is None:
                    continue
                template, rows, n = data
                rate = self._templates.sampling(exporter, source_id)
                found.append((template, Chunk(rows, n, export_ms, export_ms - uptime_ms, rate)))
            else:
                self._counters.skipped += 1  # reserved flowset ids 2..255
        return found

    def _templates_set(self, packet: bytes, at: int, end: int, exporter: str, domain: int) -> None:
        while end - at >= _PAIR.size:
            template_id, count = _PAIR.unpack_from(packet, at)
            at += _PAIR.size
            if template_id == count == 0:
                break  # zero padding
            fields = _fields(packet, at, end, count, 0, template_id)
            at += count * _PAIR.size
            self._templates.learn(
                exporter, domain, template_id, fields, options=False, variable_ok=False
            )

    def _options_set(self, packet: bytes, at: int, end: int, exporter: str, domain: int) -> None:
        while end - at >= _V9_OPTIONS.size:
            template_id, scope_bytes, option_bytes = _V9_OPTIONS.unpack_from(packet, at)
            at += _V9_OPTIONS.size
            if template_id == 0:
                break  # zero padding
            if scope_bytes % 4 or option_bytes % 4:
                raise DecodeError("netflow9.options.length", "not a multiple of 4", template_id)
            count = (scope_bytes + option_bytes) // 4
            fields = _fields(packet, at, end, count, scope_bytes // 4, template_id)
            at += scope_bytes + option_bytes
            self._templates.learn(
                exporter, domain, template_id, fields, options=True, variable_ok=False
            )


def _fields(
    packet: bytes, at: int, end: int, count: int, scope: int, template_id: int
) -> list[FieldSpec]:
    """``count`` (type, length) pairs from ``at``, the first ``scope`` of them scope fields."""
    if template_id < 256:
        raise DecodeError("netflow9.template.id", "below 256", template_id)
    if at + count * _PAIR.size > end:
        raise DecodeError("netflow9.template.fields", "run past the flowset", template_id)
    pairs = (_PAIR.unpack_from(packet, at + 4 * i) for i in range(count))
    return [FieldSpec(element, length, 0, i < scope) for i, (element, length) in enumerate(pairs)]


class NetflowDecoder:
    """Port 2055's decoder: NetFlow v5 or v9 by each packet's version field (the first two
    bytes), handed to a :class:`Netflow5Decoder` or :class:`Netflow9Decoder` it owns."""

    def __init__(self) -> None:
        self._v5 = Netflow5Decoder()
        self._v9 = Netflow9Decoder()
        self._counters = Counters()  # packets of neither version only

    def decode(self, packet: bytes, exporter: str, received_ms: int) -> Decoded:
        return self._pick(packet).decode(packet, exporter, received_ms)

    def decode_many(self, packets: Iterable[bytes], exporter: str, received_ms: int) -> Decoded:
        by_version: dict[PacketDecoder, list[bytes]] = {self._v5: [], self._v9: []}
        for packet in packets:
            with contextlib.suppress(DecodeError):  # counted by _pick
                by_version[self._pick(packet)].append(packet)
        v5 = self._v5.decode_many(by_version[self._v5], exporter, received_ms)
        v9 = self._v9.decode_many(by_version[self._v9], exporter, received_ms)
        return Decoded(v5.batches + v9.batches)

    def statistics(self) -> DecoderStatistics:
        """The two decoders' counters summed, with packets of an unknown version."""
        parts = (self._v5.statistics(), self._v9.statistics(), self._counters.snapshot())
        errors: dict[str, int] = {}
        for part in parts:
            for key, n in part.errors.items():
                errors[key] = errors.get(key, 0) + n
        return DecoderStatistics(
            packets=sum(p.packets for p in parts),
            records=sum(p.records for p in parts),
            dropped=sum(p.dropped for p in parts),
            skipped=sum(p.skipped for p in parts),
            templates=sum(p.templates for p in parts),
            errors=errors,
        )

    def _pick(self, packet: bytes) -> PacketDecoder:
        version = int.from_bytes(packet[:2], "big")
        if version == 5:
            return self._v5
        if version == 9:
            return self._v9
        error = DecodeError("netflow.header.version", "not 5 or 9", version)
        self._counters.packets += 1
        self._counters.errors[error.key] += 1
        raise error
