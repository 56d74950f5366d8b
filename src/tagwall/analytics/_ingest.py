"""The collectors' UDP side: one thread per listening port reads datagrams in bursts, hands
each exporter's packets to its protocol's decoder in one call, and gives what came out to a
sink (the controller's: enrich, then the flow store).

Why threads and bursts: a decoder's cost is per call, not per record (columns, one numpy
dtype per template), so a reader that drains up to ``burst`` queued datagrams per wake-up and
decodes each exporter's share together keeps the per-packet Python cost to one ``recvfrom``.
Blocking sockets in threads cost nothing while idle and need no event loop in the agent-free
analytics role.

Guarantees: a malformed packet is counted (the decoder's ``statistics().errors``), logged
once per exporter and collector, and dropped; nothing an exporter sends stops a collector.
A sink that raises is logged and the burst is counted as lost (``statistics().sink_errors``);
the collector goes on.  ``stop()`` returns after every reader has ended and its last burst
went to the sink.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .collectors import DECODERS, DEFAULT_PORTS, Decoded, Decoder, DecoderStatistics

__all__ = ["CollectorSpec", "CollectorStatistics", "Collectors", "parse_collector"]

log = logging.getLogger("tagwall.analytics")

_RCVBUF_BYTES = 8 << 20  # FIELD-NOTES: bursts of IPFIX overrun the default 208 KB
_MAX_DATAGRAM = 65535
_WAKE_S = 0.2  # how often a blocked reader looks at the stop flag


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
    """One collector's counters: datagrams read, bursts given to the sink, bursts the sink
    refused, and its decoder's own statistics."""

    protocol: str
    port: int
    datagrams: int
    bursts: int
    sink_errors: int
    decoder: DecoderStatistics


class _Reader:
    """One port's socket, decoder and thread.  Only its thread touches the decoder."""

    def __init__(
        self,
        spec: CollectorSpec,
        sink: Callable[[Decoded], None],
        burst: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self.spec = spec
        self.decoder: Decoder = DECODERS[spec.protocol]()
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in spec.host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
        with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN; SO_RCVBUF is the fallback
            self.sock.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF_BYTES)  # SO_RCVBUFFORCE
        self.sock.bind((spec.host, spec.port))
        self.sock.settimeout(_WAKE_S)
        self.port: int = self.sock.getsockname()[1]
        self._sink = sink
        self._burst = burst
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self._errors_seen: dict[str, int] = {}
        self._warned: set[str] = set()
        self.datagrams = 0
        self.bursts = 0
        self.sink_errors = 0
        self.thread = threading.Thread(
            target=self._run, name=f"collector-{spec.protocol}-{self.port}", daemon=True
        )

    def _read_burst(self) -> dict[str, list[bytes]]:
        """Block for one datagram, then take what is queued (up to ``burst``), by exporter."""
        by_exporter: dict[str, list[bytes]] = {}
        try:
            data, addr = self.sock.recvfrom(_MAX_DATAGRAM)
        except TimeoutError:
            return by_exporter
        by_exporter.setdefault(addr[0], []).append(data)
        # Non-blocking for the rest of the burst.  (MSG_DONTWAIT would not do: on a socket
        # with a timeout CPython first polls for the timeout, then raises TimeoutError.)
        self.sock.setblocking(False)
        try:
            for _ in range(self._burst - 1):
                data, addr = self.sock.recvfrom(_MAX_DATAGRAM)
                by_exporter.setdefault(addr[0], []).append(data)
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(_WAKE_S)
        return by_exporter

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                by_exporter = self._read_burst()
            except OSError as exc:  # the socket closed under us: stopping
                if not self._stop.is_set():
                    log.error(
                        "collector %s:%d stopped reading: %s", self.spec.protocol, self.port, exc
                    )
                return
            for exporter, packets in by_exporter.items():
                self.datagrams += len(packets)
                decoded = self.decoder.decode_many(packets, exporter, self._clock_ms())
                self._warn_once(exporter)
                if not (decoded.batches or decoded.messages):
                    continue
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

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sock.close()


class Collectors:
    """The listening ports of one analytics role.  ``start`` binds every port first (an
    address in use fails before any thread starts), then starts the readers."""

    def __init__(
        self,
        specs: list[CollectorSpec],
        sink: Callable[[Decoded], None],
        *,
        burst: int = 256,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._specs = specs
        self._sink = sink
        self._burst = burst
        self._clock_ms = clock_ms
        self._readers: list[_Reader] = []

    def start(self) -> None:
        readers: list[_Reader] = []
        try:
            for spec in self._specs:
                readers.append(_Reader(spec, self._sink, self._burst, self._clock_ms))
        except OSError as exc:
            for reader in readers:
                reader.sock.close()
            raise OSError(
                exc.errno, f"collector {spec.protocol} on {spec.host}:{spec.port}: {exc.strerror}"
            ) from exc
        self._readers = readers
        for reader in readers:
            reader.thread.start()

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
                r.decoder.statistics(),
            )
            for r in self._readers
        ]

    def stop(self) -> None:
        for reader in self._readers:
            reader.stop()
        self._readers = []
