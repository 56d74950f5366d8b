"""What every decoder shares: its result, its one error, its counters and its protocol.

Contract of a decoder (every module of this package keeps it, and the fuzz tests check it):

* ``decode(packet, exporter, received_ms)`` returns a :class:`Decoded` or raises
  :class:`DecodeError`, and nothing else, whatever the bytes;
* a packet that raises changed no state except what it carried before the fault (an IPFIX
  template set that precedes a truncated data set is kept, as a real exporter meant it);
* ``exporter`` is the sender's address as the UDP server saw it (``"192.0.2.1"``); state such
  as templates is kept per exporter, so two exporters never see each other's templates;
* ``received_ms`` is the arrival time, Unix ms; it stands in for record times the packet
  does not carry (sFlow has none; a syslog line may have none).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .._batch import COLUMNS, FlowBatch, Source

__all__ = [
    "Burst",
    "Counters",
    "DecodeError",
    "Decoded",
    "Decoder",
    "DecoderStatistics",
    "SyslogMessage",
    "with_dropped",
]


class DecodeError(ValueError):
    """A malformed packet.  ``field`` names where in the packet (``"ipfix.set.length"``),
    ``reason`` says what is wrong in a few fixed words (statistics count by
    ``"<field>: <reason>"``, so the pair never contains values), ``value`` is the offending
    value when there is one.

    Example: ``DecodeError("netflow5.header.count", "records run past the packet", 31)``.
    """

    def __init__(self, field: str, reason: str, value: object = None) -> None:
        self.field = field
        self.reason = reason
        self.value = value
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"{field}: {reason}{shown}")

    @property
    def key(self) -> str:
        """The statistics key: field and reason without the value."""
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Burst:
    """Datagrams as a receiver put them in its buffer, without a ``bytes`` object each:
    datagram ``i`` is ``slots[index[i], :lengths[i]]``, in arrival order.

    Iterating gives each datagram as ``bytes``, so every ``decode_many`` takes a burst; the
    IPFIX decoder reads the buffer itself.  The receiver reuses the buffer for its next
    burst: a decoder copies what it keeps before returning.
    """

    slots: npt.NDArray[np.uint8]  # 2-D: one row per receive slot
    index: npt.NDArray[np.intp]
    lengths: npt.NDArray[np.intp]

    @classmethod
    def of(cls, packets: Sequence[bytes]) -> Burst:
        """A burst holding copies of ``packets`` (tests, replays)."""
        width = max([0, *map(len, packets)])
        slots = np.zeros((len(packets), width), np.uint8)
        for i, packet in enumerate(packets):
            slots[i, : len(packet)] = np.frombuffer(packet, np.uint8)
        lengths = np.array([len(p) for p in packets], np.intp)
        return cls(slots, np.arange(len(packets)), lengths)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[bytes]:
        return (self.packet(i) for i in range(len(self.index)))

    def packet(self, i: int) -> bytes:
        return self.slots[self.index[i], : self.lengths[i]].tobytes()

    def window(self, picked: npt.NDArray[np.intp], start: int, width: int) -> npt.NDArray[np.uint8]:
        """A copy of bytes ``start`` to ``start + width`` of the datagrams ``picked`` (positions
        in this burst), one row each; bytes past a datagram's end are the slot's leftovers, or
        zeros past the slot's."""
        part = self.slots[self.index[picked], start : start + width]
        short = width - part.shape[1]
        return np.pad(part, ((0, 0), (0, short))) if short else part


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    """A syslog line that no known firewall format matched, kept as text.

    ``facility`` and ``severity`` come from the PRI (``<134>`` → facility 16 local0, severity
    6 info); ``timestamp_ms`` is the header's time (Unix ms) or ``None`` when it had none;
    ``hostname`` and ``app`` are ``None`` when the header had none (RFC 5424's ``-``).
    """

    received_ms: int
    exporter: str
    facility: int
    severity: int
    timestamp_ms: int | None
    hostname: str | None
    app: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one call of a decoder found: flow batches (one per template, or one per call)
    and the syslog lines that carry no flow."""

    batches: tuple[FlowBatch, ...] = ()
    messages: tuple[SyslogMessage, ...] = ()

    @property
    def records(self) -> int:
        """Flow records over all batches."""
        return sum(len(b) for b in self.batches)


@dataclass(frozen=True, slots=True)
class DecoderStatistics:
    """A decoder's counters since it was made.

    ``packets`` counts every call's packet, good or bad; ``records`` the flow records returned;
    ``dropped`` the flow records seen but not returned (no address, unparsable header);
    ``skipped`` the units that carry no flow or cannot be read yet (a data set whose template
    has not arrived, an sFlow counter sample, an options record); ``messages`` the syslog
    lines returned as text; ``templates`` the templates known now; ``errors`` the packets that
    raised, by :attr:`DecodeError.key`.
    """

    packets: int = 0
    records: int = 0
    dropped: int = 0
    skipped: int = 0
    messages: int = 0
    templates: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)


class Decoder(Protocol):
    """One protocol's decoder, stateful per exporter where the protocol needs it."""

    def decode(self, packet: bytes, exporter: str, received_ms: int) -> Decoded:
        """Flows and messages of one packet; raises only :class:`DecodeError`."""
        ...

    def decode_many(self, packets: Iterable[bytes], exporter: str, received_ms: int) -> Decoded:
        """The same as decoding each packet in order, in fewer, larger batches.  A malformed
        packet is counted in ``statistics().errors`` and skipped; it never raises."""
        ...

    def statistics(self) -> DecoderStatistics: ...


class Counters:
    """The mutable side of :class:`DecoderStatistics`; only its decoder writes it."""

    def __init__(self) -> None:
        self.packets = 0
        self.records = 0
        self.dropped = 0
        self.skipped = 0
        self.messages = 0
        self.errors: Counter[str] = Counter()

    def snapshot(self, templates: int = 0) -> DecoderStatistics:
        return DecoderStatistics(
            self.packets,
            self.records,
            self.dropped,
            self.skipped,
            self.messages,
            templates,
            dict(self.errors),
        )


def with_dropped(
    batches: Sequence[FlowBatch], source: Source, exporter: str, dropped: int
) -> tuple[FlowBatch, ...]:
    """``batches`` with ``dropped`` records counted on the first (``FlowBatch.dropped``, which
    the store sums); an empty batch carries them when there is no other."""
    if not dropped:
        return tuple(batches)
    if not batches:
        empty = FlowBatch.of(source, exporter, {name: [] for name in COLUMNS}, dropped=dropped)
        return (empty,)
    first = dataclasses.replace(batches[0], dropped=batches[0].dropped + dropped)
    return (first, *batches[1:])
