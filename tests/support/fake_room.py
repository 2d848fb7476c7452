"""A room link without a room: the session's seam (``room_factory``) for tests that need no LiveKit.

It behaves like ``livekit_io.room.RoomLink`` as the session uses it: connect (or fail to), report
who it is, deliver data packets to the session's callback, send room events, disconnect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import trio

from bridge.errors import RoomConnectError
from bridge.livekit_io.room import DataHandler, RoomEvent


@dataclass(eq=False)
class FakeRoom:
    on_data: DataHandler
    events: trio.MemorySendChannel[RoomEvent]
    fail_connect: str = ""
    identity: str = ""
    room_name: str = "fake-room"
    participant_id: str = "PA_fake"
    participant_count: int = 2
    pending_events: int = 0
    direct_data_packets: int = 0
    connect_pending: bool = False
    connected: bool = False
    aclose_s: float = 0.0
    closed: int = 0
    connects: list[str] = field(default_factory=list)
    participants: set[str] = field(default_factory=set)
    """Remote participants the room names (a packet from anyone else comes without a sender)."""

    @property
    def room(self) -> Any:
        raise RuntimeError("a fake room has no LiveKit room: publishing needs the integration tests")

    async def connect(self, url: str, token: str, *, timeout_s: float) -> None:
        self.connects.append(url)
        if self.fail_connect:
            raise RoomConnectError(self.fail_connect)
        self.connected = True

    def subscribed_audio_tracks(self) -> list[tuple[str, str, Any]]:
        return []

    def has_participant(self, identity: str) -> bool:
        return identity in self.participants

    async def finish_abandoned_connect(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.aclose_s:
            await asyncio.sleep(self.aclose_s)  # a disconnect the SDK is slow to finish
        self.connected = False
        self.closed += 1

    # --- what a test does to it -----------------------------------------------------------------

    def packet(self, payload: bytes, identity: str) -> None:
        self.on_data(payload, identity)

    def emit(self, kind: str, reason: str = "", identity: str = "") -> None:
        self.events.send_nowait(RoomEvent(kind, identity=identity, reason=reason))


@dataclass(eq=False)
class FakeRooms:
    """A ``room_factory`` that remembers the rooms it made, by the order they were made."""

    fail_connect: str = ""
    made: list[FakeRoom] = field(default_factory=list)

    def __call__(self, on_data: DataHandler, events: trio.MemorySendChannel[RoomEvent]) -> FakeRoom:
        room = FakeRoom(on_data, events, fail_connect=self.fail_connect)
        self.made.append(room)
        return room
