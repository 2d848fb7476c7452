"""The room -> cloud queue: bounded by bytes, drops the oldest, never accepts after close."""

from __future__ import annotations

import pytest
import trio
from trio_asyncio import aio_as_trio

from bridge.cloud_queue import CloudAudioQueue, QueueClosed, QueuedChunk


def chunk(n: int, size: int = 100) -> bytes:
    return bytes([n]) * size


def test_overflow_drops_the_oldest_chunks_and_counts_them() -> None:
    queue = CloudAudioQueue(max_bytes=300)
    for n in range(5):
        queue.put_nowait(chunk(n), timestamp_ms=n)
    assert queue.depth == 3 and queue.queued_bytes == 300
    assert queue.dropped_chunks == 2 and queue.dropped_bytes == 200
    assert queue.enqueued == 5


def test_a_burst_keeps_its_extra_room_until_the_consumer_takes_it() -> None:
    queue = CloudAudioQueue(max_bytes=300)
    for n in range(5):  # 500 bytes released at once, with room made for all of them
        queue.put_nowait(chunk(n), timestamp_ms=n, extra_bytes=500)
    assert queue.queued_bytes == 500 and queue.dropped_chunks == 0
    # Live packets right behind the burst, before the send loop has run (a CI run lost 29 of
    # 48 held packets this way): they get max_bytes beside the burst, and the oldest go beyond it.
    for n in range(5, 8):
        queue.put_nowait(chunk(n), timestamp_ms=n)
    assert queue.queued_bytes == 800 and queue.dropped_chunks == 0
    queue.put_nowait(chunk(8), timestamp_ms=8)
    assert queue.queued_bytes == 800 and queue.dropped_chunks == 1


async def test_once_the_consumer_took_the_burst_the_bound_is_max_bytes_again(aio_loop: object) -> None:
    queue = CloudAudioQueue(max_bytes=300)
    for n in range(5):
        queue.put_nowait(chunk(n), timestamp_ms=n, extra_bytes=500)
    taken = await aio_as_trio(queue.get_batch)()
    assert len(taken) == 5
    for n in range(5, 10):
        queue.put_nowait(chunk(n), timestamp_ms=n)
    assert queue.queued_bytes == 300 and queue.dropped_chunks == 2


def test_a_chunk_larger_than_the_queue_keeps_its_newest_whole_samples() -> None:
    queue = CloudAudioQueue(max_bytes=10)
    queue.put_nowait(bytes(range(16)), timestamp_ms=0)
    assert queue.queued_bytes == 10 and queue.dropped_bytes == 6
    queue.put_nowait(bytes(range(13)), timestamp_ms=0)  # 3 bytes over: drop 4, never exceed the bound
    assert queue.queued_bytes == 9 and queue.dropped_bytes == 6 + 10 + 4


def test_after_close_puts_are_ignored_and_counted_never_raised() -> None:
    queue = CloudAudioQueue(max_bytes=300)
    queue.put_nowait(chunk(1), 0)
    queue.close()
    queue.put_nowait(chunk(2), 1)  # a late LiveKit callback
    assert queue.depth == 0 and queue.rejected_after_close == 1


async def test_get_batch_takes_everything_queued_and_close_wakes_the_consumer(aio_loop: object) -> None:
    queue = CloudAudioQueue(max_bytes=1000)
    results: list[object] = []

    async def consume() -> None:
        try:
            while True:
                results.append([c.pcm[0] for c in await queue.get_batch()])
        except QueueClosed:
            results.append("closed")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(consume))
            await trio.sleep(0.01)
            queue.put_nowait(chunk(1), 0)
            queue.put_nowait(chunk(2), 0)
            await trio.sleep(0.01)
            queue.put_nowait(chunk(3), 0)
            await trio.sleep(0.01)
            queue.close()
    assert results == [[1, 2], [3], "closed"]


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CloudAudioQueue(max_bytes=0)


async def test_a_parked_consumer_may_take_a_chunk_at_once_but_nothing_overtakes_a_queued_one(
    aio_loop: object,
) -> None:
    queue = CloudAudioQueue(max_bytes=1000)
    taken: list[int] = []
    accept = True

    def take_now(queued: QueuedChunk) -> bool:
        if accept:
            taken.append(queued.timestamp_ms)
        return accept

    async with trio.open_nursery() as nursery:
        batches: list[list[int]] = []

        async def consume() -> None:
            while True:
                batch = await aio_as_trio(queue.get_batch)(take_now)
                batches.append([c.timestamp_ms for c in batch])

        nursery.start_soon(consume)
        await trio.sleep(0.01)  # parked
        queue.put_nowait(chunk(1), 1)
        queue.put_nowait(chunk(2), 2)
        assert taken == [1, 2] and queue.depth == 0 and queue.taken_at_once == 2 and queue.enqueued == 2
        accept = False  # declined: queued, and the consumer woken
        queue.put_nowait(chunk(3), 3)
        accept = True
        queue.put_nowait(chunk(4), 4)  # the consumer is woken but has not run: 4 must queue behind 3
        assert taken == [1, 2] and queue.depth == 2
        await trio.sleep(0.01)
        assert batches == [[3, 4]]
        queue.put_notice("draining", 5)  # a notice wakes the consumer too; the next chunk queues
        queue.put_nowait(chunk(6), 6)
        await trio.sleep(0.01)
        assert batches[-1] == [5, 6] and taken == [1, 2]
        nursery.cancel_scope.cancel()
