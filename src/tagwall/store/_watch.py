"""Turning ``changes_since`` into blocking and asyncio watch streams.

Why this exists: a watcher must wake at once for a commit made through the same store object
(a condition / asyncio event, no busy loop) and still notice commits made by another process
on the same file, which can only be seen by looking (a read every ``poll_interval_s``).

Lost-wakeup rule: a watcher reads ``Notifier.generation`` *before* it reads events, then
waits only while the generation is unchanged.  A writer bumps the generation *after* its
commit is durable.  So a commit is either in the read, or it moved the generation and the
wait returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from ..errors import StoreError
from ._base import Event

__all__ = ["Notifier", "awatch_events", "watch_events"]


class Notifier:
    """Wakes this process's watchers after each commit.  Any thread may call any method."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # Invariant: only notify() changes _generation, under _cond, after a commit.
        self._generation = 0
        # Async waiters: (loop, event) pairs, each added and removed by its own coroutine.
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed: its coroutine is gone too
                loop.call_soon_threadsafe(event.set)

    def wait(self, seen_generation: int, timeout_s: float) -> None:
        """Return when the generation differs from ``seen_generation`` or after ``timeout_s``."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen_generation, timeout_s)

    async def await_change(self, seen_generation: int, timeout_s: float) -> None:
        """``wait`` for asyncio, without blocking the loop."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._cond:
            if self._generation != seen_generation:
                return
            self._async_waiters.add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                self._async_waiters.discard(waiter)


def watch_events(
    changes_since: Callable[[int], list[Event]],
    notifier: Notifier,
    from_revision: int,
    *,
    closed: Callable[[], bool],
    poll_interval_s: float,
    timeout_s: float | None,
    stop: Callable[[], bool] | None,
) -> Iterator[Event]:
    """Every event after ``from_revision``, then live ones; see ``Store.watch``.

    ``timeout_s`` is an idle timeout: it restarts after each batch of events.
    """
    last = from_revision
    idle_since = time.monotonic()
    while not closed() and not (stop is not None and stop()):
        seen = notifier.generation
        try:
            events = changes_since(last)
        except StoreError:
            if closed():  # closed between the check and the read
                return
            raise
        if events:
            for event in events:
                last = event.revision
                yield event
            idle_since = time.monotonic()
            continue
        wait_s = poll_interval_s
        if timeout_s is not None:
            left_s = timeout_s - (time.monotonic() - idle_since)
            if left_s <= 0:
                return
            wait_s = min(wait_s, left_s)
        notifier.wait(seen, wait_s)


async def awatch_events(
    changes_since: Callable[[int], list[Event]],
    notifier: Notifier,
    from_revision: int,
    *,
    closed: Callable[[], bool],
    poll_interval_s: float,
    timeout_s: float | None,
) -> AsyncIterator[Event]:
    """``watch_events`` for asyncio.  Reads run in a worker thread: a writer holding the
    store's lock (e.g. a slow ``check``) must not block the event loop."""
    loop = asyncio.get_running_loop()
    last = from_revision
    idle_since = loop.time()
    while not closed():
        seen = notifier.generation
        try:
            events = await asyncio.to_thread(changes_since, last)
        except StoreError:
            if closed():
                return
            raise
        if events:
            for event in events:
                last = event.revision
                yield event
            idle_since = loop.time()
            continue
        wait_s = poll_interval_s
        if timeout_s is not None:
            left_s = timeout_s - (loop.time() - idle_since)
            if left_s <= 0:
                return
            wait_s = min(wait_s, left_s)
        await notifier.await_change(seen, wait_s)
