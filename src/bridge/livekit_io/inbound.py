"""Remote audio tracks -> 16 kHz mono PCM for the cloud.

The SDK resamples and re-chunks on its side (``AudioStream(sample_rate=16000, num_channels=1,
frame_size_ms=...)``), so Python touches each chunk once: copy its bytes into the session's queue.
"""

from __future__ import annotations

from collections.abc import Callable

from livekit import rtc

__all__ = ["CLOUD_SAMPLE_RATE", "forward_audio_track"]

CLOUD_SAMPLE_RATE = 16000

# Frames the SDK may hold for us if this loop falls behind; it drops the oldest beyond that.
_STREAM_CAPACITY = 20


async def forward_audio_track(track: rtc.Track, sink: Callable[[bytes], None], *, chunk_ms: int) -> None:
    """Read ``track`` until cancelled or it ends, calling ``sink(pcm)`` for each chunk (asyncio side)."""
    stream = rtc.AudioStream(
        track,
        sample_rate=CLOUD_SAMPLE_RATE,
        num_channels=1,
        frame_size_ms=chunk_ms,
        capacity=_STREAM_CAPACITY,
    )
    try:
        async for event in stream:
            sink(event.frame.data.tobytes())
    finally:
        await stream.aclose()
