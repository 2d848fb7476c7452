"""Cloud -> room: one long-lived published audio track per ``track_id``.

A track is created on first use and kept until the session ends: republishing per utterance made
phones lose the first ~100 ms while they re-subscribed (wire contract). Writers (a StreamAudio
receive loop, playbacks) call ``capture``; a lock makes sure only one ``capture_frame`` runs on the
AudioSource at a time (the SDK refuses a capture while another is in flight, "failed to capture
frame"). A capture whose caller is cancelled stays in flight in the SDK until its queue has drained
(after a ``clear``, up to 10 ms; else up to ``queue_ms``), so the next capture waits for it. The
AudioSource's own queue (``queue_ms``) paces every writer: once it holds that much audio,
``capture_frame`` returns only as real time passes, so nothing upstream runs ahead of real time by
more than that.

A playback *owns* its track while it plays: cloud PCM for that track is dropped (and counted) rather
than interleaved with the playback's frames.

Publishing can fail (a token without publish permission) or hang (a server that never answers). Either
way ``run`` returns instead of raising, after at most ``publish_timeout_s``, and every ``capture``
waiting for the track raises ``TrackPublishError``: the playback or stream that needed the track fails
with that message, and the session (its microphone path above all) goes on.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import numpy.typing as npt
from livekit import rtc

from .room import RoomPort

__all__ = ["TrackPublishError", "TrackPublisher", "settle_late_playout", "track_name"]

_TRACK_NAMES = {0: "speaker", 1: "app_audio", 2: "tts"}


def track_name(track_id: int) -> str:
    """The published name of ``track_id``, as the wire contract fixes it."""
    return _TRACK_NAMES.get(track_id, f"track_{track_id}")


_LATE_TIMER_MARGIN_S = 0.005


def settle_late_playout(source: rtc.AudioSource, seconds: float) -> None:
    """Before capturing ``seconds`` of audio: finish what a late playout timer left undone.

    livekit 1.2.1 arms the AudioSource's playout timer at ``queued + frame - time since the last
    capture`` and resets its estimate when that timer fires. When the loop was busy and the timer is
    late, the next capture computes a negative delay: asyncio would run it at once, but trio-asyncio's
    ``call_later`` asserts (``AssertionError: -0.18``), and the StreamAudio call or playback that
    captured failed. The queue has played out by then, so do what the timer would have done.
    (Private SDK state, pinned version; docs/design/lessons.md.)
    """
    last = source._last_capture
    if last and time.monotonic() - last > source._q_size + seconds - _LATE_TIMER_MARGIN_S:
        source._release_waiter()


def _discard_outcome(task: asyncio.Task[None]) -> None:
    """Nobody awaits an abandoned capture: take its outcome so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


class TrackPublishError(Exception):
    """The track could not be published; ``str(err)`` says which track and why."""


