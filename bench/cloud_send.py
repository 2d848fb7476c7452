"""What sending a mic chunk to the cloud costs the bridge's loop: the send loop against a direct write.

    python -m bench.cloud_send                    # 20 streams, 200 chunks/s, 8 s windows, 3 rounds
    python -m bench.cloud_send --streams 40 --rate 400

The bridge's own pieces, as it runs them: ``BridgeServer`` (grpclib) on ``trio_asyncio.open_loop()``
with ``aio_batching``, one ``CloudAudioQueue`` and ``GrpcCloudLink.send_all`` per StreamAudio-like
call. A thread stands in for the SDK's tokio thread: it puts 100 ms chunks (3200 bytes) into the
queues round robin, evenly spaced, each with ``loop.call_soon_threadsafe`` as a data packet arrives.
A cloud client in another process (plain asyncio, pinned to another core) holds the calls on one
connection and counts what it reads. Per round, one window each way in turn (the order alternates):

- ``send loop``: ``GrpcCloudLink(direct_send=False)``: every chunk wakes the call's send loop, which
  sends it through grpclib's ``send_message``;
- ``direct``: the bridge's default: a chunk that finds the send loop parked is written from the
  packet's callback (rpc/direct_send.py).

The figure is the loop thread's CPU over the window, less its idle CPU, per chunk the client read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import grpclib.const
import trio
import trio_asyncio
from grpclib.client import Channel

from bench.lib import call_evenly, run_on_asyncio
from bridge import aio_batching
from bridge._gen.mentra.livekit.bridge import AudioChunk
from bridge.cloud_queue import CloudAudioQueue
from bridge.rpc.server import BridgeServer
from bridge.rpc.stream_link import GrpcCloudLink
from bridge.session.stream import StreamCounters

PATH = "/bench.CloudSend/Stream"
CHUNK = bytes(3200)


class _Calls:
    """The server side: each call runs the bridge's send loop on a queue of its own."""

    def __init__(self) -> None:
        self.queues: list[CloudAudioQueue] = []
        self.links: list[GrpcCloudLink] = []
        self.direct = True
        self.all_open = trio.Event()
        self.expected = 0

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            PATH: grpclib.const.Handler(
                self._serve, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
            )
        }

    async def _serve(self, stream: Any) -> None:
        first = await stream.recv_message()
        link = GrpcCloudLink(stream, first, out_rate=48000, direct_send=self.direct)
        queue = CloudAudioQueue(max_bytes=64000)
        self.queues.append(queue)
        self.links.append(link)
        if len(self.queues) == self.expected:
            self.all_open.set()
        await link.send_all(queue, StreamCounters())


def _thread_cpu() -> float:
    return time.thread_time()


def _produce(loop: Any, queues: list[CloudAudioQueue], rate: float, seconds: float) -> None:
    def put(queue: CloudAudioQueue) -> None:
        queue.put_nowait(CHUNK, int(time.time() * 1000))

    call_evenly(rate, seconds, lambda i: loop.call_soon_threadsafe(put, queues[i % len(queues)]))


async def _client_counts(client: subprocess.Popen[str]) -> int:
    """Ask the client for how many chunks it has read so far."""
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write("count\n")
    client.stdin.flush()
    line = await trio.to_thread.run_sync(client.stdout.readline)
    return int(json.loads(line)["read"])


async def _window(
    calls: _Calls, loop: Any, client: subprocess.Popen[str], rate: float, seconds: float
) -> tuple[float, int]:
    """The loop thread's CPU seconds over a window, and the chunks the client read in it."""
    before = await _client_counts(client)
    start = _thread_cpu()
    if rate:
        _produce(loop, calls.queues, rate, seconds)
    await trio.sleep(seconds + 0.1)
    cpu = _thread_cpu() - start
    await trio.sleep(0.2)  # the last chunks reach the client
    return cpu, await _client_counts(client) - before


