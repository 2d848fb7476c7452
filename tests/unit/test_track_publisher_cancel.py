"""A track publisher cancelled just as its publish completes still ends (it hung a session once).

On Python 3.11 ``asyncio.wait_for`` returns the result and swallows the cancel when the awaited
call completes in the same loop iteration as the cancel; the publisher then waited for the session
to end, forever, and so did the session's teardown (the hostile-fetch test's CI hang).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import trio
import trio_asyncio

from bridge.livekit_io.outbound import TrackPublisher


class _Room:
    """Just what TrackPublisher uses of a room: a publish that completes when the test says."""

    def __init__(self, published: asyncio.Future[Any]) -> None:
        self.calls = 0

        async def publish_track(track: Any, options: Any) -> Any:
            self.calls += 1
            return await published

        self.room = SimpleNamespace(local_participant=SimpleNamespace(publish_track=publish_track))


async def _cancel_as_the_publish_completes() -> tuple[bool, int]:
    loop = asyncio.get_running_loop()
    published: asyncio.Future[Any] = loop.create_future()
    room = _Room(published)
    publisher = TrackPublisher(room, 0, sample_rate=48000, queue_ms=200)  # type: ignore[arg-type]
    task = loop.create_task(publisher.run())
    while not room.calls:
        await asyncio.sleep(0)
    published.set_result(SimpleNamespace(sid="TR_test"))  # the publish completes...
    task.cancel()  # ...in the loop iteration the session's cancel arrives
    done, _ = await asyncio.wait({task}, timeout=2.0)
    if not done:
        task.cancel()  # unstick it, so the test ends either way
        await asyncio.wait({task}, timeout=2.0)
    return task in done and task.cancelled(), room.calls


async def test_a_publisher_cancelled_as_its_track_is_published_ends() -> None:
    async with trio_asyncio.open_loop():
        with trio.fail_after(10):
            ended, calls = await trio_asyncio.aio_as_trio(_cancel_as_the_publish_completes)()
    assert calls == 1
    assert ended, "the publisher swallowed its cancel and kept waiting"
