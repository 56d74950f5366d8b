"""Two processes opening one new store file at the same moment (two controllers started
together on a fresh data directory) both get a working store: converting the file to WAL
waits for the other process instead of failing with "database is locked"."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from tagwall.store import SqliteStore


def _open(path: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait()
    with SqliteStore(path) as store:
        store.revision()


def test_two_processes_open_a_new_store_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for attempt in range(150):  # the race hit about 1 in 30 opens without the retry
        path = str(tmp_path / f"store-{attempt}.db")
        start = context.Event()
        workers = [context.Process(target=_open, args=(path, start)) for _ in range(2)]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(30)
        assert [w.exitcode for w in workers] == [0, 0], f"attempt {attempt}"
