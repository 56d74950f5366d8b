"""Transport benchmark: push one update to N agents over WebSocket and over gRPC streams.

The measurement behind the control protocol's choice of transport (docs/control.md). For
each transport, a server process holds one long-lived stream per client. The clients run in
this process, each on its own connection. On a trigger the server writes one message of
``--size`` bytes to every stream, and each client answers with a 3-byte ack. A trial is the
time from sending the trigger until every client has received the message. Figures: p50 and
p99 over trials, for each transport and each client count, and the ratio gRPC / WebSocket.

WebSocket uses the ``websockets`` library that agents use, served by the same kind of
asyncio process as the controller. gRPC uses ``grpcio``'s asyncio API with a bidirectional
stream method. Its messages are raw bytes, with no protobuf encoding, so only the transport
is compared. grpcio is an extra of the benchmarks (``pip install -e '.[bench]'``); tagwall
itself does not use it.

Usage: python bench/transport.py [--json] [--clients 100,500] [--trials 30] [--size 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import Any

import grpc
from _estate import report, say
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

METHOD = "/tagwall.Push/Stream"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- servers (each in its own process) ---------------------------------------------------------


def _websocket_server(port: int, size: int, ready: Event) -> None:
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


def _grpc_server(port: int, size: int, ready: Event) -> None:
    async def main() -> None:
        clients: set[Any] = set()
        payload = b"x" * size

        async def stream(_requests: Any, context: Any) -> None:
            first = await context.read()
            if first != b"trigger":
                clients.add(context)
                try:
                    while await context.read() is not grpc.aio.EOF:
                        pass  # acks
                finally:
                    clients.discard(context)
                return
            while await context.read() is not grpc.aio.EOF:
                await asyncio.gather(*(c.write(payload) for c in list(clients)))

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "tagwall.Push", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


# -- clients (in this process) -----------------------------------------------------------------


class Trial:
    """Arrival times of the current trial's message."""

    def __init__(self) -> None:
        self.received: list[float] = []


Client = Callable[[str, Trial, asyncio.Event], Awaitable[None]]
Trigger = Callable[[str], AsyncIterator[Callable[[], Awaitable[None]]]]


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


async def grpc_client(target: str, trial: Trial, connected: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(METHOD)()
        await call.write(b"hello")
        connected.set()
        while (message := await call.read()) is not grpc.aio.EOF:
            assert message
            trial.received.append(time.perf_counter())
            await call.write(b"ack")


async def grpc_trigger(target: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(METHOD)()
        await call.write(b"trigger")

        async def go() -> None:
            await call.write(b"go")

        yield go


async def measure(
    address: str, client: Client, trigger: Trigger, n_clients: int, trials: int
) -> list[float]:
    trial = Trial()
    flags = [asyncio.Event() for _ in range(n_clients)]
    tasks = [asyncio.create_task(client(address, trial, flag)) for flag in flags]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
        await asyncio.sleep(0.5)  # every stream registered on the server
        times = []
        async for go in trigger(address):
            for _ in range(trials):
                trial.received.clear()
                start = time.perf_counter()
                await go()
                while len(trial.received) < n_clients:
                    if time.perf_counter() - start > 30:
                        raise SystemExit("not every client received the message within 30 s")
                    await asyncio.sleep(0.0005)
                times.append(max(trial.received) - start)
                await asyncio.sleep(0.02)
        return times
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_transport(name: str, n_clients: int, trials: int, size: int) -> list[float]:
    port = free_port()
    ready = multiprocessing.Event()
    target = _websocket_server if name == "websocket" else _grpc_server
    server = multiprocessing.Process(target=target, args=(port, size, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit(f"the {name} server did not start")
        if name == "websocket":
            return asyncio.run(
                measure(f"ws://127.0.0.1:{port}", websocket_client, websocket_trigger,
                        n_clients, trials)
            )  # fmt: skip
        return asyncio.run(
            measure(f"127.0.0.1:{port}", grpc_client, grpc_trigger, n_clients, trials)
        )
    finally:
        server.terminate()
        server.join(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--clients", default="100,500", help="comma-separated client counts")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--size", type=int, default=1024, help="bytes per message")
    args = ap.parse_args(argv)

    result: dict[str, Any] = {"message_bytes": args.size, "trials": args.trials}
    for n in (int(x) for x in args.clients.split(",")):
        for name in ("websocket", "grpc"):
            say(f"{name}: {n} clients, {args.trials} trials …")
            times = run_transport(name, n, args.trials, args.size)
            result[f"{name}_{n}_p50_s"] = round(percentile(times, 0.5), 5)
            result[f"{name}_{n}_p99_s"] = round(percentile(times, 0.99), 5)
            result[f"{name}_{n}_mean_s"] = round(statistics.fmean(times), 5)
        result[f"grpc_to_websocket_p50_ratio_{n}"] = round(
            result[f"grpc_{n}_p50_s"] / result[f"websocket_{n}_p50_s"], 2
        )
    report(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
