"""A session's connection to its LiveKit room: connect, route callbacks, disconnect.

The SDK calls room event handlers as plain functions on the asyncio loop, and a slow handler stalls
every event of the room. So handlers here do O(1) work: data packets go straight to ``on_data`` (which
only queues), and the rare state events (tracks, participants, connectivity) are handed to the
session's Trio task through a memory channel. Every handler registered in ``connect`` is removed in
``aclose`` before the room disconnects, and a handler that still fires after its session stopped
listening is ignored and counted, never raised into the SDK.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from livekit import rtc

from ..errors import RoomConnectError
from ..redact import redact
from .ffi_filter import RoomDelivery, narrow_to_own_events
from .pacing import native_memory_gate

__all__ = [
    "RoomEvent",
    "RoomLink",
    "RoomPort",
    "cheap_to_inspect",
    "open_event_channel",
    "rtc_configuration",
]

log = logging.getLogger(__name__)

_SDK_CONNECT_ATTEMPTS = 3  # livekit 1.2.1's native connect logs "retrying... (1/3)"
_SDK_RETRY_SLACK_S = 2.0  # room for its back-off between attempts
CONNECT_TURN_WAIT_S = 0.25
"""How long a room connect waits for the one before it to end (rooms connect one at a time, see
``rtc_configuration``); after that it connects alongside, and a room still gathering gathers again.
Failover is a burst of joins, so the wait is short; but at 0.1 s, joins four at a time on a busy
bridge (bench.load, N=20) overlapped and left 5-11 descriptors per session, and those runs cost the
most CPU. At 0.25 s: 3.6, the bare SDK's figure, and the pool's SIGKILL mic gap p99 300-490 ms
against 295-395 ms at 0.1 s (tests/pool, 3-4 runs each; docs/design/lessons.md)."""


def cheap_to_inspect(method: Callable[..., None]) -> Callable[..., None]:
    """``method`` as a plain function that carries its signature.

    The SDK's ``EventEmitter.emit`` calls ``inspect.signature`` on every handler for every event (to
    pass it only as many arguments as it takes). For a bound method that rebuilds the signature each
    time (~11 µs here); a function with ``__signature__`` answers at once (~1 µs). On the bridge's
    busiest event, a data packet per phone every 100 ms, that was 8 % of its main thread at N=20
    (py-spy).
    """

    def handler(*args: Any) -> None:
        method(*args)

    handler.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    handler.__qualname__ = getattr(method, "__qualname__", handler.__qualname__)
    return handler


def rtc_configuration() -> rtc.RtcConfiguration:
    """The WebRTC configuration of every room the bridge joins: ICE candidates gathered once.

    With the SDK's default (``GATHER_CONTINUALLY``) a peer connection keeps gathering, and every new
    room in the process made the rooms already there open more UDP and listening TCP sockets: a
    session held 31 descriptors among 6 sessions and 45 among 11. Gathered once, a session holds 3
    at any count (the signal WebSocket and one UDP socket per local address). ICE servers stay the
    ones the LiveKit server sends (an empty list means those). It was reverted once for leaving
    sessions "deaf" after a LiveKit restart; that was the nameless phone (session/unnamed.py), not
    the gathering (docs/design/lessons.md).

    A connection still gathering when another room's connection starts gathers again (10 rooms
    joining at once held 16 descriptors each), so rooms connect one at a time (``_connect_turn``),
    each waiting at most ``CONNECT_TURN_WAIT_S``.
    """
    return rtc.RtcConfiguration(continual_gathering_policy=rtc.ContinualGatheringPolicy.GATHER_ONCE)


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _connect_turn() -> asyncio.Lock:
    """The running loop's lock that room connects take in turn (one per loop: tests run many)."""
    loop = asyncio.get_running_loop()
    turn = _TURNS.get(loop)
    if turn is None:
        turn = _TURNS[loop] = asyncio.Lock()
    return turn


DataHandler = Callable[[bytes, str], None]
"""Called with (payload, sender identity) for every data packet; the identity is empty when the SDK
cannot name the sender (not announced to us yet, or the server API: session/unnamed.py)."""


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """A room state change, as the session's event loop sees it."""

    kind: str
    """``track_subscribed``, ``track_unsubscribed``, ``participant_connected``,
    ``participant_disconnected``, ``reconnecting``, ``reconnected`` or ``disconnected``."""
    identity: str = ""
    track_sid: str = ""
    track: rtc.Track | None = None
    reason: str = ""


def open_event_channel() -> tuple[trio.MemorySendChannel[RoomEvent], trio.MemoryReceiveChannel[RoomEvent]]:
    # Unbounded on purpose: state events are few (joins, leaves, reconnects) and must never be
    # dropped or block the SDK's callback; data packets do not travel this way.
    return trio.open_memory_channel[RoomEvent](math.inf)


def disconnect_reason_name(reason: Any) -> str:
    try:
        return str(rtc.DisconnectReason.Name(reason))
    except (ValueError, TypeError):
        return str(reason)


