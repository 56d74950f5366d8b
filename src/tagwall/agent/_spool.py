"""A bounded on-disk spool: records wait here while the controller is unreachable.

Why it exists: flow records are produced whether or not a controller listens; the agent keeps
them across controller outages and its own restarts, up to a byte bound, and forgets one only
when the controller has confirmed it.

Guarantees (for a caller that acks only what the controller confirmed):

- Every record ``append`` accepted is on disk (fsynced) before ``append`` returns; a crash or
  restart afterwards loses none of them.
- ``ack(upto_seq)`` is on disk before it returns; after it, no record with ``seq <= upto_seq``
  is returned by ``peek`` again, also after a restart.
- Sequence numbers start at 1, increase by one per accepted record and are never reused, also
  across restarts.  ``peek`` returns records oldest first.
- The bound: ``max_bytes`` limits the framed size of the unacknowledged records.  A record that
  does not fit is dropped and ``dropped`` goes up; the counter is persisted with the batch, so
  it survives restarts.  Disk use may exceed the bound by the acknowledged records still sharing
  a segment with unacknowledged ones (at most one segment, ``segment_bytes``).

Layout of ``directory``: ``<first seq, 20 digits>.seg`` segment files, append-only, and
``state.json`` = ``{"acked": A, "dropped": D, "identity": I}``, replaced atomically (write,
fsync, rename); ``identity`` is random, made with the spool, and names its sequence numbers.
fsync policy: one fsync per ``append`` call (a batch), and of the directory when a segment is
created; one state write per ``ack`` and per batch that dropped records.

Record framing: a 4-byte big-endian payload length, a 4-byte big-endian CRC-32 of the
payload, then the payload.  Worked example: payload ``b"hi"`` (CRC-32 0xD8932AAC) is framed as
``00 00 00 02 d8 93 2a ac 68 69`` (10 bytes, which is what it costs against ``max_bytes``).
A torn or corrupt record (a crash mid-write) and everything after it in its segment is cut
off when the spool is opened, and logged; such a record was never acknowledged to the caller.

Thread safety: every method takes one lock, so a producer and a shipper may share a spool.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["Spool", "SpoolRecord", "SpoolStatistics", "fsync_dir"]

log = logging.getLogger("tagwall.agent")

_HEADER = struct.Struct(">II")  # payload length, CRC-32 of the payload


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStatistics:
    records: int  # unacknowledged records on disk
    bytes: int  # their framed size, what ``max_bytes`` bounds
    dropped: int  # records refused because the spool was full, since the spool was created


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    records: int  # complete records in the file
    size: int  # bytes of those records (the file is cut to this on open)


class Spool:
    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int = 4 * 1024 * 1024
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._state = directory / "state.json"
        directory.mkdir(parents=True, exist_ok=True)
        state = json.loads(self._state.read_text()) if self._state.exists() else {}
        self._acked: int = state.get("acked", 0)
        self._dropped: int = state.get("dropped", 0)
        # Names this spool's sequence: a spool made afresh (its directory lost) starts at 1
        # again, and a receiver that remembers numbers must know it is another sequence.
        self.identity: str = state.get("identity") or secrets.token_hex(8)
        if "identity" not in state:
            self._write_state_locked()
        self._segments = [_recover(path) for path in sorted(directory.glob("*.seg"))]
        for empty in [s for s in self._segments if s.records == 0]:
            empty.path.unlink()  # torn as a whole: its first seq is free again
            self._segments.remove(empty)
        self._writer: BinaryIO | None = None  # appends to ``_segments[-1]`` when open
        # Invariant: the first unacknowledged record, ``_head_seq``, starts at byte
        # ``_head_offset`` of ``_segments[0]``; only ``_skip_acked_locked`` moves them.
        self._head_seq = self._segments[0].first_seq if self._segments else self._acked + 1
        self._head_offset = 0
        self._skip_acked_locked()

    # -- producer ---------------------------------------------------------------------------

    def append(self, payloads: Iterable[bytes]) -> int:
        """Write the records that fit, in order, with one fsync; returns how many were
        accepted (the rest were dropped and counted)."""
        with self._lock:
            pending = self._pending_bytes_locked()
            accepted = dropped = 0
            for payload in payloads:
                framed = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
                if pending + len(framed) > self.max_bytes:
                    dropped += 1
                    continue
                self._writer_locked().write(framed)
                self._segments[-1].records += 1
                self._segments[-1].size += len(framed)
                pending += len(framed)
                accepted += 1
            if self._writer is not None and accepted:
                self._writer.flush()
                os.fsync(self._writer.fileno())
            if dropped:
                self._dropped += dropped
                log.warning(
                    "spool %s full (max_bytes): %d records dropped", self.directory, dropped
                )
                self._write_state_locked()
            return accepted

    # -- shipper ----------------------------------------------------------------------------

    def peek(self, n: int) -> list[SpoolRecord]:
        """Up to ``n`` unacknowledged records, oldest first; nothing is removed."""
        with self._lock:
            out: list[SpoolRecord] = []
            seq, offset = self._head_seq, self._head_offset
            for segment in self._segments:
                seq = max(seq, segment.first_seq)  # a corrupt tail cut off leaves a gap
                with open(segment.path, "rb") as f:
                    f.seek(offset)
                    while len(out) < n and f.tell() < segment.size:
                        length, _ = _HEADER.unpack(f.read(_HEADER.size))
                        out.append(SpoolRecord(seq, f.read(length)))
                        seq += 1
                if len(out) >= n:
                    break
                offset = 0
            return out

    def ack(self, upto_seq: int) -> None:
        """Forget every record with ``seq <= upto_seq`` (inclusive), durably.  Acking what
        was already acked is a no-op; acking beyond the last appended record is an error."""
        with self._lock:
            if upto_seq <= self._acked:
                return
            last = _last_seq(self._segments[-1]) if self._segments else self._acked
            if upto_seq > last:
                raise ValueError(f"ack({upto_seq}) is beyond the last appended record {last}")
            self._acked = upto_seq
            self._write_state_locked()
            while self._segments and _last_seq(self._segments[0]) <= upto_seq:
                gone = self._segments.pop(0)
                if not self._segments and self._writer is not None:
                    self._writer.close()
                    self._writer = None
                gone.path.unlink()
                self._head_offset = 0
                self._head_seq = self._segments[0].first_seq if self._segments else upto_seq + 1
            self._skip_acked_locked()

    def statistics(self) -> SpoolStatistics:
        with self._lock:
            records = sum(s.records for s in self._segments)
            if self._segments:
                records -= self._head_seq - self._segments[0].first_seq
            return SpoolStatistics(records, self._pending_bytes_locked(), self._dropped)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    # -- internals --------------------------------------------------------------------------

    def _pending_bytes_locked(self) -> int:
        return sum(s.size for s in self._segments) - self._head_offset

    def _skip_acked_locked(self) -> None:
        """Move the head past the acknowledged records at the start of the first segment."""
        if not self._segments or self._head_seq > self._acked:
            return
        with open(self._segments[0].path, "rb") as f:
            f.seek(self._head_offset)
            while self._head_seq <= self._acked:
                length, _ = _HEADER.unpack(f.read(_HEADER.size))
                f.seek(length, os.SEEK_CUR)
                self._head_seq += 1
            self._head_offset = f.tell()

    def _writer_locked(self) -> BinaryIO:
        if self._writer is not None and self._segments[-1].size < self.segment_bytes:
            return self._writer
        if self._writer is not None:
            self._writer.close()
        first = _last_seq(self._segments[-1]) + 1 if self._segments else self._acked + 1
        path = self.directory / f"{first:020d}.seg"
        self._writer = open(path, "ab")  # noqa: SIM115  # stays open across appends
        self._segments.append(_Segment(first, path, 0, 0))
        fsync_dir(self.directory)
        return self._writer

    def _write_state_locked(self) -> None:
        tmp = self._state.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(
                {"acked": self._acked, "dropped": self._dropped, "identity": self.identity}, f
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state)
        fsync_dir(self.directory)


def _last_seq(segment: _Segment) -> int:
    return segment.first_seq + segment.records - 1


def _recover(path: Path) -> _Segment:
    """Count the complete records of a segment and cut off a torn or corrupt tail."""
    data = path.read_bytes()
    offset = records = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if end > len(data) or zlib.crc32(data[offset + _HEADER.size : end]) != crc:
            break
        offset, records = end, records + 1
    if offset != len(data):
        log.warning("spool segment %s: %d torn bytes cut at %d", path, len(data) - offset, offset)
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
    return _Segment(int(path.stem), path, records, offset)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a file created, renamed or removed) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
