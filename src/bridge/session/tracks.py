"""Cloud -> room: the session's published tracks, one long-lived track per ``track_id``.

A track is published on first use (or at join, ``BRIDGE_PREPUBLISH_TRACKS``) and kept until the
session ends. A publication that fails or hangs ends only its own task: whatever waited for the
track fails with TrackPublishError, and the next use tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from trio_asyncio import aio_as_trio

from ..livekit_io.outbound import TrackPublisher
from ..livekit_io.room import RoomPort
from .host import SessionHost

__all__ = ["CloudToRoom", "TracksSnapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TracksSnapshot:
    published: int
    samples_skipped_catching_up: int
    dropped_track_busy: int
    """Cloud PCM chunks dropped because a playback owned their track."""
    publish_failures: int


class CloudToRoom:
    def __init__(self, host: SessionHost, room: RoomPort) -> None:
        self._host = host
        self._room = room
        self._publishers: dict[int, TrackPublisher] = {}
        self.dropped_track_busy = 0
        self.publish_failures = 0
        self._skipped_by_ended_publishers = 0

    def publisher_for(self, track_id: int) -> TrackPublisher:
        """The long-lived track for ``track_id``, created (and published) on first use."""
        publisher = self._publishers.get(track_id)
        if publisher is None:
            nursery = self._host.nursery  # SessionNotFoundError once the session has ended
            config = self._host.config
            publisher = TrackPublisher(
                self._room,
                track_id,
                sample_rate=config.publish_sample_rate,
                queue_ms=config.publish_queue_ms,
                publish_timeout_s=config.track_publish_timeout_s,
            )
            self._publishers[track_id] = publisher
            nursery.start_soon(self._run_publisher, publisher, name=f"publisher:{publisher.name}")
        return publisher

    def existing(self, track_id: int) -> TrackPublisher | None:
        return self._publishers.get(track_id)

    async def _run_publisher(self, publisher: TrackPublisher) -> None:
        await aio_as_trio(publisher.run)()
        # run() returns only when publishing failed (else it lasts as long as the session): what
        # waited for the track has failed with TrackPublishError; the next use tries again.
        if publisher.failure is not None:
            self.publish_failures += 1
            log.warning("%s", publisher.failure, extra={"user_id": self._host.user_id})
        if self._publishers.get(publisher.track_id) is publisher:
            self._skipped_by_ended_publishers += publisher.samples_skipped_catching_up
            del self._publishers[publisher.track_id]

    async def publish(self, track_id: int, samples: npt.NDArray[np.int16]) -> None:
        """Cloud PCM (mono, publish rate) onto ``track_id``'s track; dropped while a playback owns the
        track, and kept real time across the track's publication (see TrackPublisher.capture).

        Called on the asyncio side by a stream's receive loop.
        """
        if not await self.publisher_for(track_id).capture(samples, real_time=True):
            self.dropped_track_busy += 1

    @property
    def published(self) -> dict[int, TrackPublisher]:
        return dict(self._publishers)

    def snapshot(self) -> TracksSnapshot:
        skipped = sum(p.samples_skipped_catching_up for p in self._publishers.values())
        return TracksSnapshot(
            published=len(self._publishers),
            samples_skipped_catching_up=skipped + self._skipped_by_ended_publishers,
            dropped_track_busy=self.dropped_track_busy,
            publish_failures=self.publish_failures,
        )
