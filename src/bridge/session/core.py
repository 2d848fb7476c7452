"""One user's session: its lifecycle, and the parts that move its audio.

Task tree (all inside the session's one cancel scope; see docs/design/architecture.md)::

    BridgeSession.run
    └── nursery
        ├── _follow_room_events        connectivity, track (un)subscriptions, kicks
        ├── _close_when_idle           the idle TTL
        ├── RoomToCloud._read_track    per remote audio track -> cloud queue        (room_to_cloud.py)
        ├── CloudToRoom._run_publisher per track_id: one published track            (tracks.py)
        ├── Playbacks._run             per PlayAudio: fetch -> decode -> track       (playbacks.py)
        └── AttachedStream._run        while a StreamAudio call is attached          (stream.py)
            ├── send_all               cloud queue -> the call
            └── receive_all            the call -> tracks

Every way a session ends (LeaveRoom, a replacing JoinRoom, the room disconnecting or kicking us, the
idle TTL, a drain, shutdown, a bug in one of its tasks) is ``close(reason)`` or an exception, and every
one goes through the same ``finally`` in ``run``: close the queue, unregister callbacks, disconnect
the room, tell the registry. Nothing of a session outlives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from trio_asyncio import aio_as_trio

from ..config import BridgeConfig
from ..diagnostics import tasks_under
from ..errors import SessionNotFoundError
from ..livekit_io.room import DataHandler, RoomEvent, RoomLink, RoomPort, open_event_channel
from ..playback import PlaybackRequest, PlaybackServices
from .model import CloseReason, ConnectionStatus, JoinRequest, StreamEnd, StreamEndReason
from .playbacks import ActivePlayback, Playbacks
from .room_to_cloud import RoomToCloud
from .snapshot import SessionSnapshot
from .stream import AttachedStream, CloudLink
from .tracks import CloudToRoom

__all__ = ["BridgeSession", "RoomFactory"]

log = logging.getLogger(__name__)

_CLEANUP_TIMEOUT_S = 5.0
"""Upper bound on a session's cleanup (room disconnect); it never blocks the registry longer."""

RoomFactory = Callable[[DataHandler, "trio.MemorySendChannel[RoomEvent]"], RoomPort]
"""Makes a session's room link; tests pass a fake (tests/support/fake_room.py)."""


def _livekit_room(on_data: DataHandler, events: trio.MemorySendChannel[RoomEvent]) -> RoomPort:
    return RoomLink(on_data=on_data, events=events)


def _describe_failure(exc: BaseException) -> str:
    """The bug that ended a session, as GetStatus reports it: the first real error, not its group."""
    leaves = [exc]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = [*leaves[0].exceptions, *leaves[1:]]
    first = leaves[0]
    more = f" (and {len(leaves) - 1} more)" if len(leaves) > 1 else ""
    return f"{type(first).__name__}: {first}{more}"


