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
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import Any

import grpc
from _estate import percentile, report, say
from _fanout import Trial, run_fanout, websocket_fanout

METHOD = "/tagwall.Push/Stream"


# -- the gRPC server (its own process; the WebSocket one is in _fanout.py) ---------------------


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


# -- gRPC clients (in this process) ------------------------------------------------------------


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


def run_transport(name: str, n_clients: int, trials: int, size: int) -> list[float]:
    """Per trial, the time until every client had the message."""
    if name == "websocket":
        arrivals = websocket_fanout(n_clients, trials, size)
    else:
        arrivals = run_fanout(
            _grpc_server,
            lambda port: f"127.0.0.1:{port}",
            grpc_client,
            grpc_trigger,
            n_clients,
            trials,
            size,
        )
    return [max(times) for times in arrivals]


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
