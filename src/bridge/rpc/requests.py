"""Protobuf requests -> domain requests, validated in one place (and domain events -> protobuf).

Every handler turns its message into a domain value here before anything else sees it: required
fields, sizes (limits.py), track ids, volume, URLs and the room-server allow-list. A malformed
request raises InvalidRequestError (INVALID_ARGUMENT), a refused one NotAllowedError
(PERMISSION_DENIED), before any session is touched.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._gen.mentra.livekit.bridge import (
    JoinRoomRequest,
    LeaveRoomRequest,
    PlayAudioEvent,
    PlayAudioEventEventType,
    PlayAudioRequest,
    StopAudioRequest,
)
from ..config import BridgeConfig
from ..errors import InvalidRequestError, NotAllowedError
from ..limits import MAX_ID_CHARS, MAX_TOKEN_CHARS, MAX_URL_CHARS, check_length, clip
from ..playback import PlaybackEvent, PlaybackEventKind, PlaybackRequest
from ..room_url_policy import RoomUrlPolicy
from ..session import JoinRequest
from .stream_link import MAX_TRACK_ID

__all__ = ["RequestTranslator", "StopRequest", "play_audio_event"]

_ROOM_URL_SCHEMES = ("ws", "wss", "http", "https")
_AUDIO_URL_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class StopRequest:
    user_id: str
    request_id: str
    track_id: int | None
    reason: str


class RequestTranslator:
    def __init__(self, config: BridgeConfig) -> None:
        self._default_url = config.livekit_url
        self._room_urls = RoomUrlPolicy.parse(config.livekit_url_allow, always=(config.livekit_url,))

    @staticmethod
    def user_id(user_id: str) -> str:
        if not user_id:
            raise InvalidRequestError("user_id is required")
        return check_length("user_id", user_id, MAX_ID_CHARS)

    def join(self, message: JoinRoomRequest) -> JoinRequest:
        user_id = self.user_id(message.user_id)
        if not message.token:
            raise InvalidRequestError("token is required")
        check_length("room_name", message.room_name, MAX_ID_CHARS)
        check_length("target_identity", message.target_identity, MAX_ID_CHARS)
        check_length("token", message.token, MAX_TOKEN_CHARS)
        url = check_length("livekit_url", message.livekit_url, MAX_URL_CHARS) or self._default_url
        if not url:
            raise InvalidRequestError("livekit_url is empty and the bridge has no LIVEKIT_URL")
        parts = urlsplit(url)
        if parts.scheme not in _ROOM_URL_SCHEMES or not parts.hostname:
            raise InvalidRequestError(
                f"livekit_url must be a ws://, wss://, http:// or https:// URL, not {clip(url, 200)!r}"
            )
        if not self._room_urls.allows(url):
            raise NotAllowedError(
                f"livekit_url {clip(url, 200)!r} is not allowed on this bridge (BRIDGE_LIVEKIT_URL_ALLOW)"
            )
        return JoinRequest(
            user_id=user_id,
            url=url,
            token=message.token,
            room_name=message.room_name,
            target_identity=message.target_identity,
        )

    def leave(self, message: LeaveRoomRequest) -> tuple[str, str]:
        return self.user_id(message.user_id), clip(message.reason)

    def play(self, message: PlayAudioRequest) -> tuple[str, PlaybackRequest]:
        user_id = self.user_id(message.user_id)
        check_length("request_id", message.request_id, MAX_ID_CHARS)
        url = check_length("audio_url", message.audio_url, MAX_URL_CHARS)
        parts = urlsplit(url)
        if parts.scheme not in _AUDIO_URL_SCHEMES or not parts.hostname:
            raise InvalidRequestError("audio_url must be an http:// or https:// URL")
        # Unset volume means 1.0 (and clients of the older proto cannot send an explicit 0).
        gain = 1.0 if message.volume is None else message.volume
        if not (math.isfinite(gain) and 0.0 <= gain <= 10.0):
            raise InvalidRequestError(f"volume must be between 0 and 10, not {message.volume}")
        if not 0 <= message.track_id <= MAX_TRACK_ID:
            raise InvalidRequestError(f"track_id {message.track_id} is out of range (0..{MAX_TRACK_ID})")
        request = PlaybackRequest(
            request_id=message.request_id or f"play-{uuid.uuid4().hex[:12]}",
            url=url,
            volume=gain,
            track_id=message.track_id,
            stop_other=message.stop_other,
        )
        return user_id, request

    def stop(self, message: StopAudioRequest) -> StopRequest:
        return StopRequest(
            user_id=self.user_id(message.user_id),
            request_id=check_length("request_id", message.request_id, MAX_ID_CHARS),
            track_id=message.track_id,
            reason=clip(message.reason),
        )


_EVENT_TYPES = {
    PlaybackEventKind.STARTED: PlayAudioEventEventType.STARTED,
    PlaybackEventKind.PROGRESS: PlayAudioEventEventType.PROGRESS,
    PlaybackEventKind.COMPLETED: PlayAudioEventEventType.COMPLETED,
    PlaybackEventKind.FAILED: PlayAudioEventEventType.FAILED,
}


def play_audio_event(event: PlaybackEvent) -> PlayAudioEvent:
    """A playback event as the wire contract has it: FAILED carries ``error = "code: detail"`` and
    ``metadata["code"]``."""
    failed = event.kind is PlaybackEventKind.FAILED
    return PlayAudioEvent(
        type=_EVENT_TYPES[event.kind],
        request_id=event.request_id,
        duration_ms=event.duration_ms,
        position_ms=event.position_ms,
        error=f"{event.code}: {event.detail}" if failed else "",
        metadata={"code": event.code} if failed else {},
    )
