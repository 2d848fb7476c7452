"""One user's session: a room connection and every task that moves its audio.

Task tree (all inside the session's one cancel scope; see docs/design/architecture.md)::

    BridgeSession.run
    └── nursery
        ├── _follow_room_events       connectivity, track (un)subscriptions, kicks
        ├── _close_when_idle          reaps the session when no stream and no call for the TTL
        ├── _read_track (per remote audio track)        -> cloud queue
        ├── TrackPublisher.run (per track_id)            owns one published track's AudioSource
        ├── _run_playback (per PlayAudio)                fetch -> decode -> track, in real time
        └── _run_stream (while a StreamAudio call is attached)
            ├── send_loop      cloud queue -> grpc stream
            └── receive_loop   grpc stream -> tracks

Every way a session ends (LeaveRoom, a replacing JoinRoom, the room disconnecting or kicking us, the
idle TTL, shutdown, a bug in one of its tasks) is ``close(reason)`` or an exception, and every one
goes through the same ``finally`` in ``run``: close the queue, unregister callbacks, disconnect the
room, tell the registry. Nothing of a session outlives it.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from trio_asyncio import aio_as_trio

from ._gen.mentra.livekit.bridge import AudioChunk
from .audio import SequenceTracker, split_sequence_byte
from .cloud_link import CloudPcmConverter, StreamCounters, now_ms, receive_loop, send_loop
from .cloud_queue import CloudAudioQueue
from .config import BridgeConfig
from .diagnostics import tasks_under
from .errors import AudioFormatError, InvalidRequestError, SessionNotFoundError
from .livekit_io.inbound import CLOUD_SAMPLE_RATE, forward_audio_track
from .livekit_io.outbound import TrackPublisher, TrackPublishError
from .livekit_io.room import RoomEvent, RoomLink, open_event_channel
from .playback import ErrorCode, PlaybackError, PlaybackEvents, PlaybackRequest, PlaybackServices, play

__all__ = ["ActivePlayback", "BridgeSession", "CloseReason", "JoinRequest", "StreamEnd"]

log = logging.getLogger(__name__)

_CLEANUP_TIMEOUT_S = 5.0
"""Upper bound on a session's cleanup (room disconnect); it never blocks the registry longer."""

_BYTES_PER_MS = CLOUD_SAMPLE_RATE * 2 // 1000

_FLUSH_TIMEOUT_S = 1.0
"""On a hand-over, how long the stream may take to send the room audio still queued for it."""

_MAX_SEQUENCE_SOURCES = 64
"""Participants whose sequence bytes a session tracks; packets of any more still flow, untracked."""


class CloseReason(enum.Enum):
    LEFT = "left"
    REPLACED = "replaced"
    ROOM_DISCONNECTED = "room_disconnected"
    IDLE = "idle"
    SHUTDOWN = "shutdown"
    DRAINED = "drained"
    FAILED = "failed"


@dataclass(frozen=True)
class JoinRequest:
    user_id: str
    url: str
    token: str = field(repr=False)  # never in logs or reprs
    room_name: str = ""
    target_identity: str = ""


@dataclass(frozen=True)
class StreamEnd:
    """How a StreamAudio call ends: the gRPC status and message the cloud receives."""

    status: Status
    message: str


@dataclass
class SessionCounters:
    data_packets: int = 0
    data_bytes: int = 0
    data_packets_ignored: int = 0
    """Packets from participants other than ``target_identity``."""
    track_chunks: int = 0
    streams_attached: int = 0
    failures: int = 0
    track_publish_failures: int = 0


@dataclass
class ConnectionStatus:
    connected: bool = False
    last_disconnect_at_ms: int = 0
    last_disconnect_reason: str = ""

    def mark_disconnected(self, reason: str) -> None:
        self.connected = False
        self.last_disconnect_at_ms = now_ms()
        self.last_disconnect_reason = reason


