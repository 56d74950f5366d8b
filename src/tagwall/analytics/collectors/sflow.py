"""sFlow v5 datagrams → flow batches: one record per sampled packet, scaled by the rate.

Encoding (XDR: big-endian, every item padded to 4 bytes), as the sFlow v5 spec lays it out:

* datagram: version (4) = 5, agent address type (4: 1 IPv4, 2 IPv6) and address (4 or 16),
  sub-agent id (4), sequence (4), uptime (4, ms), sample count (4), samples;
* sample: format (4: enterprise in the top 20 bits, format in the low 12), length (4),
  body.  Enterprise 0 format 1 is a flow sample — sequence, source id, sampling rate,
  sample pool, drops, input, output, record count (4 each) — and format 3 an expanded flow
  sample — sequence, source id type, source id index, sampling rate, sample pool, drops,
  input format, input value, output format, output value, record count;
* flow record: format (4), length (4), body.  Format 1 is a raw packet header: header
  protocol (4: 1 Ethernet, 11 IPv4, 12 IPv6), frame length (4), stripped (4), header
  length (4), header bytes.  Formats 3 and 4 are the sampled IPv4 / IPv6 summaries:
  length, protocol, source and destination address, source and destination port (4 each).

A flow sample becomes one flow record from its first raw header (else from a sampled
IPv4/IPv6 summary): ``packets = sampling rate``, ``bytes = frame length * sampling rate``
(the summary's IP length stands in for the frame length).  Worked example: rate 512, a
1,514-byte frame of 10.0.0.1:40000 → 10.0.0.2:443/tcp → packets 512, bytes 775,168.

sFlow carries no wall clock, so start and end are ``received_ms``.  Counter samples and
samples of other formats or enterprises are skipped and counted; a flow sample with no
readable IP header is dropped and counted.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from .._batch import FlowBatch, Source
from ._base import Counters, Decoded, DecodeError, DecoderStatistics, with_dropped
from ._packet import Endpoints, parse_header

__all__ = ["SflowDecoder"]

_LOW64 = (1 << 64) - 1
_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_FLOW_SAMPLE = struct.Struct(">8I")
_EXPANDED_SAMPLE = struct.Struct(">11I")
_RAW_HEADER = struct.Struct(">4I")
_RAW = 1  # flow record formats: raw packet header; sampled IPv4 (3) and IPv6 (4)
_SAMPLED = {3: struct.Struct(">II4s4sII"), 4: struct.Struct(">II16s16sII")}


class SflowDecoder:
    """Decodes sFlow v5 datagrams; stateless but for its counters."""

    def __init__(self) -> None:
        self._counters = Counters()

    def decode(self, packet: bytes, exporter: str, received_ms: int) -> Decoded:
        """The flows of one datagram.  Raises :class:`DecodeError` if it is malformed."""
        return self.decode_many([packet], exporter, received_ms, strict=True)

    def decode_many(
        self,
        packets: Iterable[bytes],
        exporter: str,
        received_ms: int,
        *,
        strict: bool = False,
    ) -> Decoded:
        """The flows of many datagrams in one batch.  ``strict`` raises on the first
        malformed datagram; otherwise malformed ones are counted and skipped."""
        samples: list[tuple[Endpoints, int, int]] = []  # (endpoints, packets, bytes)
        dropped = 0
        for packet in packets:
            self._counters.packets += 1
            try:
                found, skipped = _datagram(packet)
            except DecodeError as error:
                self._counters.errors[error.key] += 1
                if strict:
                    raise
                continue
            flows = [sample for sample in found if sample is not None]
            samples += flows
            dropped += len(found) - len(flows)
            self._counters.skipped += skipped
        self._counters.dropped += dropped
        if not samples:
            return Decoded(with_dropped((), Source.SFLOW, exporter, dropped))
        src = [e.src for e, _, _ in samples]
        dst = [e.dst for e, _, _ in samples]
        times = [received_ms] * len(samples)
        batch = FlowBatch.of(
            Source.SFLOW,
            exporter,
            {
                "start_ms": times,
                "end_ms": times,
                "src_hi": [a >> 64 for a in src],
                "src_lo": [a & _LOW64 for a in src],
                "dst_hi": [a >> 64 for a in dst],
                "dst_lo": [a & _LOW64 for a in dst],
                "proto": [e.proto for e, _, _ in samples],
                "src_port": [e.src_port for e, _, _ in samples],
                "dst_port": [e.dst_port for e, _, _ in samples],
                "packets": [p for _, p, _ in samples],
                "bytes": [b for _, _, b in samples],
            },
        )
        self._counters.records += len(batch)
        return Decoded(with_dropped((batch,), Source.SFLOW, exporter, dropped))

    def statistics(self) -> DecoderStatistics:
        return self._counters.snapshot()


def _datagram(packet: bytes) -> tuple[list[tuple[Endpoints, int, int] | None], int]:
    """The flow samples of one datagram (``None`` for one without a readable IP header)
    and how many samples of other kinds it skipped."""
    _need(packet, 0, 8, "sflow.datagram")
    version, address_type = _PAIR.unpack_from(packet)
    if version != 5:
        raise DecodeError("sflow.datagram.version", "not 5", version)
    if address_type not in (1, 2):
        raise DecodeError("sflow.datagram.agent_address", "type not 1 or 2", address_type)
    at = 8 + (4 if address_type == 1 else 16) + 12  # address, sub-agent, sequence, uptime
    _need(packet, at, 4, "sflow.datagram")
    (count,) = _U32.unpack_from(packet, at)
    at += 4
    found: list[tuple[Endpoints, int, int] | None] = []
    skipped = 0
    for _ in range(count):
        kind, start, at = _item(packet, at, len(packet), "sflow.sample")
        if kind in (1, 3):  # enterprise 0: flow sample, expanded flow sample
            found.append(_sample(packet, start, at, expanded=kind == 3))
        else:
            skipped += 1
    return found, skipped


def _need(data: bytes, at: int, n: int, field: str) -> None:
    if at + n > len(data):
        raise DecodeError(f"{field}.length", "runs past the datagram", n)


def _item(data: bytes, at: int, end: int, field: str) -> tuple[int, int, int]:
    """An XDR ``(format, length, body)`` item at ``at``: its format, its body's first byte
    and the byte after its padding.  Raises if it runs past ``end``."""
    if at + 8 > end:
        raise DecodeError(f"{field}.length", "runs past the datagram", end - at)
    kind, length = _PAIR.unpack_from(data, at)
    after = at + 8 + length + (-length % 4)
    if after > end:
        raise DecodeError(f"{field}.length", "runs past the datagram", length)
    return kind, at + 8, after


def _sample(data: bytes, at: int, end: int, *, expanded: bool) -> tuple[Endpoints, int, int] | None:
    """The endpoints, packets and bytes of the flow sample in ``data[at:end]``, from its
    first raw header record (else a sampled IPv4/IPv6 record), or ``None``."""
    layout = _EXPANDED_SAMPLE if expanded else _FLOW_SAMPLE
    if at + layout.size > end:
        raise DecodeError("sflow.flow_sample.length", "runs past the sample", end - at)
    fields = layout.unpack_from(data, at)
    rate, count = fields[3 if expanded else 2], fields[-1]
    at += layout.size
    best: tuple[Endpoints, int] | None = None
    for _ in range(count):
        kind, start, at = _item(data, at, end, "sflow.flow_record")
        found = _record(kind, data[start:at])
        if found is not None and kind == _RAW:
            return found[0], rate, found[1] * rate
        best = best or found
    if best is None:
        return None
    return best[0], rate, best[1] * rate


def _record(kind: int, record: bytes) -> tuple[Endpoints, int] | None:
    """Endpoints and frame length of one flow record, or ``None`` if it has none."""
    if kind == _RAW and len(record) >= _RAW_HEADER.size:
        protocol, frame_length, _stripped, length = _RAW_HEADER.unpack_from(record)
        header = record[_RAW_HEADER.size : _RAW_HEADER.size + length]
        endpoints = parse_header(protocol, header)
        return None if endpoints is None else (endpoints, frame_length)
    layout = _SAMPLED.get(kind)
    if layout is None or len(record) < layout.size:
        return None
    length, proto, src, dst, src_port, dst_port = layout.unpack_from(record)
    if proto > 255 or src_port > 0xFFFF or dst_port > 0xFFFF:
        return None
    return Endpoints.of(src, dst, proto, src_port, dst_port), length
