"""IPFIX (RFC 7011) messages → flow batches.

Encoding, all big-endian:

* message header, 16 bytes: version (2) = 10, length (2) of the whole message, export time
  (4, Unix s), sequence number (4), observation domain id (4);
* then sets, each a header of set id (2) and length (2, header included) and its records:
  set 2 carries templates, set 3 options templates, 256 and above data records of the
  template with that id; a set's trailing bytes too few for a record are padding;
* a template record: template id (2, >= 256), field count (2), then field specifiers of
  element id (2) and length (2), plus an enterprise number (4) when the id's top bit is set;
  an options template record has a scope field count (2) after the field count, and its
  first scope-count fields are the scope;
* a template record with field count 0 withdraws that template; withdrawing template id 2
  (in set 2) or 3 (in set 3) withdraws every data or options template of the domain.

Worked example: the 20-byte set ``00 02 00 14 | 01 00 00 03 | 00 08 00 04 | 00 0c 00 04 |
00 02 00 04`` defines template 256 as source IPv4, destination IPv4, packet count; a later
set ``01 00 00 10 | 0a 00 00 01 | 0a 00 00 02 | 00 00 00 05`` is one flow 10.0.0.1 →
10.0.0.2 of 5 packets.

Templates live per (exporter, observation domain) (:class:`._state.Templates`).  Options
records set the domain's boot time (systemInitTimeMilliseconds, 160: for SysUpTime-relative
times 21/22) and sampling rate (samplingInterval 34, or 305/306).  A data set of an unknown
template is skipped and counted (``statistics().skipped``), never an error: over UDP the
template may simply not have arrived yet.
"""

from __future__ import annotations

import struct

from .._batch import Source
from ._base import DecodeError
from ._state import Found, PacketDecoder
from ._template import Chunk, FieldSpec

__all__ = ["IpfixDecoder"]

_HEADER = struct.Struct(">HHIII")
_SET = struct.Struct(">HH")
_FIELD = struct.Struct(">HH")
_ENTERPRISE = struct.Struct(">I")
TEMPLATE_SET = 2
OPTIONS_SET = 3
FIRST_DATA_SET = 256


class IpfixDecoder(PacketDecoder):
    """Decodes IPFIX messages of any number of exporters; keeps their templates."""

    source = Source.IPFIX

    def _message(self, packet: bytes, exporter: str) -> Found:
        if len(packet) < _HEADER.size:
            raise DecodeError("ipfix.header", "shorter than 16 bytes", len(packet))
        version, length, export_s, _sequence, domain = _HEADER.unpack_from(packet)
        if version != 10:
            raise DecodeError("ipfix.header.version", "not 10", version)
        if not _HEADER.size <= length <= len(packet):
            raise DecodeError("ipfix.header.length", "outside the packet", length)
        sets: list[tuple[int, int, int]] = []  # (set id, first byte, end), checked first
        at = _HEADER.size
        while at < length:
            if length - at < _SET.size:
                raise DecodeError("ipfix.set", "header truncated", length - at)
            set_id, set_length = _SET.unpack_from(packet, at)
            if set_length < _SET.size or at + set_length > length:
                raise DecodeError("ipfix.set.length", "outside the message", set_length)
            sets.append((set_id, at + _SET.size, at + set_length))
            at += set_length
        found: Found = []
        for set_id, start, end in sets:
            if set_id in (TEMPLATE_SET, OPTIONS_SET):
                self._template_set(packet, start, end, exporter, domain, set_id == OPTIONS_SET)
            elif set_id >= FIRST_DATA_SET:
                self._data_set(packet, start, end, exporter, domain, set_id, export_s, found)
            else:
                self._counters.skipped += 1  # reserved set ids 0, 1 and 4..255
        return found

    def _template_set(
        self, packet: bytes, at: int, end: int, exporter: str, domain: int, options: bool
    ) -> None:
        while end - at >= 4:  # fewer bytes are padding
            template_id, count = _FIELD.unpack_from(packet, at)
            at += 4
            if template_id == count == 0:
                break  # zero padding
            if count == 0:
                self._withdraw(exporter, domain, template_id, options)
                continue
            if template_id < FIRST_DATA_SET:
                raise DecodeError("ipfix.template.id", "below 256", template_id)
            scope = 0
            if options:
                if end - at < 2:
                    raise DecodeError("ipfix.options.scope_count", "truncated")
                scope = int.from_bytes(packet[at : at + 2], "big")
                at += 2
                if not 1 <= scope <= count:
                    raise DecodeError("ipfix.options.scope_count", "not 1..field count", scope)
            fields: list[FieldSpec] = []
            for index in range(count):
                if end - at < 4:
                    raise DecodeError("ipfix.template.field", "runs past the set", template_id)
                element, field_length = _FIELD.unpack_from(packet, at)
                at += 4
                enterprise = 0
                if element & 0x8000:
                    if end - at < 4:
                        raise DecodeError("ipfix.template.enterprise", "runs past the set")
                    (enterprise,) = _ENTERPRISE.unpack_from(packet, at)
                    at += 4
                    element &= 0x7FFF
                fields.append(FieldSpec(element, field_length, enterprise, index < scope))
            self._templates.learn(exporter, domain, template_id, fields, options=options)

    def _withdraw(self, exporter: str, domain: int, template_id: int, options: bool) -> None:
        if template_id == (OPTIONS_SET if options else TEMPLATE_SET):
            self._templates.withdraw_all(exporter, domain, options=options)
        elif template_id >= FIRST_DATA_SET:
            self._templates.withdraw(exporter, domain, template_id)
        else:
            raise DecodeError("ipfix.withdrawal.template_id", "not 2, 3 or >= 256", template_id)

    def _data_set(
        self,
        packet: bytes,
        start: int,
        end: int,
        exporter: str,
        domain: int,
        template_id: int,
        export_s: int,
        found: Found,
    ) -> None:
        data = self._data_rows(packet, start, end, exporter, domain, template_id)
        if data is None:
            return
        template, rows, count = data
        boot_ms = self._templates.boot_ms(exporter, domain)
        sampling = self._templates.sampling(exporter, domain)
        found.append((template, Chunk(rows, count, export_s * 1000, boot_ms, sampling)))
