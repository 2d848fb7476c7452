"""The AudioSource's playout timer after a busy loop (livekit 1.2.1 under trio-asyncio)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from livekit import rtc
from trio_asyncio import aio_as_trio

from bridge.livekit_io.outbound import settle_late_playout

# The first frame is long (100 ms) so its playout timer cannot fire while its own capture is awaited
# (a cold first capture once took longer than a 10 ms frame, and the negative timer never came).
FIRST = rtc.AudioFrame(np.zeros(4800, np.int16).tobytes(), 48000, 1, 4800)
NEXT = rtc.AudioFrame(np.zeros(480, np.int16).tobytes(), 48000, 1, 480)  # 10 ms at 48 kHz


async def _capture_after_a_busy_loop(settle: bool) -> None:
    source = rtc.AudioSource(48000, 1, queue_size_ms=200)
    try:
        await source.capture_frame(FIRST)
        if not source._last_capture:  # not an AssertionError: the first test expects that one
            raise RuntimeError("the first frame's playout timer fired during its own capture")
        time.sleep(0.15)  # noqa: ASYNC251 -- on purpose: a busy loop, the 100 ms playout timer cannot fire
        if settle:
            settle_late_playout(source, 0.01)
        await source.capture_frame(NEXT)
        await source.wait_for_playout()
    finally:
        await source.aclose()


async def test_the_sdk_alone_asks_trio_asyncio_for_a_negative_timer(aio_loop) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AssertionError):  # if this passes one day, settle_late_playout can go
        await aio_as_trio(_capture_after_a_busy_loop)(False)


async def test_a_capture_after_a_busy_loop_succeeds_once_the_late_timer_is_settled(aio_loop) -> None:  # type: ignore[no-untyped-def]
    await aio_as_trio(_capture_after_a_busy_loop)(True)
