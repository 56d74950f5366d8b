"""Decoder state shared by the template protocols (IPFIX, NetFlow v9) and NetFlow v5:
templates and options state per exporter and domain, data sets waiting to be decoded, and
the decode / decode_many / statistics plumbing.

Why a base class: the three decoders differ only in how one packet splits into templates
and data sets (``_message``); batching across packets, error counting and the guarantee
that a malformed packet contributes no records are the same and written once here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np

from .._batch import FlowBatch, Source
from ._base import Counters, Decoded, DecodeError, DecoderStatistics, with_dropped
from ._template import Chunk, FieldSpec, Sets, Template, columns, has_addresses, read_rows, uint

__all__ = ["Found", "PacketDecoder", "Templates"]

_OPTIONS = ("boot_ms", "sampling", "sampling_packets", "sampling_space")
_MAX_TIME_MS = 1 << 62
_MAX_SAMPLING = 1 << 32

# What packets yielded: data sets to decode (one, or a burst's in columns), with their template.
Found = list[tuple[Template, Chunk | Sets]]


class PacketDecoder(abc.ABC):
    """A decoder whose packets hold data sets of (compiled) templates."""

    source: ClassVar[Source]

    def __init__(self) -> None:
        self._templates = Templates()
        self._counters = Counters()

    @abc.abstractmethod
    def _message(self, packet: bytes, exporter: str) -> Found:
        """The data sets of one packet; raises :class:`DecodeError` if it is malformed.
        It may learn templates and options state on the way (kept even if it raises later:
        the exporter meant them)."""

    def _data_rows(
        self, packet: bytes, start: int, end: int, exporter: str, domain: int, template_id: int
    ) -> tuple[Template, bytes, int] | None:
        """(template, rows, count) of the data set ``packet[start:end]``; None for a set
        whose template has not arrived, or one of options records (applied to the state):
        both counted as skipped."""
        known = self._templates.get(exporter, domain, template_id)
        if known is None:
            self._counters.skipped += 1
            return None
        template, options = known
        rows, count = read_rows(template, packet, start, end)
        if options:
            self._templates.apply_options(exporter, domain, template, rows)
            self._counters.skipped += count
            return None
        return template, rows, count

    def decode(self, packet: bytes, exporter: str, received_ms: int) -> Decoded:
        """The flows of one packet.  Raises :class:`DecodeError` if it is malformed."""
        self._counters.packets += 1
        try:
            found = self._message(packet, exporter)
        except DecodeError as error:
            self._counters.errors[error.key] += 1
            raise
        return self._batches(found, exporter)

    def decode_many(self, packets: Iterable[bytes], exporter: str, received_ms: int) -> Decoded:
        """The flows of many packets of one exporter, one batch per template; a malformed
        packet is counted in ``statistics().errors`` and contributes nothing."""
        return self._batches(self._found(packets, exporter), exporter)

    def _found(self, packets: Iterable[bytes], exporter: str) -> Found:
        """The data sets of ``packets`` in order, each packet through ``_message``."""
        found: Found = []
        for packet in packets:
            found += self._counted(packet, exporter)
        return found

    def _counted(self, packet: bytes, exporter: str) -> Found:
        """``_message``, with the packet and its error (then no data sets) counted."""
        self._counters.packets += 1
        try:
            return self._message(packet, exporter)
        except DecodeError as error:
            self._counters.errors[error.key] += 1
            return []

    def statistics(self) -> DecoderStatistics:
        return self._counters.snapshot(len(self._templates))

    def _batches(self, found: Found, exporter: str) -> Decoded:
        """One batch per template: one ``frombuffer`` however many packets fed it.  Records
        of templates without addresses are dropped and counted on the first batch."""
        by_template: dict[Template, list[Chunk | Sets]] = {}
        for template, part in found:
            if part.count:
                by_template.setdefault(template, []).append(part)
        batches: list[FlowBatch] = []
        dropped = 0
        for template, parts in by_template.items():
            if not has_addresses(template):
                dropped += sum(p.count for p in parts)
            else:
                sets = Sets.join(template, parts)
                batches.append(FlowBatch.of(self.source, exporter, columns(template, sets)))
                self._counters.records += len(batches[-1])
        self._counters.dropped += dropped
        return Decoded(with_dropped(batches, self.source, exporter, dropped))


class Templates:
    """Templates and options state, each kept per ``(exporter, domain)``: IPFIX's observation
    domain or NetFlow v9's source id.  So two exporters, or two domains of one, may reuse a
    template id for different layouts.  Only the owning decoder mutates it.
    """

    def __init__(self) -> None:
        # (exporter, domain, template id) → (template, is an options template)
        self._known: dict[tuple[str, int, int], tuple[Template, bool]] = {}
        self._boot_ms: dict[tuple[str, int], int] = {}
        self._sampling: dict[tuple[str, int], int] = {}
        # Invariant: changes whenever some (exporter, domain, template id) starts or stops
        # naming a template (so a caller may cache lookups while it stays the same).
        self.generation = 0

    def __len__(self) -> int:
        return len(self._known)

    def learn(
        self,
        exporter: str,
        domain: int,
        template_id: int,
        fields: Sequence[FieldSpec],
        *,
        options: bool,
        variable_ok: bool = True,
    ) -> None:
        """Compile and keep a template (replacing that id).  A resent, equal template keeps
        the one compiled before: no compiling per packet, and data sets of many packets
        still meet in one batch.  Raises :class:`DecodeError` as :meth:`Template.compile`."""
        key = (exporter, domain, template_id)
        known = self._known.get(key)
        if known is not None and known[1] == options and known[0].fields == tuple(fields):
            return
        template = Template.compile(template_id, fields, variable_ok=variable_ok)
        self._known[key] = (template, options)
        self.generation += 1

    def get(self, exporter: str, domain: int, template_id: int) -> tuple[Template, bool] | None:
        return self._known.get((exporter, domain, template_id))

    def withdraw(self, exporter: str, domain: int, template_id: int) -> None:
        if self._known.pop((exporter, domain, template_id), None) is not None:
            self.generation += 1

    def withdraw_all(self, exporter: str, domain: int, *, options: bool) -> None:
        """Forget every data (or every options) template of the domain."""
        for key, (_, is_options) in list(self._known.items()):
            if key[:2] == (exporter, domain) and is_options == options:
                del self._known[key]
                self.generation += 1

    def boot_ms(self, exporter: str, domain: int) -> int | None:
        """The exporter's boot time (Unix ms) an options record told, if any."""
        return self._boot_ms.get((exporter, domain))

    def sampling(self, exporter: str, domain: int) -> int:
        """Packets per sampled packet, as an options record told (1 if none did)."""
        return self._sampling.get((exporter, domain), 1)

    def apply_options(self, exporter: str, domain: int, template: Template, rows: bytes) -> None:
        """Take the boot time and sampling rate of options records (the last record wins).

        Sampling: samplingInterval (34) is packets per sampled packet; samplingPacketInterval
        (305) and samplingPacketSpace (306) sample 305 packets in every 305 + 306, so the
        rate is ``(305 + 306) // 305``.  Rates outside 1..2**32 and boot times from 2**62 ms
        on are ignored (they would overflow the columns' arithmetic).
        """
        if not template.roles:
            return  # nothing to read (and maybe a zero itemsize)
        table = np.frombuffer(rows, template.dtype)
        if not len(table):
            return
        key = (exporter, domain)
        columns = {role: uint(table, template, role) for role in _OPTIONS}
        last = {role: int(column[-1]) for role, column in columns.items() if column is not None}
        if last.get("boot_ms", _MAX_TIME_MS) < _MAX_TIME_MS:
            self._boot_ms[key] = last["boot_ms"]
        rate = last.get("sampling", 0)
        if last.get("sampling_packets", 0) > 0 and "sampling_space" in last:
            rate = (last["sampling_packets"] + last["sampling_space"]) // last["sampling_packets"]
        if 1 <= rate <= _MAX_SAMPLING:
            self._sampling[key] = rate