class BridgeSession:
    def __init__(
        self,
        request: JoinRequest,
        config: BridgeConfig,
        services: PlaybackServices,
        *,
        on_closed: Callable[[BridgeSession], None] = lambda _: None,
        background: trio.Nursery | None = None,
        room_factory: RoomFactory = _livekit_room,
    ) -> None:
        self.request = request
        self.user_id = request.user_id
        self.config = config
        self._on_closed = on_closed
        self._background = background
        """Where an abandoned connect is finished (the app's sessions nursery)."""
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._events_send, self._events_receive = open_event_channel()
        # Asked only for packets the SDK delivers without a sender, never on the hot path.
        self.mic = RoomToCloud(
            self,
            request.target_identity,
            knows_participant=lambda identity: self.room.has_participant(identity),
        )
        self.room = room_factory(self.mic.on_data, self._events_send)
        self.tracks = CloudToRoom(self, self.room)
        self.stream = AttachedStream(self, self.mic.queue, self.tracks.publish)
        self.playbacks = Playbacks(self, self.tracks, services)
        self.status = ConnectionStatus()
        self.failures = 0
        self.asked_to_move = False
        """A drain told the client to re-join elsewhere (``ask_to_move``)."""
        self._last_activity = trio.current_time()
        self._task: trio.lowlevel.Task | None = None
        self.close_reason: CloseReason | None = None
        self.close_detail = ""
        self.closed = trio.Event()

    # --- what the parts need (host.SessionHost) ----------------------------------------------------

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None or self.close_reason is not None:
            raise SessionNotFoundError(self.user_id)
        return self._nursery

    def touch(self) -> None:
        """Record a call for this session (resets the idle TTL)."""
        self._last_activity = trio.current_time()

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
                with trio.fail_after(self.config.join_timeout_s):
                    await aio_as_trio(self.room.connect)(
                        self.request.url, self.request.token, timeout_s=self.config.join_timeout_s
                    )
                self.status.connected = True
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._follow_room_events)
                    nursery.start_soon(self._close_when_idle)
                    for identity, track_sid, track in self.room.subscribed_audio_tracks():
                        self.mic.read_track(identity, track_sid, track)
                    for track_id in self.config.prepublished_track_ids:
                        self.tracks.publisher_for(track_id)  # the phone subscribes now, not at the first word
                    started = True
                    task_status.started()
        except Exception as exc:
            if not started:
                raise
            self.failures += 1
            self._set_close_reason(CloseReason.FAILED, _describe_failure(exc))
            log.exception("session failed", extra={"user_id": self.user_id})
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_TIMEOUT_S) as bounded:
                await self._cleanup()
            if bounded.cancelled_caught:
                log.warning(
                    "session cleanup took over %g s; the room's disconnect goes on without it",
                    _CLEANUP_TIMEOUT_S,
                    extra={"user_id": self.user_id},
                )
            if self.status.connected:
                self.status.mark_disconnected(self.close_detail or "session closed")
            self.closed.set()
            self._on_closed(self)

    async def _cleanup(self) -> None:
        # Order matters: stop producers (callbacks off, queue closed) before the room goes away.
        self.mic.queue.close()
        self._events_send.close()
        if self.room.connect_pending and self._background is not None:
            # Joined no further than a connect that may still complete natively: let a task of the
            # app wait for it and disconnect, so JoinRoom answers now and no ghost stays behind.
            self._background.start_soon(aio_as_trio(self.room.finish_abandoned_connect))
            return
        await aio_as_trio(self.room.aclose)()

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the session; returns at once. Await ``closed`` to know it is fully torn down."""
        self._set_close_reason(reason, detail)
        self._scope.cancel()

    async def aclose(self, reason: CloseReason, detail: str = "") -> None:
        self.close(reason, detail)
        await self.closed.wait()

    def ask_to_move(self) -> bool:
        """Tell the attached client (if it understands the notice) that this bridge is draining: it
        re-joins elsewhere while this session still delivers, and LiveKit then replaces our
        participant, which ends this session as DRAINED. Whether the client was told."""
        self.asked_to_move = self.stream.notify("draining")
        return self.asked_to_move

    async def hand_over(self) -> None:
        """End the session for a drain: flush its queued room audio to its stream, then close it.

        The stream ends with DRAINED, which tells a client to re-join (elsewhere).
        """
        await self._flush_then_close_drained("bridge draining")
        await self.closed.wait()

    async def _flush_then_close_drained(self, detail: str) -> None:
        """What a drain's hand-over does, and a client that moved when asked: the room audio still
        queued goes to the stream, then the session closes as DRAINED."""
        self._set_close_reason(CloseReason.DRAINED, detail)
        await self.stream.flush()
        self.close(CloseReason.DRAINED)

    @property
    def handing_over(self) -> bool:
        return self.close_reason is CloseReason.DRAINED

    def _set_close_reason(self, reason: CloseReason, detail: str) -> None:
        if self.close_reason is None:  # the first reason wins
            self.close_reason = reason
            self.close_detail = detail or reason.value

    @property
    def closing(self) -> bool:
        return self.close_reason is not None or self._nursery is None

    @property
    def playing(self) -> bool:
        return len(self.playbacks) > 0

    @property
    def busy(self) -> bool:
        """A stream is attached or a playback is playing: the session is in use, whatever the clock."""
        return self.stream.attached or self.playing

    async def _close_when_idle(self) -> None:
        ttl = self.config.session_idle_ttl_s
        while True:
            idle_for = trio.current_time() - self._last_activity
            if not self.busy and idle_for >= ttl:
                log.info("closing idle session", extra={"user_id": self.user_id})
                self.close(CloseReason.IDLE, f"no stream, playback or call for {ttl:g} s")
                return
            # Whatever ends a stream or a playback also touches the session, so waking after a
            # full TTL (when busy) or when the quiet time would run out is enough.
            await trio.sleep(ttl if self.busy else ttl - idle_for)

    async def _follow_room_events(self) -> None:
        async for event in self._events_receive:
            if event.kind == "track_subscribed":
                self.mic.read_track(event.identity, event.track_sid, event.track)
            elif event.kind == "track_unsubscribed":
                self.mic.stop_reading(event.track_sid)
            elif event.kind == "participant_connected":
                self.mic.on_participant_named(event.identity)
            elif event.kind == "reconnecting":
                self.status.mark_disconnected(event.reason)
                log.warning("room connection lost, reconnecting", extra={"user_id": self.user_id})
            elif event.kind == "reconnected":
                self.status.connected = True
                log.info("room reconnected", extra={"user_id": self.user_id})
            elif event.kind == "disconnected":
                self.status.mark_disconnected(f"room disconnected: {event.reason}")
                if self.asked_to_move and event.reason == "DUPLICATE_IDENTITY":
                    # The client re-joined elsewhere, as a drain asked: the hand-over is done.
                    await self._flush_then_close_drained("moved to another bridge")
                    return
                self.close(CloseReason.ROOM_DISCONNECTED, f"room disconnected: {event.reason}")

    # --- what the registry asks of a session --------------------------------------------------------

    async def serve_stream(self, link: CloudLink) -> StreamEnd:
        """Run a StreamAudio call inside this session until it ends; return how it ended."""
        if self.closing:
            raise SessionNotFoundError(self.user_id)
        return await self.stream.serve(link, self._end_for_close)

    def _end_for_close(self) -> StreamEnd:
        reason, detail = self.close_reason, self.close_detail
        if reason is CloseReason.LEFT:
            return StreamEnd(StreamEndReason.LEFT, f"session left: {detail}")
        if reason is CloseReason.REPLACED:
            return StreamEnd(StreamEndReason.REPLACED, "session replaced by a new JoinRoom")
        if reason is CloseReason.SHUTDOWN:
            return StreamEnd(StreamEndReason.SHUTDOWN, "bridge shutting down")
        if reason is CloseReason.DRAINED:
            return StreamEnd(
                StreamEndReason.DRAINED, "bridge draining: join again to continue on another bridge"
            )
        return StreamEnd(StreamEndReason.SESSION_ENDED, f"session ended: {detail}")

    async def start_playback(self, request: PlaybackRequest) -> ActivePlayback:
        if self.closing:
            raise SessionNotFoundError(self.user_id)
        return await self.playbacks.start(request)

    async def stop_playbacks(self, request_id: str, track_id: int | None, reason: str) -> list[str]:
        return await self.playbacks.stop(request_id, track_id, reason)

    # --- reporting ---------------------------------------------------------------------------------

    def trio_task_count(self) -> int:
        """Trio tasks this session runs (its own included): what a session costs, and what must end."""
        if self._task is None or self.closed.is_set():
            return 0
        return tasks_under(self._task)

    def snapshot(self) -> SessionSnapshot:
        mic, tracks, stream = self.mic.snapshot(), self.tracks.snapshot(), self.stream.snapshot()
        counters = stream.counters
        return SessionSnapshot(
            data_packets=mic.data_packets,
            data_bytes=mic.data_bytes,
            data_packets_ignored=mic.data_packets_ignored,
            unnamed_released=mic.unnamed_released,
            unnamed_expired=mic.unnamed_expired,
            track_chunks=mic.track_chunks,
            chunks_to_cloud=counters.chunks_to_cloud,
            bytes_to_cloud=counters.bytes_to_cloud,
            chunks_from_cloud=counters.chunks_from_cloud,
            bytes_from_cloud=counters.bytes_from_cloud,
            rejected_chunks=counters.rejected_chunks,
            dropped_track_busy=tracks.dropped_track_busy,
            samples_skipped_catching_up=tracks.samples_skipped_catching_up,
            queue_dropped_chunks=mic.queue_dropped_chunks,
            queue_dropped_bytes=mic.queue_dropped_bytes,
            lost=mic.lost,
            reordered=mic.reordered,
            duplicates=mic.duplicates,
            queue_depth=mic.queue_depth,
            queued_bytes=mic.queued_bytes,
            has_stream=stream.attached,
            playing=len(self.playbacks),
            trio_tasks=self.trio_task_count(),
            pending_room_events=self.room.pending_events,
        )