async def _run_mode(args: argparse.Namespace, direct: bool, client_core: int | None) -> dict[str, float]:
    calls = _Calls()
    calls.direct = direct
    calls.expected = args.streams
    async with trio_asyncio.open_loop() as loop:
        server = BridgeServer([calls], max_streams_per_connection=1000, max_message_bytes=4 << 20)
        await trio_asyncio.aio_as_trio(server.start)("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        command = [
            sys.executable,
            "-m",
            "bench.cloud_send",
            "--client",
            str(port),
            "--streams",
            str(args.streams),
        ]
        # Started once the port is known; Popen returns at once, and the window has not begun.
        client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
        try:
            if client_core is not None:
                os.sched_setaffinity(client.pid, {client_core})
            with trio.fail_after(10):
                await calls.all_open.wait()
            await trio.sleep(0.5)
            idle_cpu, _ = await _window(calls, loop, client, 0, args.seconds)
            cpu, read = await _window(calls, loop, client, args.rate, args.seconds)
            sent_directly = sum(link.sent_directly for link in calls.links)
        finally:
            client.kill()
            client.wait()
            server.close()
            await trio_asyncio.aio_as_trio(server.wait_closed)()
    expected = round(args.rate * args.seconds)
    return {
        "us_per_chunk": (cpu - idle_cpu) / max(1, read) * 1e6,
        "read": read,
        "expected": expected,
        "direct_share": sent_directly / max(1, expected),
        "idle_pct": idle_cpu / args.seconds * 100,
    }


async def _client(port: int, streams: int) -> None:
    """The cloud: ``streams`` calls on one connection, reading everything; answers ``count`` on stdin."""
    import asyncio

    channel = Channel("127.0.0.1", port)
    read = 0

    async def one(index: int) -> None:
        nonlocal read
        async with channel.request(
            PATH, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
        ) as call:
            await call.send_message(AudioChunk(user_id=f"user-{index}"))
            while await call.recv_message() is not None:
                read += 1

    async def answer() -> None:
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "count":
                print(json.dumps({"read": read}), flush=True)

    tasks = [asyncio.ensure_future(one(i)) for i in range(streams)]
    await answer()
    for task in tasks:
        task.cancel()
    channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cloud_send", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--streams", type=int, default=20, help="StreamAudio calls (sessions) on one connection"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="chunks per second, all streams together")
    parser.add_argument("--seconds", type=float, default=8.0, help="window per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", choices=["send loop", "direct"], help="run one mode (e.g. under a profiler)"
    )
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        run_on_asyncio(_client(args.client, args.streams))
        return 0
    if not 1 <= args.streams <= 200 or not 1 <= args.rate <= 5000 or not 1 <= args.seconds <= 60:
        parser.error("--streams 1..200, --rate 1..5000, --seconds 1..60")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds 1..10")
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})  # the producer thread shares the core, as the SDK's threads do
    client_core = cores[1] if len(cores) > 1 else None
    aio_batching.install()
    print(
        f"load average before: {os.getloadavg()}; loop and producer on core {cores[0]},"
        f" client on {client_core}"
    )
    print(
        f"{args.streams} streams, {args.rate:.0f} chunks/s,"
        f" {args.seconds:.0f} s windows, {args.rounds} rounds"
    )
    modes = {"send loop": False, "direct": True}
    if args.only:
        modes = {args.only: modes[args.only]}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    for round_index in range(args.rounds):
        order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
        for name in order:
            results[name].append(trio.run(_run_mode, args, modes[name], client_core))
    print(f"{'mode':<10} {'µs per chunk, each round':>34} {'median':>7} {'read/expected':>14} {'direct':>7}")
    for name, rounds in results.items():
        costs = [r["us_per_chunk"] for r in rounds]
        read = min(r["read"] / r["expected"] for r in rounds)
        direct = statistics.median(r["direct_share"] for r in rounds)
        each = ", ".join(f"{c:.1f}" for c in costs)
        print(f"{name:<10} {each:>34} {statistics.median(costs):7.1f} {read:14.3f} {direct:7.0%}")
    if len(results) == 2:
        loop_cost = statistics.median(r["us_per_chunk"] for r in results["send loop"])
        direct_cost = statistics.median(r["us_per_chunk"] for r in results["direct"])
        print(f"direct / send loop: {direct_cost / loop_cost:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
