"""One user's session, split by direction: lifecycle (core), room -> cloud (the microphone path),
cloud -> room (published tracks), the attached StreamAudio call, and server-side playbacks."""

from .core import BridgeSession, RoomFactory
from .model import CloseReason, ConnectionStatus, JoinRequest, StreamEnd, StreamEndReason
from .playbacks import ActivePlayback
from .snapshot import COUNTER_FIELDS, SessionSnapshot
from .stream import CloudLink, StreamCounters

__all__ = [
    "COUNTER_FIELDS",
    "ActivePlayback",
    "BridgeSession",
    "CloseReason",
    "CloudLink",
    "ConnectionStatus",
    "JoinRequest",
    "RoomFactory",
    "SessionSnapshot",
    "StreamCounters",
    "StreamEnd",
    "StreamEndReason",
]
