"""Size limits on what a caller can make the bridge keep: every string it stores is bounded.

A gRPC message is already at most ``BRIDGE_MAX_MESSAGE_BYTES``; these bound the fields the bridge
keeps for longer than a call (session keys, tombstones, playback ids), so memory per session and per
ended session is a known number (docs/design/security.md).
"""

from __future__ import annotations

from .errors import InvalidRequestError

__all__ = ["MAX_ID_CHARS", "MAX_REASON_CHARS", "MAX_TOKEN_CHARS", "MAX_URL_CHARS", "check_length", "clip"]

MAX_ID_CHARS = 256
"""user_id, request_id, room_name, target_identity."""

MAX_URL_CHARS = 8192
"""audio_url, livekit_url."""

MAX_TOKEN_CHARS = 16 * 1024
"""A LiveKit JWT (grants and metadata included) is a few KiB at most."""

MAX_REASON_CHARS = 256
"""Free-text reasons (LeaveRoom, StopAudio) are kept this long; longer ones are cut, not refused."""


def check_length(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidRequestError(f"{field} is {len(value)} characters long; the limit is {limit}")
    return value


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
