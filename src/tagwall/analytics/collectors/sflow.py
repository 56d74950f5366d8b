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
from ._base import Counters, Decoded, DecodeError, DecoderStatistics
from ._packet import Endpoints, parse_header

__all__ = ["SflowDecoder"]

_LOW64 = (1 << 64) - 1
_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_FLOW_SAMPLE = struct.Struct(">8I")
_EXPANDED_SAMPLE = struct.Struct(">11I")
_RAW_HEADER = struct.Struct(">4I")
_SAMPLED_V4 = struct.Struct(">II4s4sII")
_SAMPLED_V6 = struct.Struct(">II16s16sII")


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
        for packet in packets:
            self._counters.packets += 1
            try:
                samples += self._datagram(packet)
            except DecodeError as error:
                self._counters.errors[error.key] += 1
                if strict:
                    raise
        if not samples:
            return Decoded()
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
        return Decoded((batch,))

    def statistics(self) -> DecoderStatistics:
        return self._counters.snapshot()

    def _datagram(self, packet: bytes) -> list[tuple[Endpoints, int, int]]:
        reader = _Reader(packet, "sflow.datagram")
        if (version := reader.u32()) != 5:
            raise DecodeError("sflow.datagram.version", "not 5", version)
        address_type = reader.u32()
        if address_type not in (1, 2):
            raise DecodeError("sflow.datagram.agent_address", "type not 1 or 2", address_type)
        reader.skip(4 if address_type == 1 else 16)
        reader.skip(12)  # sub-agent id, sequence, uptime
        out: list[tuple[Endpoints, int, int]] = []
        for _ in range(reader.u32()):
            kind, length = reader.pair()
            body = reader.take(length, "sflow.sample")
            if kind not in (1, 3):  # enterprise 0: flow sample, expanded flow sample
                self._counters.skipped += 1
                continue
            sample = self._sample(body, expanded=kind == 3)
            if sample is None:
                self._counters.dropped += 1
            else:
                out.append(sample)
        return out

    def _sample(self, body: bytes, *, expanded: bool) -> tuple[Endpoints, int, int] | None:
        layout = _EXPANDED_SAMPLE if expanded else _FLOW_SAMPLE
        reader = _Reader(body, "sflow.flow_sample")
        fields = struct.unpack(layout.format, reader.take(layout.size, "sflow.flow_sample"))
        rate, count = fields[3 if expanded else 2], fields[-1]
        best: tuple[Endpoints, int] | None = None
        for _ in range(count):
            kind, length = reader.pair()
            record = reader.take(length, "sflow.flow_record")
            found = _record(kind, record)
            if found is not None and (best is None or kind == 1):
                best = found
                if kind == 1:
                    break
        if best is None:
            return None
        endpoints, frame_length = best
        return endpoints, rate, frame_length * rate


def _record(kind: int, record: bytes) -> tuple[Endpoints, int] | None:
    """Endpoints and frame length of one flow record, or ``None`` if it has none."""
    if kind == 1 and len(record) >= _RAW_HEADER.size:
        protocol, frame_length, _stripped, length = _RAW_HEADER.unpack_from(record)
        header = record[_RAW_HEADER.size : _RAW_HEADER.size + length]
        endpoints = parse_header(protocol, header)
        return None if endpoints is None else (endpoints, frame_length)
    for layout, family in ((_SAMPLED_V4, 4), (_SAMPLED_V6, 6)):
        if kind == family - 1 and len(record) >= layout.size:  # format 3: IPv4, 4: IPv6
            length, proto, src, dst, src_port, dst_port = layout.unpack_from(record)
            if proto > 255 or src_port > 0xFFFF or dst_port > 0xFFFF:
                return None
            return Endpoints.of(src, dst, proto, src_port, dst_port), length
    return None


class _Reader:
    """XDR items read in order from ``data``; running past its end is a DecodeError."""

    def __init__(self, data: bytes, where: str) -> None:
        self._data = data
        self._at = 0
        self._where = where

    def take(self, n: int, field: str) -> bytes:
        padded = (n + 3) & ~3
        if padded > len(self._data) - self._at:
            raise DecodeError(f"{field}.length", "runs past the datagram", n)
        self._at += padded
        return self._data[self._at - padded : self._at - padded + n]

    def skip(self, n: int) -> None:
        self.take(n, self._where)

    def u32(self) -> int:
        (value,) = _U32.unpack(self.take(4, self._where))
        return int(value)

    def pair(self) -> tuple[int, int]:
        first, second = _PAIR.unpack(self.take(8, self._where))
        return int(first), int(second)
