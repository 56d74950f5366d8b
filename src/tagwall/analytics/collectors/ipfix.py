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

Bursts (:class:`~._base.Burst`, what the collector receives in one system call) skip the
per-message Python for the message exporters send almost always: one data set of a known
fixed-length template filling the message.  Those are found for the whole burst at once
(their headers read as one numpy array, their records copied out with one fancy index per
template); every other message (templates, options data, several sets, anything malformed)
takes the per-message path in its place in the order, so the result and the statistics are
those of decoding the messages one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from .._batch import Source
from ._base import Burst, DecodeError
from ._state import Found, PacketDecoder
from ._template import Chunk, FieldSpec, Sets

__all__ = ["IpfixDecoder"]

_HEADER = struct.Struct(">HHIII")
_SET = struct.Struct(">HH")
_FIELD = struct.Struct(">HH")
_ENTERPRISE = struct.Struct(">I")
TEMPLATE_SET = 2
OPTIONS_SET = 3
FIRST_DATA_SET = 256
# The message header and the first set's header, as the burst path reads them.
_HEADS = np.dtype(
    {
        "names": ["version", "length", "export_s", "domain", "set_id", "set_length"],
        "formats": [">u2", ">u2", ">u4", ">u4", ">u2", ">u2"],
        "offsets": [0, 2, 4, 12, 16, 18],
        "itemsize": _HEADER.size + _SET.size,
    }
)


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

    # -- bursts --------------------------------------------------------------------------

    def _found(self, packets: Iterable[bytes], exporter: str) -> Found:
        if not isinstance(packets, Burst):
            return super()._found(packets, exporter)
        burst = packets
        heads = burst.window(np.arange(len(burst)), 0, _HEADS.itemsize).view(_HEADS)[:, 0]
        length = heads["length"].astype(np.intp)
        # One data set filling a well-formed message: what the burst path may take.
        plain = (
            (burst.lengths >= _HEADS.itemsize)
            & (heads["version"] == 10)
            & (length <= burst.lengths)
            & (heads["set_id"] >= FIRST_DATA_SET)
            & (heads["set_length"].astype(np.intp) + _HEADER.size == length)
        )
        keys = heads["domain"].astype(np.int64) << 16 | heads["set_id"]
        generation = self._templates.generation
        fast = self._fast(plain, keys, exporter)
        found: Found = []
        at = 0
        while at < len(burst):
            slow = np.flatnonzero(~fast[at:])
            end = at + int(slow[0]) if len(slow) else len(burst)
            self._counters.packets += end - at
            self._sets(burst, heads, keys, at, end, exporter, found)
            if end < len(burst):
                found += self._counted(burst.packet(end), exporter)
                if self._templates.generation != generation:  # it (re)defined templates
                    generation = self._templates.generation
                    fast[end + 1 :] = self._fast(plain[end + 1 :], keys[end + 1 :], exporter)
            at = end + 1
        return found

    def _fast(
        self, plain: npt.NDArray[np.bool_], keys: npt.NDArray[np.int64], exporter: str
    ) -> npt.NDArray[np.bool_]:
        """Which messages the burst path takes: plain ones whose (domain, set id) names a
        fixed-length data template now (others: options data changes state, an unknown
        template is counted as skipped, variable-length records need the per-record path)."""
        fast = np.zeros(len(keys), np.bool_)
        for key in np.unique(keys[plain]).tolist():
            known = self._templates.get(exporter, key >> 16, key & 0xFFFF)
            if known is not None and known[0].fixed and not known[1]:
                fast |= plain & (keys == key)
        return fast

    def _sets(
        self,
        burst: Burst,
        heads: npt.NDArray[np.void],
        keys: npt.NDArray[np.int64],
        start: int,
        end: int,
        exporter: str,
        found: Found,
    ) -> None:
        """The data sets of the fast messages ``start`` to ``end`` (exclusive), one
        :class:`Sets` per template in the order the templates first appear."""
        run = keys[start:end]
        unique, first = np.unique(run, return_index=True)
        for key in unique[np.argsort(first)].tolist():
            picked = start + np.flatnonzero(run == key)
            domain = key >> 16
            known = self._templates.get(exporter, domain, key & 0xFFFF)
            assert known is not None  # _fast checked it, and no template changed since
            template = known[0]
            size = template.dtype.itemsize
            counts = (heads["set_length"][picked].astype(np.int64) - _SET.size) // size
            most = int(counts.max())
            if not most:
                continue  # padding only
            window = burst.window(picked, _HEADS.itemsize, most * size).reshape(-1, most, size)
            # Messages with fewer records than the longest: drop their slots' leftovers.
            if counts.min() == most:
                rows = window.reshape(-1, size)
            else:
                rows = window[np.arange(most) < counts[:, None]]
            boot_ms = self._templates.boot_ms(exporter, domain)
            sampling = self._templates.sampling(exporter, domain)
            sets = Sets(
                rows,
                counts,
                heads["export_s"][picked].astype(np.int64) * 1000,
                np.full(len(picked), boot_ms or 0, np.int64),
                np.full(len(picked), boot_ms is not None),
                np.full(len(picked), sampling, np.uint64),
            )
            found.append((template, sets))
