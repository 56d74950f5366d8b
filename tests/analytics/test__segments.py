"""SegmentFiles: a file nobody registered is deleted on open, a registered file that does not
read back whole is reported, and a retired file outlives the queries that may read it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]

from tagwall.analytics._segments import Segment, SegmentFiles, segment_directory

from .flows_support import T0

DAY = T0 // 86_400_000


def rows(n: int) -> pa.Table:
    return pa.table({"start_ms": pa.array([T0 + i for i in range(n)], pa.int64())})


def written(files: SegmentFiles, n: int) -> Segment:
    table = rows(n)
    name = files.write(table.to_batches(), table.schema, DAY)
    files.sync()
    return Segment(name, DAY, n, 0, T0, T0 + n - 1)


def test_the_directory_sits_beside_the_database_file(tmp_path: Path) -> None:
    assert segment_directory(tmp_path / "flows.duckdb") == tmp_path / "flows.duckdb.segments"


def test_recover_deletes_unregistered_files_and_reports_torn_registered_ones(
    tmp_path: Path,
) -> None:
    files = SegmentFiles(tmp_path)
    good, torn, orphan = written(files, 5), written(files, 7), written(files, 3)
    data = (tmp_path / torn.name).read_bytes()
    (tmp_path / torn.name).write_bytes(data[: len(data) // 2])  # a write the disk lost half of
    (tmp_path / "20231114-000000000099.parquet").write_bytes(b"PAR1 torn")  # a crash mid-write

    reopened = SegmentFiles(tmp_path)
    assert reopened.recover([good, torn]) == [torn]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([good.name, torn.name])
    assert orphan.name not in {p.name for p in tmp_path.iterdir()}
    assert written(reopened, 1).sequence == torn.sequence + 1  # names are never reused


def test_a_retired_file_stays_until_the_queries_begun_before_have_ended(tmp_path: Path) -> None:
    files = SegmentFiles(tmp_path)
    old, other = written(files, 2), written(files, 2)
    with files.reading():
        files.retire([old.name])
        with files.reading():  # began after the retirement: cannot see the file
            pass
        assert (tmp_path / old.name).exists()
    assert not (tmp_path / old.name).exists()
    files.retire([other.name])  # no query running: at once
    assert not (tmp_path / other.name).exists()