class TrackPublisher:
    def __init__(
        self,
        room: RoomPort,
        track_id: int,
        *,
        sample_rate: int,
        queue_ms: int,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.track_id = track_id
        self.name = track_name(track_id)
        self.sample_rate = sample_rate
        self._room = room
        self._queue_ms = queue_ms
        self._publish_timeout_s = publish_timeout_s
        self._source: rtc.AudioSource | None = None
        self.failure: str | None = None
        """Why publishing failed, once it has."""
        self._ready = asyncio.Event()
        self._capturing = asyncio.Lock()
        self._abandoned_capture: asyncio.Task[None] | None = None
        """A capture whose caller was cancelled, still held by the SDK."""
        self.owner: object | None = None
        """The playback that has the track to itself, if any."""
        self.track_sid = ""
        self.frames_published = 0
        self.samples_published = 0
        self.dropped_while_owned = 0
        self._catch_up_samples = 0
        self.samples_skipped_catching_up = 0

    async def run(self) -> None:
        """Own the track's lifetime: publish it, then wait until cancelled (asyncio side).

        Returns (never raises) when publishing fails or takes longer than ``publish_timeout_s``.
        """
        source = rtc.AudioSource(self.sample_rate, 1, queue_size_ms=self._queue_ms)
        try:
            track = rtc.LocalAudioTrack.create_audio_track(self.name, source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            try:
                # Not asyncio.wait_for: on Python 3.11, when the publish completes in the same loop
                # iteration as a cancel, it returns the result and swallows the cancel; this task
                # then waited below forever and its session never ended (caught by the tests'
                # watchdog). asyncio.timeout lets the cancel through.
                async with asyncio.timeout(self._publish_timeout_s):
                    publication = await self._room.room.local_participant.publish_track(track, options)
            except TimeoutError:
                self._fail(f"not published within {self._publish_timeout_s:g} s")
                return
            except Exception as err:  # the SDK's PublishTrackError, or the room going away
                self._fail(f"{type(err).__name__}: {err}")
                return
            self.track_sid = publication.sid
            self._source = source
            self._ready.set()
            await asyncio.get_running_loop().create_future()  # until the session ends
        finally:
            # No unpublish: the session's room disconnect removes every track, and awaiting the
            # server here would only slow teardown down.
            self._source = None
            if self._abandoned_capture is not None:
                self._abandoned_capture.cancel()  # a closed source never completes it
            await source.aclose()

    def _fail(self, reason: str) -> None:
        self.failure = f"track {self.track_id} ({self.name}) could not be published: {reason}"
        self._ready.set()  # wake every waiting capture: it raises TrackPublishError

    async def capture(
        self, samples: npt.NDArray[np.int16], *, owner: object | None = None, real_time: bool = False
    ) -> bool:
        """Hand mono samples at ``sample_rate`` to the track; waits while it is ahead of real time.

        Returns False (dropping the samples) when another owner has the track.

        ``real_time`` writers (cloud PCM) keep real time across the track's publication: if a
        capture had to wait W seconds for the track to be published, the next W seconds of their
        audio are dropped (counted). A real-time source never lets a backlog drain, so queuing it
        would delay the track by W for good; a faster source loses only W, not its whole burst.
        Playbacks pass False: they read at their own pace and lose nothing.
        """
        if self.owner is not None and owner is not self.owner:
            self.dropped_while_owned += 1
            return False
        if not self._ready.is_set():
            waited_from = time.monotonic()
            await self._ready.wait()
            if self.failure is not None:
                raise TrackPublishError(self.failure)
            if real_time:
                self._catch_up_samples += round((time.monotonic() - waited_from) * self.sample_rate)
        if real_time and self._catch_up_samples:
            skipped = min(len(samples), self._catch_up_samples)
            self._catch_up_samples -= skipped
            self.samples_skipped_catching_up += skipped
            samples = samples[skipped:]
            if not len(samples):
                return True
        frame = rtc.AudioFrame(samples.tobytes(), self.sample_rate, 1, len(samples))
        if self.failure is not None:
            raise TrackPublishError(self.failure)
        async with self._capturing:
            if self._abandoned_capture is not None:
                await asyncio.wait({self._abandoned_capture})
                self._abandoned_capture = None
            source = self._source
            if source is None:
                raise RuntimeError(f"track {self.name} is closed")
            settle_late_playout(source, len(samples) / self.sample_rate)
            # A task of its own, so that a cancelled caller leaves it running to the SDK's answer.
            capture = asyncio.get_running_loop().create_task(source.capture_frame(frame))
            try:
                await asyncio.shield(capture)
            except asyncio.CancelledError:
                capture.add_done_callback(_discard_outcome)
                if self._source is source:
                    self._abandoned_capture = capture
                else:
                    capture.cancel()  # the track closed meanwhile
                raise
        self.frames_published += 1
        self.samples_published += len(samples)
        return True

    def clear(self) -> None:
        """Drop audio queued in the AudioSource but not yet played (stop / barge-in)."""
        if self._source is not None:
            self._source.clear_queue()

    @property
    def queued_seconds(self) -> float:
        """Audio handed to the track that has not played out yet."""
        return self._source.queued_duration if self._source is not None else 0.0
