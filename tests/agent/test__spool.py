"""The on-disk spool: order, acknowledgement, the byte bound and its persistent drop counter,
recovery from a torn tail, and no redelivery of acknowledged records after a restart."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from tagwall.agent._spool import Spool, SpoolRecord, SpoolStatistics

FRAME = 8  # length + CRC-32 before every payload


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"record-{i:04d}".encode() for i in range(start, start + n)]


def test_peek_returns_oldest_first_and_ack_removes_only_up_to_the_seq(tmp_path: Path) -> None:
    """Sequence numbers start at 1; peek does not consume; ack is inclusive."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.append(payloads(5)) == 5
    assert spool.peek(2) == [SpoolRecord(1, b"record-0000"), SpoolRecord(2, b"record-0001")]
    assert spool.peek(2) == spool.peek(2)
    spool.ack(3)
    assert [r.seq for r in spool.peek(10)] == [4, 5]
    assert spool.statistics() == SpoolStatistics(records=2, bytes=2 * (FRAME + 11), dropped=0)
    spool.ack(3)  # again: nothing changes
    spool.ack(5)
    assert spool.peek(10) == []
    assert spool.append([b"later"]) == 1
    assert spool.peek(10) == [SpoolRecord(6, b"later")]  # seqs are never reused
    with pytest.raises(ValueError, match="beyond the last appended record 6"):
        spool.ack(7)
    spool.close()


def test_records_span_segments_and_acked_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    spool.append(payloads(20))
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert [r.payload for r in spool.peek(100)] == payloads(20)
    spool.ack(17)
    assert [r.seq for r in spool.peek(100)] == [18, 19, 20]
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the one holding 18..20
    spool.ack(20)
    assert list(tmp_path.glob("*.seg")) == []
    spool.close()


def test_full_spool_drops_and_counts_and_the_count_survives_reopen(tmp_path: Path) -> None:
    """max_bytes bounds the framed bytes of unacknowledged records."""
    size = FRAME + len(b"record-0000")
    spool = Spool(tmp_path, max_bytes=3 * size)
    assert spool.append(payloads(5)) == 3
    assert spool.statistics() == SpoolStatistics(records=3, bytes=3 * size, dropped=2)
    spool.close()

    reopened = Spool(tmp_path, max_bytes=3 * size)
    assert reopened.statistics() == SpoolStatistics(records=3, bytes=3 * size, dropped=2)
    assert reopened.append([b"x"]) == 0
    reopened.ack(2)  # room again for two
    assert reopened.append(payloads(2, start=10)) == 2
    assert [r.payload for r in reopened.peek(10)] == [
        b"record-0002",
        b"record-0010",
        b"record-0011",
    ]
    assert reopened.statistics().dropped == 3
    reopened.close()
    assert Spool(tmp_path, max_bytes=3 * size).statistics().dropped == 3


@pytest.mark.parametrize("cut", [1, FRAME - 1, FRAME, FRAME + 3])
def test_a_torn_last_record_is_cut_off_and_every_complete_one_recovered(
    tmp_path: Path, cut: int
) -> None:
    """A crash mid-write leaves ``cut`` bytes of the last record; reopening keeps the others,
    truncates the segment, and the next record gets the torn one's seq."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(payloads(4))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    whole = segment.stat().st_size
    os.truncate(segment, whole - (FRAME + 11) + cut)

    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [r.payload for r in reopened.peek(10)] == payloads(3)
    assert segment.stat().st_size == 3 * (FRAME + 11)
    reopened.append([b"after"])
    assert reopened.peek(10)[-1] == SpoolRecord(4, b"after")
    reopened.close()


def test_a_corrupt_record_is_cut_off_with_what_follows(tmp_path: Path) -> None:
    """A complete-looking frame whose CRC does not match (garbage after a crash) ends the
    segment's valid records."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(payloads(2))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    with open(segment, "ab") as f:
        f.write(struct.pack(">II", 3, zlib.crc32(b"abc") ^ 1) + b"abc")
    assert [r.payload for r in Spool(tmp_path, max_bytes=1 << 20).peek(10)] == payloads(2)


def test_reopen_after_ack_does_not_redeliver(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    spool.append(payloads(10))
    spool.ack(4)  # inside the first segment (seqs 1..6): it stays, 1..4 are acked
    spool.close()

    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    assert [r.seq for r in reopened.peek(100)] == [5, 6, 7, 8, 9, 10]
    assert reopened.statistics().records == 6
    reopened.append([b"new"])
    assert [r.seq for r in reopened.peek(100)] == [5, 6, 7, 8, 9, 10, 11]
    reopened.ack(11)
    reopened.close()

    emptied = Spool(tmp_path, max_bytes=1 << 20)
    assert emptied.peek(10) == []
    emptied.append([b"next"])
    assert emptied.peek(10) == [SpoolRecord(12, b"next")]
    emptied.close()


def test_a_spool_keeps_its_identity_and_a_new_one_gets_another(tmp_path: Path) -> None:
    """The identity names the sequence: the same spool reopened keeps it (its numbers go on),
    a spool made afresh in an emptied directory numbers from 1 under another one."""
    first = Spool(tmp_path / "s", max_bytes=1000)
    first.append([b"a"])
    identity = first.identity
    first.close()
    again = Spool(tmp_path / "s", max_bytes=1000)
    assert again.identity == identity
    assert again.append([b"b"]) == 1 and again.peek(2)[-1].seq == 2
    again.close()
    for path in (tmp_path / "s").iterdir():
        path.unlink()
    fresh = Spool(tmp_path / "s", max_bytes=1000)
    assert fresh.identity != identity
    fresh.append([b"c"])
    assert fresh.peek(1) == [SpoolRecord(1, b"c")]
    fresh.close()
