"""Cloud -> room: one long-lived published audio track per ``track_id``.

A track is created on first use and kept until the session ends: republishing per utterance made
phones lose the first ~100 ms while they re-subscribed (wire contract). Exactly one task, ``run``,
calls ``capture_frame`` on the track's AudioSource (the SDK forbids concurrent captures); producers
hand it samples through a small bounded queue, so a producer faster than real time waits instead of
buffering without limit. The AudioSource's own queue (``queue_ms``) is what paces us: once it holds
that much audio, ``capture_frame`` returns only as real time passes.
"""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
from livekit import rtc

from .room import RoomLink

__all__ = ["TrackPublisher", "track_name"]

_TRACK_NAMES = {0: "speaker", 1: "app_audio", 2: "tts"}

# Chunks a producer may queue ahead of the AudioSource (each typically 20-100 ms of audio).
_PENDING_CHUNKS = 4


def track_name(track_id: int) -> str:
    """The published name of ``track_id``, as the wire contract fixes it."""
    return _TRACK_NAMES.get(track_id, f"track_{track_id}")


class TrackPublisher:
    def __init__(self, room: RoomLink, track_id: int, *, sample_rate: int, queue_ms: int) -> None:
        self.track_id = track_id
        self.name = track_name(track_id)
        self.sample_rate = sample_rate
        self._room = room
        self._queue_ms = queue_ms
        self._pending: asyncio.Queue[npt.NDArray[np.int16]] = asyncio.Queue(_PENDING_CHUNKS)
        self._source: rtc.AudioSource | None = None
        self.track_sid = ""
        self.frames_published = 0
        self.samples_published = 0

    async def write(self, samples: npt.NDArray[np.int16]) -> None:
        """Queue mono samples at ``sample_rate``; waits while the track is behind real time."""
        if samples.size:
            await self._pending.put(samples)

    def clear(self) -> None:
        """Drop audio not yet played (queued here and inside the AudioSource): barge-in / stop."""
        while not self._pending.empty():
            self._pending.get_nowait()
        if self._source is not None:
            self._source.clear_queue()

    async def run(self) -> None:
        """Publish the track, then feed it until cancelled (asyncio side)."""
        source = rtc.AudioSource(self.sample_rate, 1, queue_size_ms=self._queue_ms)
        self._source = source
        try:
            track = rtc.LocalAudioTrack.create_audio_track(self.name, source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            publication = await self._room.room.local_participant.publish_track(track, options)
            self.track_sid = publication.sid
            while True:
                samples = await self._pending.get()
                frame = rtc.AudioFrame(samples.tobytes(), self.sample_rate, 1, len(samples))
                await source.capture_frame(frame)
                self.frames_published += 1
                self.samples_published += len(samples)
        finally:
            # No unpublish: a publisher lives as long as its session, whose room disconnect removes
            # every track; awaiting the server here would only slow teardown down.
            self._source = None
            await source.aclose()
