"""What a session is asked for and how it ends: plain values, shared by the session's parts and
read by the registry and the RPC layer (which maps them to gRPC statuses; nothing here knows gRPC)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..clock import now_ms

__all__ = ["CloseReason", "ConnectionStatus", "JoinRequest", "StreamEnd", "StreamEndReason"]


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


class StreamEndReason(enum.Enum):
    """Why a StreamAudio call ended. The first three are clean ends (the client should not re-join)."""

    LEFT = "left"
    REPLACED = "replaced"
    SUPERSEDED = "superseded"
    DRAINED = "drained"
    """The bridge is draining: join again (another bridge takes the session)."""
    SHUTDOWN = "shutdown"
    SESSION_ENDED = "session_ended"
    """The room was lost, the session idled out or failed."""
    BAD_AUDIO = "bad_audio"
    TRACK_UNPUBLISHABLE = "track_unpublishable"
    REFUSED_BY_TRANSPORT = "refused_by_transport"
    """The RPC layer refused what the cloud sent (e.g. an oversized message); ``cause`` says how."""
    BROKEN = "broken"
    """The cloud's connection broke, or a bug in the stream's tasks."""

    @property
    def clean(self) -> bool:
        return self in (StreamEndReason.LEFT, StreamEndReason.REPLACED, StreamEndReason.SUPERSEDED)


@dataclass(frozen=True)
class StreamEnd:
    reason: StreamEndReason
    message: str
    cause: BaseException | None = None


@dataclass
class ConnectionStatus:
    connected: bool = False
    last_disconnect_at_ms: int = 0
    last_disconnect_reason: str = ""

    def mark_disconnected(self, reason: str) -> None:
        self.connected = False
        self.last_disconnect_at_ms = now_ms()
        self.last_disconnect_reason = reason
