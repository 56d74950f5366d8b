"""A bare WebSocket fan-out, the transport floor two benchmarks compare against.

A server process holds one stream per client; on each trigger it writes one message to
every stream.  ``measure`` drives clients of any transport through the same trials: a trial
is the time from sending the trigger until each client received the message.  The
WebSocket server and clients here use the ``websockets`` library that agents use;
bench/transport.py adds gRPC ones.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import Any

from _estate import free_port
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


class Trial:
    """Arrival times of the current trial's message, one per client."""

    def __init__(self) -> None:
        self.received: list[float] = []


# A client: connects to the address, counts arrivals into the trial, sets the event once its
# stream is registered.  A trigger: opens its own stream and yields "send the next message".
Client = Callable[[str, Trial, asyncio.Event], Awaitable[None]]
Trigger = Callable[[str], AsyncIterator[Callable[[], Awaitable[None]]]]


def websocket_server(port: int, size: int, ready: Event) -> None:
    """Run until terminated: streams that say "trigger" first send a message of ``size``
    bytes to every other stream on each message they send."""

    async def main() -> None:
        clients: set[Any] = set()
        payload = b"x" * size

        async def handler(ws: Any) -> None:
            if (await ws.recv()) != "trigger":
                clients.add(ws)
                try:
                    async for _ack in ws:
                        pass
                finally:
                    clients.discard(ws)
                return
            async for _go in ws:
                await asyncio.gather(*(c.send(payload) for c in list(clients)))

        async with serve(handler, "127.0.0.1", port, max_size=None):
            ready.set()
            await asyncio.Future()

    asyncio.run(main())


async def websocket_client(url: str, trial: Trial, connected: asyncio.Event) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send("hello")
        connected.set()
        async for _message in ws:
            trial.received.append(time.perf_counter())
            await ws.send("ack")


async def websocket_trigger(url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    async with connect(url) as ws:
        await ws.send("trigger")

        async def go() -> None:
            await ws.send("go")

        yield go


async def measure(
    address: str, client: Client, trigger: Trigger, n_clients: int, trials: int
) -> list[list[float]]:
    """Per trial, each client's time from the trigger to the message's arrival."""
    trial = Trial()
    flags = [asyncio.Event() for _ in range(n_clients)]
    tasks = [asyncio.create_task(client(address, trial, flag)) for flag in flags]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
        await asyncio.sleep(0.5)  # the last hellos reach the server
        out = []
        async for go in trigger(address):
            for _ in range(trials):
                trial.received.clear()
                start = time.perf_counter()
                await go()
                while len(trial.received) < n_clients:
                    if time.perf_counter() - start > 30:
                        raise SystemExit("not every client received the message within 30 s")
                    await asyncio.sleep(0.0005)
                out.append([t - start for t in trial.received])
                await asyncio.sleep(0.02)
        return out
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_fanout(
    server: Callable[[int, int, Event], None],
    address: Callable[[int], str],
    client: Client,
    trigger: Trigger,
    n_clients: int,
    trials: int,
    size: int,
) -> list[list[float]]:
    """``measure`` against ``server`` started in a process of its own on a free port."""
    port = free_port()
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=server, args=(port, size, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the fan-out server did not start")
        return asyncio.run(measure(address(port), client, trigger, n_clients, trials))
    finally:
        process.terminate()
        process.join(10)


def websocket_fanout(n_clients: int, trials: int, size: int) -> list[list[float]]:
    return run_fanout(
        websocket_server,
        lambda port: f"ws://127.0.0.1:{port}",
        websocket_client,
        websocket_trigger,
        n_clients,
        trials,
        size,
    )