class RoomPort(Protocol):
    """What a session uses of its room link (RoomLink; tests substitute a fake)."""

    @property
    def room(self) -> rtc.Room: ...
    @property
    def participant_id(self) -> str: ...
    @property
    def identity(self) -> str: ...
    @property
    def participant_count(self) -> int: ...
    @property
    def pending_events(self) -> int: ...
    @property
    def direct_data_packets(self) -> int: ...
    @property
    def room_name(self) -> str: ...
    @property
    def connect_pending(self) -> bool: ...
    def subscribed_audio_tracks(self) -> list[tuple[str, str, rtc.Track]]: ...
    def has_participant(self, identity: str) -> bool: ...
    async def connect(self, url: str, token: str, *, timeout_s: float) -> None: ...
    async def finish_abandoned_connect(self) -> None: ...
    async def aclose(self) -> None: ...


def _log_failed_disconnect(disconnecting: asyncio.Future[None]) -> None:
    """A disconnect its caller stopped waiting for: its failure is logged here, not lost."""
    if not disconnecting.cancelled() and (err := disconnecting.exception()) is not None:
        log.warning("room disconnect failed: %s", err)


class RoomLink:
    """Owns one ``rtc.Room`` for the lifetime of a session."""

    def __init__(self, *, on_data: DataHandler, events: trio.MemorySendChannel[RoomEvent]) -> None:
        self._on_data = on_data
        self._events = events
        self._room: rtc.Room | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._connect_timeout_s = 0.0
        self._connect_started = False
        """The SDK's connect has begun (not merely waiting for its turn)."""
        self._counted = False
        """This room is in the native-memory gate's count of connected rooms."""
        handlers: dict[str, Callable[..., None]] = {
            "data_received": self._handle_data,
            "track_subscribed": self._handle_track_subscribed,
            "track_unsubscribed": self._handle_track_unsubscribed,
            "participant_connected": self._handle_participant_connected,
            "participant_disconnected": self._handle_participant_disconnected,
            "reconnecting": self._handle_reconnecting,
            "reconnected": self._handle_reconnected,
            "disconnected": self._handle_disconnected,
        }
        self._handlers = {event: cheap_to_inspect(handler) for event, handler in handlers.items()}
        self._delivery: RoomDelivery | None = None
        """How the SDK delivers this room its events once narrowed to its own (ffi_filter.py)."""
        self.late_events = 0
        """Events that arrived after the session stopped listening (ignored)."""

    @property
    def events_filtered(self) -> bool:
        """Whether the SDK delivers this room only its own events (ffi_filter.py)."""
        return self._delivery is not None

    @property
    def direct_data_packets(self) -> int:
        """Data packets that reached the session without the room's listener task (ffi_filter.py)."""
        return self._delivery.direct if self._delivery is not None else 0

    @property
    def room(self) -> rtc.Room:
        if self._room is None:
            raise RuntimeError("room is not connected")
        return self._room

    @property
    def connected(self) -> bool:
        return self._room is not None and self._room.isconnected()

    @property
    def participant_id(self) -> str:
        return self._room.local_participant.sid if self._room is not None else ""

    @property
    def identity(self) -> str:
        return self._room.local_participant.identity if self._room is not None else ""

    @property
    def participant_count(self) -> int:
        """Participants in the room, the bridge included."""
        return len(self._room.remote_participants) + 1 if self._room is not None else 0

    @property
    def pending_events(self) -> int:
        """SDK events queued for this room's listener and not yet handled (0 when not known)."""
        queue = getattr(self._room, "_ffi_queue", None)  # private to the SDK; pinned version
        return queue.qsize() if isinstance(queue, asyncio.Queue) else 0

    @property
    def room_name(self) -> str:
        return self._room.name if self._room is not None else ""

    def has_participant(self, identity: str) -> bool:
        """Whether the room names this remote participant already (the SDK has had its announcement)."""
        return self._room is not None and identity in self._room.remote_participants

    def subscribed_audio_tracks(self) -> list[tuple[str, str, rtc.Track]]:
        """(identity, track sid, track) of remote audio tracks already subscribed."""
        found: list[tuple[str, str, rtc.Track]] = []
        for participant in self.room.remote_participants.values():
            for publication in participant.track_publications.values():
                track = publication.track
                if track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                    found.append((participant.identity, publication.sid, track))
        return found

    async def connect(self, url: str, token: str, *, timeout_s: float) -> None:
        """Connect (asyncio side). Raises RoomConnectError with a readable, secret-free message."""
        room = rtc.Room()  # binds to the running (trio-asyncio) loop: construct it here, not earlier
        for event, handler in self._handlers.items():
            room.on(event, handler)  # type: ignore[arg-type]
        self._room = room
        # The SDK makes up to _SDK_CONNECT_ATTEMPTS attempts, each bounded by connect_timeout:
        # split our budget between them so its own connect ends near ``timeout_s`` too.
        options = rtc.RoomOptions(
            auto_subscribe=True,
            connect_timeout=timeout_s / _SDK_CONNECT_ATTEMPTS,
            rtc_config=rtc_configuration(),
        )
        connecting = asyncio.ensure_future(self._connect_in_turn(room, url, token, options))
        self._connecting, self._connect_timeout_s = connecting, timeout_s
        try:
            # Shielded: if we are cancelled (a join timeout, a cancelled JoinRoom, shutdown), the
            # native side would finish connecting anyway and keep a participant nobody listens to.
            # The connect keeps running; the session hands it to finish_abandoned_connect.
            await asyncio.shield(connecting)
        except rtc.ConnectError as err:
            await self.aclose()
            # The server may quote a rejected token in its error: never pass it on.
            raise RoomConnectError(redact(f"could not connect to LiveKit at {url}: {err}", token)) from None
        except asyncio.CancelledError:
            raise
        except BaseException:
            await self.aclose()
            raise
        self._connecting = None
        self._counted = True
        native_memory_gate().rooms += 1
        self._delivery = narrow_to_own_events(room, self._on_data)

    async def _connect_in_turn(self, room: rtc.Room, url: str, token: str, options: rtc.RoomOptions) -> None:
        turn = _connect_turn()
        try:
            async with asyncio.timeout(CONNECT_TURN_WAIT_S):  # not wait_for (outbound.py says why)
                await turn.acquire()
            holds_turn = True
        except TimeoutError:  # a burst of joins: connect alongside rather than keep this one waiting
            holds_turn = False
            log.debug(
                "room connect did not get its turn within %g s; connecting alongside", CONNECT_TURN_WAIT_S
            )
        try:
            # Under fast churn: let the SDK tear down rooms already left before it builds another.
            await native_memory_gate().wait()
            self._connect_started = True
            await room.connect(url, token, options)
        finally:
            if holds_turn:
                turn.release()

    @property
    def connect_pending(self) -> bool:
        """A connect was cancelled on our side but may still complete natively."""
        return self._connecting is not None and not self._connecting.done()

    async def finish_abandoned_connect(self) -> None:
        """Wait (bounded) for a cancelled connect to end, then disconnect: no ghost participant."""
        connecting = self._connecting
        grace_s = 2 * self._connect_timeout_s + _SDK_RETRY_SLACK_S
        if connecting is not None and not self._connect_started:
            connecting.cancel()  # still waiting for its turn: the SDK never saw it
            grace_s = 1.0
        if connecting is not None:
            done, _ = await asyncio.wait({connecting}, timeout=grace_s)
            if not done:
                connecting.cancel()
                log.warning("a cancelled room connect did not end within %g s; abandoned it", grace_s)
            elif not connecting.cancelled():
                connecting.exception()  # retrieved: a failed connect needs no cleanup
            self._connecting = None
        await self.aclose()

    async def aclose(self) -> None:
        """Unregister every handler, then disconnect. Safe to call more than once."""
        room, self._room = self._room, None
        if self._delivery is not None:
            self._delivery.detach()
        if self._counted:
            self._counted = False
            native_memory_gate().rooms -= 1
        if room is None:
            return
        for event, handler in self._handlers.items():
            room.off(event, handler)  # type: ignore[arg-type]
        if room.isconnected():
            # Shielded: a session's cleanup is bounded (session/core.py) and may be cancelled while
            # the SDK disconnects; cut short, the leave may never reach the server, which then keeps
            # a participant nobody listens to. The disconnect finishes on its own instead.
            disconnecting = asyncio.ensure_future(room.disconnect())
            try:
                await asyncio.shield(disconnecting)
            except asyncio.CancelledError:
                disconnecting.add_done_callback(_log_failed_disconnect)  # nobody awaits it now
                raise

    # --- SDK callbacks: plain functions, O(1), never raise ------------------------------------------

    def _handle_data(self, packet: rtc.DataPacket) -> None:
        participant = packet.participant
        self._on_data(packet.data, participant.identity if participant is not None else "")

    def _emit(self, event: RoomEvent) -> None:
        try:
            self._events.send_nowait(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.late_events += 1

    def _handle_track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._emit(RoomEvent("track_subscribed", participant.identity, publication.sid, track))

    def _handle_track_unsubscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._emit(RoomEvent("track_unsubscribed", participant.identity, publication.sid))

    def _handle_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._emit(RoomEvent("participant_connected", participant.identity))

    def _handle_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self._emit(RoomEvent("participant_disconnected", participant.identity))

    def _handle_reconnecting(self) -> None:
        self._emit(RoomEvent("reconnecting", reason="signal connection lost, reconnecting"))

    def _handle_reconnected(self) -> None:
        self._emit(RoomEvent("reconnected"))

    def _handle_disconnected(self, reason: Any) -> None:
        self._emit(RoomEvent("disconnected", reason=disconnect_reason_name(reason)))
