"""All live sessions, by user id: join (and replace), leave, look up, close all.

Sessions run as tasks of one "sessions" nursery owned by the app. JoinRoom for a user who already has
a session closes the old one and waits until it is fully torn down before connecting the new one
(a per-user lock serialises concurrent joins of the same user, never those of different users).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from .capacity import default_max_sessions
from .clock import now_ms
from .config import BridgeConfig
from .errors import CapacityError, RoomConnectError, SessionNotFoundError, ShuttingDownError
from .limits import clip
from .metrics import BridgeMetrics
from .playback import PlaybackRequest, PlaybackServices
from .session import (
    ActivePlayback,
    BridgeSession,
    CloseReason,
    CloudLink,
    JoinRequest,
    RoomFactory,
    SessionSnapshot,
    StreamEnd,
)

__all__ = ["JoinOutcome", "SessionRegistry", "Tombstone"]

log = logging.getLogger(__name__)

MOVE_GRACE_S = 10.0
"""How long a drain waits for a client it asked to re-join elsewhere (AudioChunk.notice "draining")
before it hands the session over itself. A re-join through the proxy takes a JoinRoom on another
bridge: 0.1-0.5 s on a quiet loopback, up to 2.8 s when 17 re-join at once at load average 9 (the
pool's rolling restart), where a 3 s grace cut some short and gave them a gap. A late one still
works: the client keeps re-joining after the hand-over ends its stream."""

_TOMBSTONES = 10_000
"""How many ended sessions GetStatus still remembers (oldest forgotten first)."""

_TOMBSTONE_BYTES = 4 * 1024 * 1024
"""...and how much memory they may take, estimated per entry (strings are bounded by limits.py)."""

_TOMBSTONE_OVERHEAD_BYTES = 300
"""An entry's dict slot, Tombstone object and int, beyond its two strings (measured: ~250 B)."""


@dataclass(frozen=True)
class JoinOutcome:
    session: BridgeSession | None
    error: str = ""
    replaced: bool = False


@dataclass(frozen=True)
class Tombstone:
    """What GetStatus reports for a user whose session has ended."""

    at_ms: int
    reason: str


class SessionRegistry:
    """Sessions by user: join (and replace), look up, leave, drain and close them; what ended."""

    def __init__(
        self,
        config: BridgeConfig,
        nursery: trio.Nursery,
        playback: PlaybackServices,
        metrics: BridgeMetrics,
        *,
        room_factory: RoomFactory | None = None,
    ) -> None:
        self._config = config
        self._nursery = nursery
        self.playback = playback
        self.metrics = metrics
        self._room_factory = room_factory
        self._sessions: dict[str, BridgeSession] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._tombstones: OrderedDict[str, Tombstone] = OrderedDict()
        self._tombstone_bytes = 0
        self.shutting_down = False
        self.draining = False
        self.capacity = config.max_sessions or default_max_sessions()
        self._joining = 0
        """Joins past the capacity check and not yet in ``_sessions`` (they hold a place too)."""
        self.sessions_started = 0
        self.sessions_failed_to_join = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[BridgeSession]:
        return list(self._sessions.values())

    def snapshots(self) -> Iterable[SessionSnapshot]:
        return [session.snapshot() for session in self._sessions.values()]

    def get(self, user_id: str, *, touch: bool = True) -> BridgeSession:
        """The user's live session. ``touch`` resets its idle TTL: calls that act on the session do;
        read-only ones (GetStatus) do not, so a cloud polling status keeps no zombie alive."""
        session = self._sessions.get(user_id)
        if session is None or session.closing:
            raise SessionNotFoundError(user_id)
        if touch:
            session.touch()
        return session

    def find(self, user_id: str) -> BridgeSession | None:
        """The user's session, closing or not (GetStatus reports a closing one as it ends)."""
        return self._sessions.get(user_id)

    def tombstone(self, user_id: str) -> Tombstone | None:
        return self._tombstones.get(user_id)

    async def join(self, request: JoinRequest) -> JoinOutcome:
        user_id = request.user_id
        if self.shutting_down:
            raise ShuttingDownError("bridge shutting down")
        if self.draining:
            raise ShuttingDownError("bridge draining: join another bridge")
        lock = self._locks.setdefault(user_id, trio.Lock())
        try:
            async with lock:
                old = self._sessions.get(user_id)
                if old is None:
                    self._take_place()  # a replacement takes the place of the session it replaces
                self._joining += 1
                try:
                    return await self._connect(request, old)
                finally:
                    self._joining -= 1
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(user_id, None)

    def _take_place(self) -> None:
        if len(self._sessions) + self._joining >= self.capacity:
            self.metrics.joins.labels("full").inc()
            raise CapacityError(
                f"bridge full: it holds {self.capacity} sessions (BRIDGE_MAX_SESSIONS); join another bridge"
            )

    def not_ready_reason(self) -> str:
        """Why this bridge takes no new session now, or "" when it does (``/readyz``)."""
        if self.shutting_down:
            return "shutting down"
        if self.draining:
            return "draining"
        if self.full:
            return f"full: {len(self._sessions)} of {self.capacity} sessions"
        return ""

    @property
    def full(self) -> bool:
        return len(self._sessions) + self._joining >= self.capacity

    async def _connect(self, request: JoinRequest, old: BridgeSession | None) -> JoinOutcome:
        user_id, replaced = request.user_id, old is not None
        if old is not None:
            await old.aclose(CloseReason.REPLACED, "replaced by a new JoinRoom")
        options = {} if self._room_factory is None else {"room_factory": self._room_factory}
        session = BridgeSession(
            request, self._config, self.playback, on_closed=self._forget, background=self._nursery, **options
        )
        try:
            await self._nursery.start(session.run)
        except (RoomConnectError, trio.TooSlowError) as err:
            timed_out = (
                f"could not connect to LiveKit at {request.url}: "
                f"timed out after {self._config.join_timeout_s:g} s"
            )
            message = str(err) if isinstance(err, RoomConnectError) else timed_out
            return self._join_failed(user_id, message, replaced)
        except RuntimeError:
            # The session was closed while connecting (shutdown): it never started.
            raise ShuttingDownError("bridge shutting down") from None
        except Exception as err:  # a bug, or the SDK failing in a way we did not foresee
            log.exception("join failed unexpectedly", extra={"user_id": user_id})
            return self._join_failed(user_id, f"could not join: {type(err).__name__}", replaced)
        self._sessions[user_id] = session
        self.sessions_started += 1
        self.metrics.joins.labels("replaced" if replaced else "ok").inc()
        log.info("session joined", extra={"user_id": user_id, "replaced": replaced})
        return JoinOutcome(session, replaced=replaced)

    def _join_failed(self, user_id: str, message: str, replaced: bool) -> JoinOutcome:
        self.sessions_failed_to_join += 1
        self.metrics.joins.labels("failed").inc()
        log.warning("join failed: %s", message, extra={"user_id": user_id})
        return JoinOutcome(None, error=message, replaced=replaced)

    async def leave(self, user_id: str, reason: str = "") -> None:
        session = self.get(user_id)
        await session.aclose(CloseReason.LEFT, reason or "LeaveRoom")

    async def serve_stream(self, link: CloudLink) -> StreamEnd:
        if self.shutting_down:
            raise ShuttingDownError("bridge shutting down")
        return await self.get(link.user_id).serve_stream(link)

    async def play(self, user_id: str, request: PlaybackRequest) -> ActivePlayback:
        return await self.get(user_id).start_playback(request)

    async def stop_audio(self, user_id: str, request_id: str, track_id: int | None, reason: str) -> list[str]:
        return await self.get(user_id).stop_playbacks(request_id, track_id, reason)

    async def drain(self, timeout_s: float, cut_short: trio.Event) -> None:
        """Take no new sessions; once none of a session's playbacks is playing, ask its client to
        re-join elsewhere while the session still delivers (make-before-break: the client's new
        session replaces this one in the room), or hand it over at once to a client that does not
        understand the notice. A session still here ``MOVE_GRACE_S`` after the notice is handed over,
        and every one left at ``timeout_s`` (or when ``cut_short`` is set) at once."""
        self.draining = True
        log.info("draining %d sessions (at most %g s)", len(self._sessions), timeout_s)
        told: dict[BridgeSession, float] = {}
        async with trio.open_nursery() as handovers:

            def hand_over(session: BridgeSession) -> None:
                if not session.closing:
                    handovers.start_soon(session.hand_over, name=f"hand_over:{session.user_id}")

            with trio.move_on_after(timeout_s):
                while self._sessions and not cut_short.is_set():
                    now = trio.current_time()
                    for session in self.sessions():
                        if session.playing or session.closing:
                            continue
                        if session in told:
                            if now - told[session] >= MOVE_GRACE_S:
                                hand_over(session)
                        elif session.ask_to_move():
                            told[session] = now
                        else:
                            hand_over(session)
                    # Playbacks end on their own schedule; a short poll is simpler than a
                    # registry-wide "something ended" event and costs nothing measurable.
                    with trio.move_on_after(0.05):
                        await cut_short.wait()
            for session in self.sessions():
                hand_over(session)

    async def close_all(self, reason: CloseReason, timeout_s: float) -> None:
        """Close every session and wait (at most ``timeout_s``) until each is torn down."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.close(reason)
        with trio.move_on_after(timeout_s):
            for session in sessions:
                await session.closed.wait()

    def _forget(self, session: BridgeSession) -> None:
        if self._sessions.get(session.user_id) is session:  # it had joined (not a failed join)
            del self._sessions[session.user_id]
            reason = session.close_reason.value if session.close_reason is not None else "unknown"
            self.metrics.session_ended(session.snapshot(), reason)
        self._drop_tombstone(session.user_id)
        if session.close_reason is not CloseReason.REPLACED:
            tombstone = Tombstone(
                at_ms=session.status.last_disconnect_at_ms or now_ms(), reason=clip(session.close_detail)
            )
            self._tombstones[session.user_id] = tombstone
            self._tombstone_bytes += _tombstone_size(session.user_id, tombstone)
            while len(self._tombstones) > _TOMBSTONES or self._tombstone_bytes > _TOMBSTONE_BYTES:
                self._drop_tombstone(next(iter(self._tombstones)))

    def _drop_tombstone(self, user_id: str) -> None:
        tombstone = self._tombstones.pop(user_id, None)
        if tombstone is not None:
            self._tombstone_bytes -= _tombstone_size(user_id, tombstone)

    @property
    def tombstone_bytes(self) -> int:
        return self._tombstone_bytes


def _tombstone_size(user_id: str, tombstone: Tombstone) -> int:
    return _TOMBSTONE_OVERHEAD_BYTES + len(user_id.encode()) + len(tombstone.reason.encode())
