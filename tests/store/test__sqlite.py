"""SqliteStore on real files: revisions, atomic commits, the change feed, drafts, durability.

No test sleeps to wait: threads hand over through events and queues with timeouts.  Stores
that only need in-process wake-ups use a huge ``poll_interval_s``, so a missed notification
shows up as a timeout instead of being hidden by polling.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tagwall.errors import ConflictError, NotFoundError, Problem, StoreError, ValidationError
from tagwall.model import Json
from tagwall.store import (
    Delete,
    DiffEntry,
    Event,
    ObjectKey,
    Put,
    RevisionCompacted,
    RevisionMismatch,
    SqliteStore,
    Store,
    StoreStatistics,
)

WAIT_S = 10.0  # upper bound for every hand-over between threads
NO_POLL_S = 3600.0  # a watcher on such a store can only be woken by a notification


def workload(name: str, project: str | None = "shop", **spec: Json) -> dict[str, Json]:
    meta: dict[str, Json] = {"name": name}
    if project is not None:
        meta["project"] = project
    return {"apiVersion": "tagwall/v1", "kind": "Workload", "metadata": meta, "spec": dict(spec)}


def wkey(name: str, project: str | None = "shop") -> ObjectKey:
    return ObjectKey("Workload", project, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "tagwall.db", poll_interval_s=NO_POLL_S, clock=lambda: 1e9) as s:
        yield s


def put(store: SqliteStore, *bodies: dict[str, Json]) -> int:
    return store.commit([Put(b) for b in bodies]).revision


# --- revisions and commits ------------------------------------------------------------------


def test_each_commit_bumps_the_revision_once_and_noops_do_not(store: SqliteStore) -> None:
    """A batch of many documents is one revision; a batch of only no-ops is none."""
    assert store.revision() == 0
    result = store.commit([Put(workload(f"w{i}", host="h1")) for i in range(5)])
    assert result.revision == 1 and store.revision() == 1
    assert [outcome for _, outcome in result.outcomes] == ["created"] * 5

    result = store.commit([Put(workload("w0", host="h1")), Put(workload("w1", host="h2"))])
    assert result.revision == 2
    assert result.outcomes == ((wkey("w0"), "unchanged"), (wkey("w1"), "configured"))

    # Same content in another key order is unchanged; true is not 1.
    reordered: dict[str, Json] = {
        "spec": {"host": "h1"},
        "metadata": {"project": "shop", "name": "w0"},
    }
    reordered |= {"kind": "Workload", "apiVersion": "tagwall/v1"}
    assert store.commit([Put(reordered)]).outcomes == ((wkey("w0"), "unchanged"),)
    assert store.revision() == 2
    assert store.commit([Put(workload("w0", host="h1", flag=True))]).revision == 3
    assert store.commit([Put(workload("w0", host="h1", flag=1))]).revision == 4

    result = store.commit([Delete(wkey("w2")), Delete(wkey("w3"))])
    assert result.revision == 5
    assert [o for _, o in result.outcomes] == ["deleted", "deleted"]
    assert [e.revision for e in store.changes_since(4)] == [5, 5]


def test_get_and_list_report_revisions_sorted_by_key(store: SqliteStore) -> None:
    ns: dict[str, Json] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    pod: dict[str, Json] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}}
    put(store, workload("b"), workload("a"), workload("g", project=None), ns)
    put(store, workload("a", host="h2"), pod)
    a = store.get(wkey("a"))
    assert a is not None and (a.revision_created, a.revision_modified) == (1, 2)
    assert a.body == workload("a", host="h2")
    assert store.get(wkey("missing")) is None
    assert [o.key for o in store.list()] == [
        ObjectKey("Namespace", None, "shop"),
        ObjectKey("Pod", "default", "web"),
        wkey("g", None),
        wkey("a"),
        wkey("b"),
    ]
    assert [o.key.name for o in store.list("Workload", "shop")] == ["a", "b"]
    assert [o.key.name for o in store.list("Workload", None)] == ["g"]
    assert [o.key.name for o in store.list(project="default")] == ["web"]


def test_failing_check_aborts_everything(store: SqliteStore) -> None:
    """The check sees the would-be state; when it raises, nothing is written or visible."""
    put(store, workload("keep"))
    seen: list[list[Mapping[str, Json]]] = []

    def reject(bodies: list[Mapping[str, Json]]) -> None:
        seen.append(bodies)
        raise ValidationError([Problem("no", kind="Workload", name="new")])

    with pytest.raises(ValidationError):
        store.commit([Put(workload("new")), Delete(wkey("keep"))], check=reject)
    assert seen == [[workload("new")]]
    assert store.revision() == 1
    assert [o.key.name for o in store.list()] == ["keep"]
    assert store.changes_since(1) == []

    with pytest.raises(NotFoundError):  # a missing delete late in the batch undoes the rest
        store.commit([Put(workload("new")), Delete(wkey("ghost"))])
    assert store.revision() == 1 and store.get(wkey("new")) is None

    accepted: list[int] = []
    result = store.commit([Put(workload("new"))], check=lambda bodies: accepted.append(len(bodies)))
    assert accepted == [2] and result.revision == 2


def test_a_check_calling_back_into_the_store_fails_cleanly(store: SqliteStore) -> None:
    swallowed: list[StoreError] = []

    def nosy(bodies: list[Mapping[str, Json]]) -> None:
        try:
            store.get(wkey("a"))
        except StoreError as exc:  # even when swallowed, the outer commit stays atomic
            swallowed.append(exc)

    assert store.commit([Put(workload("a")), Put(workload("b"))], check=nosy).revision == 1
    assert len(swallowed) == 1 and len(store.list()) == 2
    assert [e.revision for e in store.changes_since(0)] == [1, 1]


def test_sqlite_store_implements_the_protocol(tmp_path: Path) -> None:
    """Checked by mypy: the assignment fails type checking if a method drifts."""
    store: Store = SqliteStore(tmp_path / "p.db")
    assert store.statistics() == StoreStatistics(0, 0, 0, 0, 0)
    store.close()
    store.close()  # idempotent


def test_expect_revision_is_optimistic_concurrency(store: SqliteStore) -> None:
    put(store, workload("a"))
    with pytest.raises(RevisionMismatch) as info:
        store.commit([Put(workload("b"))], expect_revision=0)
    assert isinstance(info.value, ConflictError)
    assert (info.value.expected_revision, info.value.revision) == (0, 1)
    assert store.revision() == 1
    assert store.commit([Put(workload("b"))], expect_revision=1).revision == 2


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    """Threads on one store and on a second store object all land, one revision each."""
    with SqliteStore(tmp_path / "t.db") as one, SqliteStore(tmp_path / "t.db") as two:

        def write(s: SqliteStore, prefix: str) -> None:
            for i in range(10):
                s.commit([Put(workload(f"{prefix}{i}"))])

        threads = [
            threading.Thread(target=write, args=(s, p))
            for s, p in [(one, "a"), (one, "b"), (two, "c"), (two, "d")]
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
        assert one.revision() == two.revision() == 40
        assert len(two.list()) == 40
        assert [e.revision for e in one.changes_since(0)] == list(range(1, 41))


# --- change feed ----------------------------------------------------------------------------


def test_watch_replays_missed_events_then_live_ones(store: SqliteStore) -> None:
    put(store, workload("a"))  # 1
    put(store, workload("b"), workload("c"))  # 2
    store.commit([Delete(wkey("a"))])  # 3
    go = threading.Event()

    def writer() -> None:
        assert go.wait(WAIT_S)
        put(store, workload("d"))  # 4, while the watcher waits

    thread = threading.Thread(target=writer)
    thread.start()
    got: list[Event] = []
    for event in store.watch(1, timeout_s=WAIT_S):
        got.append(event)
        if len(got) == 3:
            go.set()
        if len(got) == 4:
            break
    thread.join(WAIT_S)
    assert [(e.revision, e.key.name, e.type) for e in got] == [
        (2, "b", "put"),
        (2, "c", "put"),
        (3, "a", "delete"),
        (4, "d", "put"),
    ]
    assert got[0].body == workload("b") and got[2].body is None


def test_watch_ends_on_idle_timeout_stop_and_close(store: SqliteStore) -> None:
    put(store, workload("a"))
    assert list(store.watch(0, timeout_s=0.01)) == list(store.changes_since(0))
    assert list(store.watch(0, stop=lambda: True)) == []
    done: queue.Queue[list[Event]] = queue.Queue()
    thread = threading.Thread(target=lambda: done.put(list(store.watch(1))))
    thread.start()
    store.close()  # wakes the watcher even though the store never polls
    assert done.get(timeout=WAIT_S) == []
    with pytest.raises(StoreError):
        store.revision()


def test_awatch_sees_a_write_from_another_thread(store: SqliteStore) -> None:
    put(store, workload("a"))

    async def main() -> list[Event]:
        got: list[Event] = []
        async for event in store.awatch(0, timeout_s=WAIT_S):
            got.append(event)
            if len(got) == 1:
                threading.Thread(target=put, args=(store, workload("b"))).start()
            else:
                break
        return got

    got = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert [(e.revision, e.key.name) for e in got] == [(1, "a"), (2, "b")]


def test_second_store_on_the_file_sees_writes_and_its_watcher_wakes(tmp_path: Path) -> None:
    """Another store object stands in for another process: it learns by polling the file."""
    path = tmp_path / "shared.db"
    with SqliteStore(path) as writer_store, SqliteStore(path, poll_interval_s=0.01) as reader:
        put(writer_store, workload("a"))
        assert reader.revision() == 1 and reader.get(wkey("a")) is not None
        got: list[Event] = []
        for event in reader.watch(0, timeout_s=WAIT_S):
            got.append(event)
            if len(got) == 1:
                threading.Thread(target=put, args=(writer_store, workload("b"))).start()
            else:
                break
        assert [(e.revision, e.key.name) for e in got] == [(1, "a"), (2, "b")]

        async def first_async_event() -> Event:
            async for event in reader.awatch(2, timeout_s=WAIT_S):
                return event
            raise AssertionError("awatch ended")

        threading.Thread(target=put, args=(writer_store, workload("c"))).start()
        event = asyncio.run(asyncio.wait_for(first_async_event(), WAIT_S))
        assert (event.revision, event.key.name) == (3, "c")


def test_compaction_makes_old_revisions_an_error(store: SqliteStore) -> None:
    for name in "abcde":
        put(store, workload(name))
    store.compact(3)  # drops revisions 1 and 2
    assert [e.revision for e in store.changes_since(2)] == [3, 4, 5]
    with pytest.raises(RevisionCompacted) as info:
        store.changes_since(1)
    assert isinstance(info.value, ConflictError)
    assert (info.value.revision, info.value.compacted_revision) == (1, 2)
    with pytest.raises(RevisionCompacted):
        next(store.watch(0, timeout_s=WAIT_S))
    store.compact(2)  # lower than before: no-op
    assert store.statistics() == StoreStatistics(5, 5, 3, 0, 2)
    with pytest.raises(ValueError):
        store.compact(7)
    store.compact(6)
    assert store.changes_since(5) == [] and store.statistics().events == 0


# --- drafts ---------------------------------------------------------------------------------


def test_drafts_stage_diff_commit_and_discard(store: SqliteStore) -> None:
    put(store, workload("same"), workload("upd"), workload("gone"))
    draft = store.create_draft("d1")
    assert (draft.base_revision, draft.changes, draft.created.timestamp()) == (1, (), 1e9)
    with pytest.raises(ConflictError):
        store.create_draft("d1")
    store.stage("d1", [Put(workload("new", host="x")), Put(workload("upd", host="old"))])
    staged = store.stage(
        "d1",
        [Put(workload("same")), Put(workload("upd", host="new")), Delete(wkey("gone"))],
    )
    assert [c.key.name for c in staged.changes] == ["new", "same", "upd", "gone"]
    assert store.revision() == 1  # drafts never move the revision
    assert store.draft_diff("d1") == [
        DiffEntry(wkey("gone"), "delete", workload("gone"), None),
        DiffEntry(wkey("new"), "create", None, workload("new", host="x")),
        DiffEntry(wkey("same"), "unchanged", workload("same"), workload("same")),
        DiffEntry(wkey("upd"), "update", workload("upd"), workload("upd", host="new")),
    ]
    store.create_draft("d2")
    assert [d.name for d in store.list_drafts()] == ["d1", "d2"]

    def reject(bodies: list[Mapping[str, Json]]) -> None:
        raise ValidationError([Problem("no")])

    with pytest.raises(ValidationError):  # a failing check keeps the draft and the state
        store.commit_draft("d1", check=reject)
    assert store.get_draft("d1") == staged and store.revision() == 1

    result = store.commit_draft("d1")
    assert result.revision == 2
    assert dict(result.outcomes) == {
        wkey("new"): "created",
        wkey("same"): "unchanged",
        wkey("upd"): "configured",
        wkey("gone"): "deleted",
    }
    assert [o.key.name for o in store.list()] == ["new", "same", "upd"]
    with pytest.raises(NotFoundError):
        store.get_draft("d1")
    store.discard("d2")
    assert store.list_drafts() == []
    for call in (store.discard, store.draft_diff, store.commit_draft):
        with pytest.raises(NotFoundError):
            call("d2")
    with pytest.raises(NotFoundError):
        store.stage("d2", [])
    with pytest.raises(ValidationError):
        store.create_draft("")


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    with SqliteStore(path, clock=lambda: 5.0) as first:
        put(first, workload("a"), workload("b"))
        first.commit([Delete(wkey("a"))])
        first.create_draft("later")
        first.stage("later", [Put(workload("c"))])
        first.compact(2)
        before = (first.list(), first.changes_since(1), first.list_drafts(), first.statistics())
    with SqliteStore(path) as second:
        after = (second.list(), second.changes_since(1), second.list_drafts(), second.statistics())
        assert after == before
        assert second.commit([Put(workload("c"))]).revision == 3


def test_rejects_documents_without_a_key_and_newer_schemas(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Put({"kind": "Workload", "metadata": {}})
    with pytest.raises(ValidationError):
        Put({"kind": "Workload", "metadata": {"name": "x"}, "spec": {"n": float("nan")}})
    path = tmp_path / "future.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


def test_a_real_second_process_wakes_the_watcher(tmp_path: Path) -> None:
    """A commit from another interpreter reaches a waiting watcher by polling the file."""
    path = tmp_path / "proc.db"
    writer = (
        "import sys\n"
        "from tagwall.store import Put, SqliteStore\n"
        "with SqliteStore(sys.argv[1]) as s:\n"
        "    s.commit([Put({'kind': 'Workload', 'metadata': {'name': 'remote'}})])\n"
    )
    with SqliteStore(path, poll_interval_s=0.01) as store:
        put(store, workload("local"))
        got: list[Event] = []
        proc: subprocess.Popen[bytes] | None = None
        for event in store.watch(0, timeout_s=WAIT_S * 3):
            got.append(event)
            if proc is None:
                proc = subprocess.Popen([sys.executable, "-c", writer, str(path)])
            else:
                break
        assert proc is not None and proc.wait(WAIT_S) == 0
        assert [(e.revision, e.key.name) for e in got] == [(1, "local"), (2, "remote")]