@dataclass(eq=False)
class _Attachment:
    """The StreamAudio call currently attached to the session."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    flushed: trio.Event = field(default_factory=trio.Event)
    """The send loop has sent everything the (sealed) cloud queue held."""
    end: StreamEnd | None = None


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


class BridgeSession:
    def __init__(
        self,
        request: JoinRequest,
        config: BridgeConfig,
        on_closed: Callable[[BridgeSession], None] = lambda _: None,
        background: trio.Nursery | None = None,
    ) -> None:
        self.request = request
        self.user_id = request.user_id
        self._config = config
        self._on_closed = on_closed
        self._background = background
        """Where an abandoned connect is finished (the app's sessions nursery)."""
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._events_send, self._events_receive = open_event_channel()
        self.room = RoomLink(on_data=self._on_data, events=self._events_send)
        self.cloud_queue = CloudAudioQueue(max_bytes=config.cloud_queue_ms * _BYTES_PER_MS)
        self.counters = SessionCounters()
        self.stream_counters = StreamCounters()
        self.status = ConnectionStatus()
        self.sequences: dict[str, SequenceTracker] = {}
        self._publishers: dict[int, TrackPublisher] = {}
        self._playbacks: dict[str, ActivePlayback] = {}
        self._track_readers: dict[str, trio.CancelScope] = {}
        self._attachment: _Attachment | None = None
        self._last_activity = trio.current_time()
        self._task: trio.lowlevel.Task | None = None
        self.close_reason: CloseReason | None = None
        self.close_detail = ""
        self.closed = trio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report started, move audio until closed; then clean up, whatever happened.

        Raises RoomConnectError (or TooSlowError) before ``task_status.started()`` when the room
        cannot be joined; after that, no exception leaves: a failing session ends alone.
        """
        started = False
        self._task = trio.lowlevel.current_task()
        try:
            with self._scope:
                with trio.fail_after(self._config.join_timeout_s):
                    await aio_as_trio(self.room.connect)(
                        self.request.url, self.request.token, timeout_s=self._config.join_timeout_s
                    )
                self.status.connected = True
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._follow_room_events)
                    nursery.start_soon(self._close_when_idle)
                    for identity, track_sid, track in self.room.subscribed_audio_tracks():
                        self._maybe_read_track(RoomEvent("track_subscribed", identity, track_sid, track))
                    for track_id in self._config.prepublished_track_ids:
                        self.publisher_for(track_id)  # the phone subscribes now, not at the first word
                    started = True
                    task_status.started()
        except Exception as exc:
            if not started:
                raise
            self.counters.failures += 1
            self._set_close_reason(CloseReason.FAILED, f"{type(exc).__name__}: {exc}")
            log.exception("session failed", extra={"user_id": self.user_id})
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_TIMEOUT_S):
                await self._cleanup()
            if self.status.connected:
                self.status.mark_disconnected(self.close_detail or "session closed")
            self.closed.set()
            self._on_closed(self)

    async def _cleanup(self) -> None:
        # Order matters: stop producers (callbacks off, queue closed) before the room goes away.
        self.cloud_queue.close()
        self._events_send.close()
        if self.room.connect_pending and self._background is not None:
            # Joined no further than a connect that may still complete natively: let a task of the
            # app wait for it and disconnect, so JoinRoom answers now and no ghost stays behind.
            self._background.start_soon(aio_as_trio(self.room.finish_abandoned_connect))
            return
        await aio_as_trio(self.room.aclose)()

    async def hand_over(self) -> None:
        """End the session for a drain: flush its queued room audio to its stream, then close it.

        The stream ends with UNAVAILABLE "draining", which tells a client to re-join (elsewhere).
        """
        self._set_close_reason(CloseReason.DRAINED, "bridge draining")
        attachment = self._attachment
        if attachment is not None:
            self.cloud_queue.seal()
            with trio.move_on_after(_FLUSH_TIMEOUT_S):
                await attachment.flushed.wait()
        await self.aclose(CloseReason.DRAINED)

    @property
    def handing_over(self) -> bool:
        return self.close_reason is CloseReason.DRAINED

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the session; returns at once. Await ``closed`` to know it is fully torn down."""
        self._set_close_reason(reason, detail)
        self._scope.cancel()

    async def aclose(self, reason: CloseReason, detail: str = "") -> None:
        self.close(reason, detail)
        await self.closed.wait()

    def _set_close_reason(self, reason: CloseReason, detail: str) -> None:
        if self.close_reason is None:  # the first reason wins
            self.close_reason = reason
            self.close_detail = detail or reason.value

    @property
    def closing(self) -> bool:
        return self.close_reason is not None or self._nursery is None

    def touch(self) -> None:
        """Record a call for this session (resets the idle TTL)."""
        self._last_activity = trio.current_time()

    @property
    def playing(self) -> bool:
        return bool(self._playbacks)

    @property
    def busy(self) -> bool:
        """A stream is attached or a playback is playing: the session is in use, whatever the clock."""
        return self._attachment is not None or bool(self._playbacks)

    async def _close_when_idle(self) -> None:
        ttl = self._config.session_idle_ttl_s
        while True:
            idle_for = trio.current_time() - self._last_activity
            if not self.busy and idle_for >= ttl:
                log.info("closing idle session", extra={"user_id": self.user_id})
                self.close(CloseReason.IDLE, f"no stream, playback or call for {ttl:g} s")
                return
            # Whatever ends a stream or a playback also touches the session, so waking after a
            # full TTL (when busy) or when the quiet time would run out is enough.
            await trio.sleep(ttl if self.busy else ttl - idle_for)

    # --- room -> cloud -----------------------------------------------------------------------------

    def _wants(self, identity: str) -> bool:
        target = self.request.target_identity
        return not target or identity == target

    def _on_data(self, payload: bytes, identity: str) -> None:
        """SDK callback for every data packet: filter, strip the sequence byte, queue. Hot path."""
        if not self._wants(identity):
            self.counters.data_packets_ignored += 1
            return
        seq, pcm = split_sequence_byte(payload)
        if seq is not None:
            tracker = self.sequences.get(identity)
            if tracker is None and len(self.sequences) < _MAX_SEQUENCE_SOURCES:
                tracker = self.sequences[identity] = SequenceTracker()
            if tracker is not None:
                tracker.observe(seq)
        self.counters.data_packets += 1
        self.counters.data_bytes += len(pcm)
        if pcm:
            self.cloud_queue.put_nowait(pcm, now_ms())

    def _on_track_pcm(self, pcm: bytes) -> None:
        self.counters.track_chunks += 1
        self.cloud_queue.put_nowait(pcm, now_ms())

    async def _follow_room_events(self) -> None:
        async for event in self._events_receive:
            if event.kind == "track_subscribed":
                self._maybe_read_track(event)
            elif event.kind == "track_unsubscribed":
                scope = self._track_readers.pop(event.track_sid, None)
                if scope is not None:
                    scope.cancel()
            elif event.kind == "reconnecting":
                self.status.mark_disconnected(event.reason)
                log.warning("room connection lost, reconnecting", extra={"user_id": self.user_id})
            elif event.kind == "reconnected":
                self.status.connected = True
                log.info("room reconnected", extra={"user_id": self.user_id})
            elif event.kind == "disconnected":
                self.status.mark_disconnected(f"room disconnected: {event.reason}")
                self.close(CloseReason.ROOM_DISCONNECTED, f"room disconnected: {event.reason}")

    def _maybe_read_track(self, event: RoomEvent) -> None:
        if event.track is None or not self._wants(event.identity) or self._nursery is None:
            return
        # After a full reconnect the SDK re-announces tracks as new objects: replace the old reader.
        old = self._track_readers.pop(event.track_sid, None)
        if old is not None:
            old.cancel()
        scope = self._track_readers[event.track_sid] = trio.CancelScope()
        self._nursery.start_soon(self._read_track, event.track_sid, event.track, scope)

    async def _read_track(self, track_sid: str, track: Any, scope: trio.CancelScope) -> None:
        with scope:
            forward = functools.partial(
                forward_audio_track, track, self._on_track_pcm, chunk_ms=self._config.track_chunk_ms
            )
            await aio_as_trio(forward)()
        if self._track_readers.get(track_sid) is scope:
            del self._track_readers[track_sid]

    # --- cloud -> room -----------------------------------------------------------------------------

    def publisher_for(self, track_id: int) -> TrackPublisher:
        """The long-lived track for ``track_id``, created (and published) on first use."""
        publisher = self._publishers.get(track_id)
        if publisher is None:
            if self._nursery is None:
                raise SessionNotFoundError(self.user_id)
            publisher = TrackPublisher(
                self.room,
                track_id,
                sample_rate=self._config.publish_sample_rate,
                queue_ms=self._config.publish_queue_ms,
                publish_timeout_s=self._config.track_publish_timeout_s,
            )
            self._publishers[track_id] = publisher
            self._nursery.start_soon(self._run_publisher, publisher, name=f"publisher:{publisher.name}")
        return publisher

    async def _run_publisher(self, publisher: TrackPublisher) -> None:
        await aio_as_trio(publisher.run)()
        # run() returns only when publishing failed (else it lasts as long as the session): what
        # waited for the track has failed with TrackPublishError; the next use tries again.
        if publisher.failure is not None:
            self.counters.track_publish_failures += 1
            log.warning("%s", publisher.failure, extra={"user_id": self.user_id})
        if self._publishers.get(publisher.track_id) is publisher:
            del self._publishers[publisher.track_id]

    async def publish(self, track_id: int, samples: npt.NDArray[np.int16]) -> None:
        """Cloud PCM (mono, publish rate) onto ``track_id``'s track; dropped while a playback owns the
        track, and kept real time across the track's publication (see TrackPublisher.capture).

        Called on the asyncio side by a stream's receive loop.
        """
        if not await self.publisher_for(track_id).capture(samples, real_time=True):
            self.stream_counters.dropped_track_busy += 1

    @property
    def published_tracks(self) -> dict[int, TrackPublisher]:
        return dict(self._publishers)

    # --- the attached StreamAudio call ------------------------------------------------------------

    @property
    def has_stream(self) -> bool:
        return self._attachment is not None

    async def serve_stream(self, stream: Any, first: AudioChunk) -> StreamEnd:
        """Run a StreamAudio call inside this session until it ends; return how it ended.

        A newer call replaces an older one (the older ends with OK). The call's tasks live in the
        session's nursery, so LeaveRoom or a replacing JoinRoom ends them too; if the client goes
        away, the caller is cancelled and the ``finally`` below ends them before returning.
        """
        if self.closing or self._nursery is None:
            raise SessionNotFoundError(self.user_id)
        attachment = _Attachment()
        previous, self._attachment = self._attachment, attachment
        if previous is not None:
            previous.end = StreamEnd(Status.OK, "superseded by a newer StreamAudio call")
            previous.scope.cancel()
        self.counters.streams_attached += 1
        self.touch()
        self._nursery.start_soon(self._run_stream, attachment, previous, stream, first)
        try:
            await attachment.done.wait()
        finally:
            attachment.scope.cancel()
            with trio.CancelScope(shield=True):
                await attachment.done.wait()
            if self._attachment is attachment:
                self._attachment = None
            self.touch()
        return attachment.end or self._end_for_close()

    async def _run_stream(
        self, attachment: _Attachment, previous: _Attachment | None, stream: Any, first: AudioChunk
    ) -> None:
        converter = CloudPcmConverter(self._config.publish_sample_rate)
        try:
            with attachment.scope:
                if previous is not None:  # one consumer of the cloud queue at a time
                    await previous.done.wait()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_to_cloud, stream, attachment)
                    nursery.start_soon(
                        aio_as_trio(receive_loop),
                        stream,
                        first,
                        self.publish,
                        converter,
                        self.stream_counters,
                    )
        except* AudioFormatError as group:
            attachment.end = StreamEnd(Status.INVALID_ARGUMENT, str(group.exceptions[0]))
        except* GRPCError as group:
            # The server refused what the cloud sent (an oversized message): answer as it said.
            refused = group.exceptions[0]
            assert isinstance(refused, GRPCError)
            attachment.end = StreamEnd(refused.status, refused.message or "")
        except* TrackPublishError as group:
            # The session stays and keeps queueing room audio for the next StreamAudio call.
            attachment.end = StreamEnd(Status.FAILED_PRECONDITION, str(group.exceptions[0]))
        except* Exception as group:
            # The cloud's connection broke, or a bug: the stream ends, the session stays.
            err = group.exceptions[0]
            log.warning(
                "stream ended by error: %s: %s", type(err).__name__, err, extra={"user_id": self.user_id}
            )
            attachment.end = attachment.end or StreamEnd(Status.UNAVAILABLE, f"stream failed: {err}")
        finally:
            attachment.done.set()

    async def _send_to_cloud(self, stream: Any, attachment: _Attachment) -> None:
        await aio_as_trio(send_loop)(stream, self.cloud_queue, self.user_id, self.stream_counters)
        attachment.flushed.set()  # the queue was sealed or closed, and all it held has been sent

    def _end_for_close(self) -> StreamEnd:
        reason, detail = self.close_reason, self.close_detail
        if reason is CloseReason.LEFT:
            return StreamEnd(Status.OK, f"session left: {detail}")
        if reason is CloseReason.REPLACED:
            return StreamEnd(Status.OK, "session replaced by a new JoinRoom")
        if reason is CloseReason.SHUTDOWN:
            return StreamEnd(Status.UNAVAILABLE, "bridge shutting down")
        if reason is CloseReason.DRAINED:
            return StreamEnd(Status.UNAVAILABLE, "bridge draining: join again to continue on another bridge")
        return StreamEnd(Status.UNAVAILABLE, f"session ended: {detail}")

    # --- server-side playback ----------------------------------------------------------------------

    @property
    def playbacks(self) -> dict[str, ActivePlayback]:
        return dict(self._playbacks)

    async def start_playback(self, request: PlaybackRequest, services: PlaybackServices) -> ActivePlayback:
        """Start playing ``request`` on its track; returns once it runs (its events follow).

        A playback already on that track (or, with ``stop_other``, every other playback) is
        interrupted first and has ended, with FAILED "interrupted", before this one starts.
        """
        if request.request_id in self._playbacks:
            raise InvalidRequestError(f"request_id {request.request_id} is already playing")
        displaced = [
            playback
            for playback in self._playbacks.values()
            if request.stop_other or playback.request.track_id == request.track_id
        ]
        cap = self._config.max_playbacks_per_session
        if len(self._playbacks) - len(displaced) >= cap:
            return self._refused(
                request,
                services,
                ErrorCode.TOO_MANY_PLAYBACKS,
                f"{cap} playbacks are already in flight (BRIDGE_MAX_PLAYBACKS_PER_SESSION)",
            )
        publisher = self.publisher_for(request.track_id)
        for playback in displaced:
            why = "stop_other" if request.stop_other else f"a new playback on track {request.track_id}"
            playback.stop(ErrorCode.INTERRUPTED, f"interrupted by {request.request_id} ({why})")
            self._publishers[playback.request.track_id].clear()
        for playback in displaced:
            await playback.done.wait()
        if self.closing or self._nursery is None:
            raise SessionNotFoundError(self.user_id)
        playback = ActivePlayback(request, PlaybackEvents(request.request_id), requested_at=time.monotonic())
        self._playbacks[request.request_id] = playback
        publisher.owner = playback
        services.stats.record_start()
        self.touch()
        self._nursery.start_soon(
            self._run_playback, playback, publisher, services, name=f"playback:{request.request_id}"
        )
        return playback

    @staticmethod
    def _refused(
        request: PlaybackRequest, services: PlaybackServices, code: str, detail: str
    ) -> ActivePlayback:
        """A playback that never starts: its event stream is one FAILED event."""
        playback = ActivePlayback(request, PlaybackEvents(request.request_id), requested_at=time.monotonic())
        playback.events.fail(code, detail)
        services.stats.record_end(code)
        playback.done.set()
        return playback

    async def _run_playback(
        self, playback: ActivePlayback, publisher: TrackPublisher, services: PlaybackServices
    ) -> None:
        events = playback.events
        try:
            with playback.scope:
                duration_ms = await aio_as_trio(play)(
                    playback.request, events, services.client, publisher, services.limits, playback
                )
                events.complete(duration_ms)
            if playback.stop_reason is not None:
                events.fail(*playback.stop_reason, position_ms=events.position_ms)
        except PlaybackError as err:
            events.fail(err.code, err.detail, position_ms=events.position_ms)
        except Exception as err:
            log.exception(
                "playback failed", extra={"user_id": self.user_id, "request_id": playback.request.request_id}
            )
            events.fail(ErrorCode.INTERNAL, f"{type(err).__name__}: {err}", position_ms=events.position_ms)
        finally:
            # Cancelled with the session (leave, replace, shutdown): still exactly one terminal event.
            events.fail(ErrorCode.SESSION_CLOSED, "the session ended", position_ms=events.position_ms)
            if playback.stop_reason is not None:
                publisher.clear()  # also drop a frame captured while the stop was on its way
            if publisher.owner is playback:
                publisher.owner = None
            if self._playbacks.get(playback.request.request_id) is playback:
                del self._playbacks[playback.request.request_id]
            self.touch()  # the idle TTL counts from the end of the last playback
            self._record_playback_end(playback, services)
            playback.done.set()

    @staticmethod
    def _record_playback_end(playback: ActivePlayback, services: PlaybackServices) -> None:
        terminal = playback.events.terminal
        code = (
            None
            if terminal is None or not terminal.error
            else terminal.metadata.get("code", ErrorCode.INTERNAL)
        )
        services.stats.record_end(code, terminal.duration_ms if terminal is not None else 0)
        if playback.events.started_at is not None:
            services.stats.record_first_frame((playback.events.started_at - playback.requested_at) * 1000)

    async def stop_playbacks(self, request_id: str, track_id: int | None, reason: str) -> list[str]:
        """Stop by request id, else by track, else everything; return the ids actually stopped."""
        if request_id:
            targets = [p for p in self._playbacks.values() if p.request.request_id == request_id]
        elif track_id is not None:
            targets = [p for p in self._playbacks.values() if p.request.track_id == track_id]
        else:
            targets = list(self._playbacks.values())
        for playback in targets:
            playback.stop(ErrorCode.STOPPED, reason or "StopAudio")
            self._publishers[playback.request.track_id].clear()  # silence now, not after the queue drains
        for playback in targets:
            await playback.done.wait()
        self.touch()
        return [playback.request.request_id for playback in targets]

    # --- reporting ---------------------------------------------------------------------------------

    def trio_task_count(self) -> int:
        """Trio tasks this session runs (its own included): what a session costs, and what must end."""
        if self._task is None or self.closed.is_set():
            return 0
        return tasks_under(self._task)

    def sequence_totals(self) -> dict[str, int]:
        totals = {"received": 0, "lost": 0, "reordered": 0, "duplicates": 0}
        for tracker in self.sequences.values():
            totals["received"] += tracker.received
            totals["lost"] += tracker.lost
            totals["reordered"] += tracker.reordered
            totals["duplicates"] += tracker.duplicates
        return totals

    def describe(self) -> dict[str, str]:
        """Counters for JoinRoom/HealthCheck metadata: strings only, no secrets."""
        seq = self.sequence_totals()
        queue = self.cloud_queue
        return {
            "room": self.room.room_name,
            "identity": self.room.identity,
            "data_packets": str(self.counters.data_packets),
            "packets_lost": str(seq["lost"]),
            "packets_reordered": str(seq["reordered"]),
            "queue_depth": str(queue.depth),
            "queue_dropped_chunks": str(queue.dropped_chunks),
            "wall_clock_ms": str(int(time.time() * 1000)),
        }
