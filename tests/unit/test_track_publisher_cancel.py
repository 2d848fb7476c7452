"""Cancelling a track publisher's work ends it cleanly: its publish, and a capture the SDK still holds.

A track publisher cancelled just as its publish completes still ends (it hung a session once).

On Python 3.11 ``asyncio.wait_for`` returns the result and swallows the cancel when the awaited
call completes in the same loop iteration as the cancel; the publisher then waited for the session
to end, forever, and so did the session's teardown (the hostile-fetch test's CI hang).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
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


# A capture cancelled while the SDK still holds its frame: the next capture on the track must not
# be refused. The native AudioSource keeps the cancelled capture's completion pending until its
# queue has drained to the threshold (after a clear(), at its next 10 ms tick) and refuses any
# capture meanwhile ("failed to capture frame"); a playback replacing an interrupted one on the
# same track hit that window in CI and ended FAILED.

_RATE = 48000


def _published_track() -> tuple[TrackPublisher, asyncio.Task[None]]:
    """A publisher whose publish succeeds at once (a real AudioSource behind it), and its run task."""
    published: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    published.set_result(SimpleNamespace(sid="TR_test"))
    publisher = TrackPublisher(_Room(published), 0, sample_rate=_RATE, queue_ms=200)  # type: ignore[arg-type]
    return publisher, asyncio.get_running_loop().create_task(publisher.run())


async def _a_capture_the_sdk_holds(publisher: TrackPublisher) -> asyncio.Task[bool]:
    """300 ms against the 200 ms queue: the SDK holds the last 100 ms until the queue drains."""
    capture = asyncio.get_running_loop().create_task(publisher.capture(np.zeros(_RATE * 3 // 10, np.int16)))
    await asyncio.sleep(0.05)
    assert not capture.done()
    return capture


async def _capture_after_a_cancelled_capture(*, clear: bool) -> int:
    publisher, runner = _published_track()
    try:
        first = await _a_capture_the_sdk_holds(publisher)
        first.cancel()
        await asyncio.wait({first})
        if clear:
            publisher.clear()  # what a stopped playback does
        assert await publisher.capture(np.zeros(_RATE // 50, np.int16))  # raised before the fix
        return publisher.frames_published
    finally:
        runner.cancel()
        await asyncio.wait({runner})


async def test_a_capture_after_an_interrupted_one_is_accepted() -> None:
    async with trio_asyncio.open_loop():
        with trio.fail_after(10):
            published = await trio_asyncio.aio_as_trio(_capture_after_a_cancelled_capture)(clear=True)
    assert published == 1


async def test_a_capture_after_a_cancelled_one_waits_for_the_queue_and_is_accepted() -> None:
    async with trio_asyncio.open_loop():
        with trio.fail_after(10):
            published = await trio_asyncio.aio_as_trio(_capture_after_a_cancelled_capture)(clear=False)
    assert published == 1


async def _close_with_an_abandoned_capture(*, track_first: bool) -> set[asyncio.Task[Any]]:
    publisher, runner = _published_track()
    first = await _a_capture_the_sdk_holds(publisher)
    # The session ends while the SDK holds the frame; either task may see its cancel first.
    for task in (runner, first) if track_first else (first, runner):
        task.cancel()
    await asyncio.wait({first, runner})
    await asyncio.sleep(0)  # let a cancelled capture task finish
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


@pytest.mark.parametrize("track_first", [False, True])
async def test_closing_a_track_ends_a_capture_the_sdk_still_held(track_first: bool) -> None:
    async with trio_asyncio.open_loop():
        with trio.fail_after(10):
            left = await trio_asyncio.aio_as_trio(_close_with_an_abandoned_capture)(track_first=track_first)
    assert not left, left
