"""The collectors' UDP side: per listening port, one thread reads datagrams in bursts and
another hands each exporter's share of a burst to its protocol's decoder in one call, then
gives what came out to a sink (the controller's: enrich, then the flow store).

Why two threads with a backlog between them: a datagram the reader does not take in time
is lost once the socket buffer is full, while decoding, enrichment and the store can catch
up later.  So the reader only receives (``recvmmsg``, up to ``burst`` datagrams a call,
``_udp.py``) and queues; the decoder thread does the rest.  The backlog is bounded
(``backlog_bytes`` of datagrams; the default 256 MiB holds ~5.6M IPFIX records of softflowd's
layout): when it is full the reader waits, the socket buffer fills and the kernel drops, as
it would without the backlog.  Blocking sockets in threads cost
nothing while idle and need no event loop in the agent-free analytics role.

Guarantees: a malformed packet is counted (the decoder's ``statistics().errors``), logged
once per exporter and collector, and dropped; nothing an exporter sends stops a collector.
A sink that raises is logged and the burst is counted as lost (``statistics().sink_errors``);
the collector goes on.  ``stop()`` returns after every reader has ended and every datagram it
read (the backlog included) went through the decoder to the sink.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._udp import Receiver
from .collectors import DECODERS, DEFAULT_PORTS, Burst, Decoded, Decoder, DecoderStatistics

__all__ = ["CollectorSpec", "CollectorStatistics", "Collectors", "parse_collector"]

log = logging.getLogger("tagwall.analytics")

_RCVBUF_BYTES = 8 << 20  # FIELD-NOTES: bursts of IPFIX overrun the default 208 KB
_WAKE_S = 0.2  # how often a blocked reader looks at the stop flag
# After a burst smaller than the reader takes at once, let the kernel queue more for this
# long: a reader woken per datagram or two spent more time per call than the stream allowed.
_GATHER_S = 0.001


@dataclass(frozen=True, slots=True)
class CollectorSpec:
    """One listening port: ``protocol`` (a key of ``DECODERS``), bound to ``host``:``port``
    (port 0: any free port, see ``Collectors.ports``)."""

    protocol: str
    host: str = "0.0.0.0"
    port: int = 0


def parse_collector(text: str) -> CollectorSpec:
    """``ipfix`` (default port), ``ipfix:14739``, ``syslog:127.0.0.1:1514``.  Raises
    ``ValueError`` naming the part that is wrong and what is allowed."""
    protocol, _, rest = text.partition(":")
    if protocol not in DECODERS:
        raise ValueError(
            f"collector {text!r}: protocol {protocol!r} is not one of {sorted(DECODERS)}"
        )
    host, _, port_text = rest.rpartition(":") if rest.count(":") else ("", "", rest)
    if not port_text:
        return CollectorSpec(protocol, host or "0.0.0.0", DEFAULT_PORTS[protocol])
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"collector {text!r}: port {port_text!r} is not 0 to 65535")
    return CollectorSpec(protocol, host or "0.0.0.0", int(port_text))


@dataclass(frozen=True, slots=True)
class CollectorStatistics:
    """One collector's counters: datagrams read, bursts given to the sink, bursts lost to an
    exception (the sink's, or a decoder's bug), datagrams read and not yet decoded (the
    backlog), and its decoder's own statistics."""

    protocol: str
    port: int
    datagrams: int
    bursts: int
    sink_errors: int
    backlog: int
    decoder: DecoderStatistics


