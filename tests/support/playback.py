"""Driving PlayAudio from tests: a call that records its events with their arrival times."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio

from bridge._gen.mentra.livekit.bridge import PlayAudioEvent, PlayAudioEventEventType, PlayAudioRequest

EventType = PlayAudioEventEventType


@dataclass(eq=False)
class PlaybackCall:
    stub: Any
    request: PlayAudioRequest
    events: list[tuple[float, PlayAudioEvent]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    started: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        """asyncio side: the server-streaming call, until its last event."""
        try:
            async for event in self.stub.play_audio(self.request):
                self.events.append((time.monotonic(), event))
                if event.type is EventType.STARTED:
                    self.started.set()
        finally:
            self.started.set()
            self.done.set()

    def times(self, kind: PlayAudioEventEventType) -> list[float]:
        return [t for t, event in self.events if event.type is kind]

    @property
    def types(self) -> list[PlayAudioEventEventType]:
        return [event.type for _, event in self.events]

    @property
    def terminal_count(self) -> int:
        """COMPLETED and FAILED events this call received: exactly 1 for every call."""
        return sum(1 for _, event in self.events if event.type in (EventType.COMPLETED, EventType.FAILED))

    @property
    def terminal(self) -> PlayAudioEvent:
        return self.events[-1][1]

    @property
    def code(self) -> str:
        return str(self.terminal.metadata.get("code", ""))
