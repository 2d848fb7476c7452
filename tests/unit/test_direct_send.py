"""A chunk written from the producer's callback (rpc/direct_send.py) is the message the send loop
would have sent, in order with the ones it sends, and only when grpclib would not have waited.

A real grpclib server (the bridge's BridgeServer) and client on loopback, both on the test's loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpclib
import grpclib.const
import trio
import trio.lowlevel
from grpclib.client import Channel
from grpclib.config import Configuration
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import AudioChunk
from bridge.cloud_queue import CloudAudioQueue
from bridge.rpc import direct_send
from bridge.rpc.server import BridgeServer
from bridge.rpc.stream_link import GrpcCloudLink
from bridge.session.stream import StreamCounters

PATH = "/test.DirectSend/Stream"
CLIENT_WINDOW_BYTES = 64 * 1024
"""What the client lets the server send before it reads (HTTP/2's minimum), per call and in all."""


def pcm(n: int) -> bytes:
    return bytes([n % 256]) * 3200


@dataclass
class Call:
    """The server's end of one call: the bridge's queue and send loop."""

    queue: CloudAudioQueue = field(default_factory=lambda: CloudAudioQueue(max_bytes=1 << 20))
    counters: StreamCounters = field(default_factory=StreamCounters)
    link: GrpcCloudLink | None = None
    opened: trio.Event = field(default_factory=trio.Event)


class Service:
    def __init__(self, call: Call) -> None:
        self.call = call

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        kind = grpclib.const.Cardinality.STREAM_STREAM
        return {PATH: grpclib.const.Handler(self._serve, kind, AudioChunk, AudioChunk)}

    async def _serve(self, stream: Any) -> None:
        first = await stream.recv_message()
        self.call.link = GrpcCloudLink(stream, first, out_rate=48000)
        self.call.opened.set()
        await self.call.link.send_all(self.call.queue, self.call.counters)


@asynccontextmanager
async def served_call() -> AsyncIterator[tuple[Call, Any]]:
    """A call open between a BridgeServer and a grpclib client; yields its server side and the
    client's stream."""
    call = Call()
    server = BridgeServer([Service(call)], max_streams_per_connection=10, max_message_bytes=1 << 20)
    await aio_as_trio(server.start)("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    windows = Configuration(
        http2_stream_window_size=CLIENT_WINDOW_BYTES, http2_connection_window_size=CLIENT_WINDOW_BYTES
    )
    channel = Channel("127.0.0.1", port, config=windows)
    try:
        request = channel.request(PATH, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk)
        client = await aio_as_trio(request.__aenter__)()
        await aio_as_trio(client.send_message)(AudioChunk(user_id="user-1"))
        with trio.fail_after(5):
            await call.opened.wait()
        yield call, client
        await aio_as_trio(client.cancel)()
    finally:
        call.queue.close()
        channel.close()
        server.close()
        await aio_as_trio(server.wait_closed)()


async def read(client: Any, count: int) -> list[AudioChunk]:
    with trio.fail_after(5):
        return [await aio_as_trio(client.recv_message)() for _ in range(count)]


def expected(n: int) -> AudioChunk:
    return AudioChunk(pcm_data=pcm(n), sample_rate=16000, channels=1, timestamp_ms=1000 + n, user_id="user-1")


async def answered_once(call: Call, client: Any) -> Any:
    """The call's first reply sent and read (it carries the headers); the server's grpclib stream."""
    assert call.link is not None
    call.queue.put_nowait(pcm(0), 1000)
    assert await read(client, 1) == [expected(0)]
    return call.link._stream


def test_this_grpclib_is_the_one_the_shortcut_was_written_for() -> None:
    # An upgrade must look at direct_send.py again: its private state may have moved.
    assert direct_send.supported(), f"grpclib {grpclib.__version__}, not {direct_send.PATCHED_VERSION}"


async def test_a_chunk_that_finds_the_send_loop_parked_is_written_at_once_in_order(aio_loop: object) -> None:
    async with served_call() as (call, client):
        queue, link = call.queue, call.link
        assert link is not None
        await answered_once(call, client)  # the call's first reply carries its headers: the send loop's
        assert link.sent_directly == 0
        for n in range(1, 4):  # one at a time, the loop parked before each
            await trio.sleep(0.01)
            queue.put_nowait(pcm(n), 1000 + n)
            assert queue.depth == 0 and link.sent_directly == n  # written inside put_nowait
        for n in range(4, 10):  # a burst in one callback: the loop stays parked, so all of it
            queue.put_nowait(pcm(n), 1000 + n)
        assert await read(client, 9) == [expected(n) for n in range(1, 10)]
        assert link.sent_directly == 9 and queue.taken_at_once == 9 and queue.enqueued == 10
        assert call.counters.chunks_to_cloud == 10 and call.counters.bytes_to_cloud == 10 * 3200


async def test_a_full_flow_control_window_sends_the_rest_through_the_loop_and_loses_nothing(
    aio_loop: object,
) -> None:
    async with served_call() as (call, client):
        queue, link = call.queue, call.link
        assert link is not None
        await answered_once(call, client)
        # The client reads nothing now: its window (64 KiB) fills after ~20 chunks, and the next
        # ones must wait in the queue and the send loop, as without the shortcut.
        total = 2 * CLIENT_WINDOW_BYTES // 3200
        for n in range(1, total):
            queue.put_nowait(pcm(n), 1000 + n)
            await trio.lowlevel.checkpoint()
        await trio.sleep(0.1)
        assert 0 < link.sent_directly < total - 1
        assert await read(client, total - 1) == [expected(n) for n in range(1, total)]
        assert call.counters.chunks_to_cloud == total and queue.dropped_chunks == 0


async def test_a_call_that_has_ended_is_never_written_to_directly(aio_loop: object) -> None:
    async with served_call() as (call, client):
        stream = await answered_once(call, client)
        await aio_as_trio(stream.send_trailing_metadata)()
        sender = direct_send.DirectSender(stream)
        assert not sender.try_send(b"x")  # grpclib would refuse too: the call has sent its trailers
        assert sender.sent == 0


async def test_a_transport_that_asked_writers_to_wait_is_not_written_to(aio_loop: object) -> None:
    async with served_call() as (call, client):
        stream = await answered_once(call, client)
        stream._stream.connection.pause_writing()  # asyncio's high-water mark: grpclib's writers wait
        sender = direct_send.DirectSender(stream)
        assert not sender.try_send(b"x")
        stream._stream.connection.resume_writing()
        assert sender.try_send(bytes(AudioChunk(user_id="user-1", timestamp_ms=7)))
        assert await read(client, 1) == [AudioChunk(user_id="user-1", timestamp_ms=7)]