class _Reader:
    """One port's socket, decoder and two threads: ``reader`` receives bursts into the
    backlog, ``decoding`` takes them out, decodes and sinks.  Only ``decoding`` touches the
    decoder.

    Invariant: ``_backlog_bytes`` is the size of the datagrams in ``_backlog``; both are
    guarded by ``_ready``.
    """

    def __init__(
        self,
        spec: CollectorSpec,
        sink: Callable[[Decoded], None],
        burst: int,
        backlog_bytes: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self.spec = spec
        self.decoder: Decoder = DECODERS[spec.protocol]()
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in spec.host else socket.AF_INET, socket.SOCK_DGRAM
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
            with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN; SO_RCVBUF is the fallback
                self.sock.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF_BYTES)  # SO_RCVBUFFORCE
            self.sock.bind((spec.host, spec.port))
        except OSError:
            self.sock.close()
            raise
        self.port: int = self.sock.getsockname()[1]
        self._receiver = Receiver(self.sock, count=burst, wake_s=_WAKE_S)
        self._burst = burst
        self._sink = sink
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self._ready = threading.Condition()
        self._backlog: collections.deque[list[tuple[str, Burst]]] = collections.deque()
        self._backlog_bytes = 0
        self._max_backlog_bytes = backlog_bytes
        self._reading = True
        self._errors_seen: dict[str, int] = {}
        self._warned: set[str] = set()
        self.datagrams = 0
        self.bursts = 0
        self.sink_errors = 0
        name = f"collector-{spec.protocol}-{self.port}"
        self.thread = threading.Thread(target=self._read, name=name, daemon=True)
        self.decoding = threading.Thread(target=self._decode, name=f"{name}-decode", daemon=True)

    @property
    def backlog(self) -> int:
        """Datagrams read and not yet decoded."""
        with self._ready:
            return sum(len(b) for bursts in self._backlog for _, b in bursts)

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    bursts = self._receiver.receive()
                except OSError as exc:  # the socket closed under us: stopping
                    if not self._stop.is_set():
                        log.error(
                            "collector %s:%d stopped reading: %s",
                            self.spec.protocol,
                            self.port,
                            exc,
                        )
                    return
                if bursts:
                    received = self._queue(bursts)
                    if received < self._burst:
                        time.sleep(_GATHER_S)
        finally:
            with self._ready:
                self._reading = False
                self._ready.notify_all()

    def _queue(self, bursts: list[tuple[str, Burst]]) -> int:
        """Append to the backlog, waiting while it is full (the socket buffer takes the
        overflow, then the kernel drops); the number of datagrams."""
        size = bursts[0][1].slots.nbytes  # the bursts of one receive share their array
        count = sum(len(b) for _, b in bursts)
        with self._ready:
            while self._backlog and self._backlog_bytes + size > self._max_backlog_bytes:
                self._ready.wait()
            self._backlog.append(bursts)
            self._backlog_bytes += size
            self.datagrams += count
            self._ready.notify_all()
        return count

    def _decode(self) -> None:
        while True:
            with self._ready:
                while not self._backlog and self._reading:
                    self._ready.wait()
                if not self._backlog:
                    return  # the reader ended and everything it read is decoded
                bursts = self._backlog[0]
            for exporter, burst in bursts:
                self._decode_burst(exporter, burst)
            with self._ready:
                self._backlog.popleft()
                self._backlog_bytes -= bursts[0][1].slots.nbytes
                self._ready.notify_all()

    def _decode_burst(self, exporter: str, burst: Burst) -> None:
        try:
            decoded = self.decoder.decode_many(burst, exporter, self._clock_ms())
        except Exception:  # a bug (decode_many never raises): lose the burst, not the collector
            self.sink_errors += 1
            log.exception("collector %s: the decoder failed on a burst", self.spec.protocol)
            return
        self._warn_once(exporter)
        if not (decoded.batches or decoded.messages):
            return
        self.bursts += 1
        try:
            self._sink(decoded)
        except Exception:  # the sink's failure must not end collection
            self.sink_errors += 1
            log.exception("collector %s: the flow sink refused a burst", self.spec.protocol)

    def _warn_once(self, exporter: str) -> None:
        """Log the first malformed packet of each exporter (the counters keep counting)."""
        errors = self.decoder.statistics().errors
        total = sum(errors.values())
        if total == sum(self._errors_seen.values()):
            return
        new = sorted(k for k, n in errors.items() if n > self._errors_seen.get(k, 0))
        self._errors_seen = dict(errors)
        if exporter not in self._warned:
            self._warned.add(exporter)
            log.warning(
                "collector %s: malformed packets from %s dropped (%s); counted, logged once",
                self.spec.protocol,
                exporter,
                "; ".join(new),
            )

    def start(self) -> None:
        self.thread.start()
        self.decoding.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.decoding.join()
        self.sock.close()


class Collectors:
    """The listening ports of one analytics role.  ``start`` binds every port first (an
    address in use fails before any thread starts), then starts the readers."""

    def __init__(
        self,
        specs: list[CollectorSpec],
        sink: Callable[[Decoded], None],
        *,
        burst: int = 1024,
        backlog_bytes: int = 256 << 20,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._specs = specs
        self._sink = sink
        self._burst = burst
        self._backlog_bytes = backlog_bytes
        self._clock_ms = clock_ms
        self._readers: list[_Reader] = []

    def start(self) -> None:
        readers: list[_Reader] = []
        try:
            for spec in self._specs:
                readers.append(
                    _Reader(spec, self._sink, self._burst, self._backlog_bytes, self._clock_ms)
                )
        except OSError as exc:
            for reader in readers:
                reader.sock.close()
            raise OSError(
                exc.errno, f"collector {spec.protocol} on {spec.host}:{spec.port}: {exc.strerror}"
            ) from exc
        self._readers = readers
        for reader in readers:
            reader.start()

    @property
    def ports(self) -> Mapping[str, int]:
        """protocol → bound port (the chosen one where the spec said 0)."""
        return {r.spec.protocol: r.port for r in self._readers}

    def statistics(self) -> list[CollectorStatistics]:
        return [
            CollectorStatistics(
                r.spec.protocol,
                r.port,
                r.datagrams,
                r.bursts,
                r.sink_errors,
                r.backlog,
                r.decoder.statistics(),
            )
            for r in self._readers
        ]

    def stop(self) -> None:
        for reader in self._readers:
            reader.stop()
        self._readers = []
