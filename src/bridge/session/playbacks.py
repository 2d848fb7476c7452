"""Server-side playback in a session: PlayAudio / StopAudio.

Each playback is one Trio task of the session running ``playback.play`` (asyncio side) inside its own
cancel scope, so StopAudio, a newer playback on the track, ``stop_other`` or the session's end stop
exactly it. Every playback ends with exactly one terminal event (COMPLETED or FAILED).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio
from trio_asyncio import aio_as_trio

from ..errors import InvalidRequestError
from ..livekit_io.outbound import TrackPublisher
from ..playback import ErrorCode, PlaybackError, PlaybackEvents, PlaybackRequest, PlaybackServices, play
from .host import SessionHost
from .tracks import CloudToRoom

__all__ = ["ActivePlayback", "Playbacks"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ActivePlayback:
    """One PlayAudio in progress: its request, its event stream, and the scope that stops it."""

    request: PlaybackRequest
    events: PlaybackEvents
    requested_at: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    stop_reason: tuple[str, str] | None = None

    def stop(self, code: str, detail: str) -> None:
        """Stop on purpose (returns at once); the playback ends with FAILED ``code``."""
        if self.stop_reason is None:
            self.stop_reason = (code, detail)
        self.scope.cancel()


class Playbacks:
    def __init__(self, host: SessionHost, tracks: CloudToRoom, services: PlaybackServices) -> None:
        self._host = host
        self._tracks = tracks
        self._services = services
        self._playing: dict[str, ActivePlayback] = {}

    @property
    def playing(self) -> dict[str, ActivePlayback]:
        return dict(self._playing)

    def __len__(self) -> int:
        return len(self._playing)

    async def start(self, request: PlaybackRequest) -> ActivePlayback:
        """Start playing ``request`` on its track; returns once it runs (its events follow).

        A playback already on that track (or, with ``stop_other``, every other playback) is
        interrupted first and has ended, with FAILED "interrupted", before this one starts.
        """
        if request.request_id in self._playing:
            raise InvalidRequestError(f"request_id {request.request_id} is already playing")
        displaced = [
            playback
            for playback in self._playing.values()
            if request.stop_other or playback.request.track_id == request.track_id
        ]
        cap = self._host.config.max_playbacks_per_session
        if len(self._playing) - len(displaced) >= cap:
            detail = f"{cap} playbacks are already in flight (BRIDGE_MAX_PLAYBACKS_PER_SESSION)"
            return self._refused(request, ErrorCode.TOO_MANY_PLAYBACKS, detail)
        publisher = self._tracks.publisher_for(request.track_id)
        for playback in displaced:
            why = "stop_other" if request.stop_other else f"a new playback on track {request.track_id}"
            playback.stop(ErrorCode.INTERRUPTED, f"interrupted by {request.request_id} ({why})")
            self._clear_track(playback)
        for playback in displaced:
            await playback.done.wait()
        nursery = self._host.nursery  # SessionNotFoundError if the session ended meanwhile
        playback = ActivePlayback(request, PlaybackEvents(request.request_id), requested_at=time.monotonic())
        self._playing[request.request_id] = playback
        publisher.owner = playback
        self._services.stats.record_start()
        self._host.touch()
        nursery.start_soon(self._run, playback, publisher, name=f"playback:{request.request_id}")
        return playback

    def _refused(self, request: PlaybackRequest, code: str, detail: str) -> ActivePlayback:
        """A playback that never starts: its event stream is one FAILED event."""
        playback = ActivePlayback(request, PlaybackEvents(request.request_id), requested_at=time.monotonic())
        playback.events.fail(code, detail)
        self._services.stats.record_end(code)
        playback.done.set()
        return playback

    def _clear_track(self, playback: ActivePlayback) -> None:
        publisher = self._tracks.existing(playback.request.track_id)
        if publisher is not None:
            publisher.clear()  # silence now, not after the queued audio has played

    async def _run(self, playback: ActivePlayback, publisher: TrackPublisher) -> None:
        events, services = playback.events, self._services
        try:
            with playback.scope:
                duration_ms = await aio_as_trio(play)(
                    playback.request,
                    events,
                    services.client,
                    publisher,
                    services.limits,
                    playback,
                    self._host,
                )
                events.complete(duration_ms)
            if playback.stop_reason is not None:
                events.fail(*playback.stop_reason, position_ms=events.position_ms)
        except PlaybackError as err:
            events.fail(err.code, err.detail, position_ms=events.position_ms)
        except Exception as err:
            log.exception(
                "playback failed",
                extra={"user_id": self._host.user_id, "request_id": playback.request.request_id},
            )
            events.fail(ErrorCode.INTERNAL, f"{type(err).__name__}: {err}", position_ms=events.position_ms)
        finally:
            # Cancelled with the session (leave, replace, shutdown): still exactly one terminal event.
            events.fail(ErrorCode.SESSION_CLOSED, "the session ended", position_ms=events.position_ms)
            if playback.stop_reason is not None:
                publisher.clear()  # also drop a frame captured while the stop was on its way
            if publisher.owner is playback:
                publisher.owner = None
            if self._playing.get(playback.request.request_id) is playback:
                del self._playing[playback.request.request_id]
            self._host.touch()  # the idle TTL counts from the end of the last playback
            self._record_end(playback)
            playback.done.set()

    def _record_end(self, playback: ActivePlayback) -> None:
        events, stats = playback.events, self._services.stats
        stats.record_end(events.failure_code, events.terminal.duration_ms if events.terminal else 0)
        if events.started_at is not None:
            stats.record_first_frame((events.started_at - playback.requested_at) * 1000)

    async def stop(self, request_id: str, track_id: int | None, reason: str) -> list[str]:
        """Stop by request id, else by track, else everything; return the ids actually stopped."""
        if request_id:
            targets = [p for p in self._playing.values() if p.request.request_id == request_id]
        elif track_id is not None:
            targets = [p for p in self._playing.values() if p.request.track_id == track_id]
        else:
            targets = list(self._playing.values())
        for playback in targets:
            playback.stop(ErrorCode.STOPPED, reason or "StopAudio")
            self._clear_track(playback)
        for playback in targets:
            await playback.done.wait()
        self._host.touch()
        return [playback.request.request_id for playback in targets]
