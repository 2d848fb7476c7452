"""The bridge's error tree.

::

    BridgeError                     expected failures, each answered to the cloud, never a crash
    ├── InvalidRequestError         a malformed request        -> INVALID_ARGUMENT
    ├── NotAllowedError             refused by configuration   -> PERMISSION_DENIED
    ├── SessionNotFoundError        no session for the user    -> NOT_FOUND (or success=false, per contract)
    ├── RoomConnectError            JoinRoom could not connect -> success=false + error
    ├── AudioFormatError            cloud PCM we cannot use    -> INVALID_ARGUMENT on the stream
    ├── TransportRefusedError       the RPC layer refused a message (size) -> its own status
    ├── ShuttingDownError           the bridge is stopping     -> UNAVAILABLE
    └── CapacityError               the bridge is full         -> RESOURCE_EXHAUSTED

``StartupError`` is apart: the bridge cannot start (a port in use, a certificate that does not load),
and the CLI prints it as one line naming the setting to fix.

Anything else that escapes a session is a bug: it is logged with its traceback and counted, and it
ends only that session.
"""

from __future__ import annotations

__all__ = [
    "AudioFormatError",
    "BridgeError",
    "CapacityError",
    "InvalidRequestError",
    "NotAllowedError",
    "RoomConnectError",
    "SessionNotFoundError",
    "ShuttingDownError",
    "StartupError",
    "TransportRefusedError",
]


class BridgeError(Exception):
    """Base of every expected failure; ``str(err)`` is the message the cloud sees."""


class InvalidRequestError(BridgeError):
    """The request is malformed (a missing field, an impossible value)."""


class NotAllowedError(BridgeError):
    """Well-formed, but this bridge's configuration refuses it (e.g. a room server not on the list)."""


class SessionNotFoundError(BridgeError):
    """The user has no session on this bridge."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"session not found for user {user_id}")
        self.user_id = user_id


class RoomConnectError(BridgeError):
    """JoinRoom could not connect to the room (bad token, unreachable server, timeout)."""


class AudioFormatError(BridgeError):
    """Cloud PCM that cannot be published (odd length, unsupported rate or channel count)."""


class TransportRefusedError(BridgeError):
    """The RPC layer refused what the cloud sent on a stream; ``cause`` is its own error, which it
    answers with (the domain never looks inside)."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class ShuttingDownError(BridgeError):
    """The bridge is shutting down and takes no new sessions or streams."""


class CapacityError(BridgeError):
    """The bridge holds as many sessions as it may (``BRIDGE_MAX_SESSIONS``): join another one."""


class StartupError(Exception):
    """The bridge cannot start; ``str(err)`` names the cause and the setting to change."""
