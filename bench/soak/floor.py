"""The bare-SDK floor of bench.soak: the same session churn, on plain ``rtc.Room``s, no bridge.

    python -m bench.soak.floor   # started by bench.soak --floor; one JSON command on stdin

Each of K slots repeats: connect a room (auto-subscribe, a data handler that reads the sequence
byte), publish an audio track, capture 1 s of a 440 Hz tone in 100 ms frames in real time, hold
1-3 s, disconnect. That is what a bridge session does with the SDK in bench.soak's ``leave`` cycle,
without gRPC, Trio, queues or playback. The phones are bench.soak's own, in their rooms.

Every ``sample_every_s`` it prints one ``@@ `` JSON line with RSS, the heap split (bridge.memory),
live rooms and asyncio tasks; after the churn, the rooms are gone and ``gc.collect()`` has run, a
final line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import sys
import time
from typing import Any

import numpy as np
from livekit import rtc

from bench.lib import rss_mib, run_on_asyncio
from bridge.memory import heap_usage
from bridge.testing.synth import tone

_RATE = 48000


def _say(message: dict[str, Any]) -> None:
    print("@@ " + json.dumps(message), flush=True)


class FloorChurn:
    def __init__(self, command: dict[str, Any]) -> None:
        self.url: str = command["url"]
        self.tokens: list[str] = command["tokens"]
        self.seconds: float = command["seconds"]
        self.sample_every_s: float = command["sample_every_s"]
        self.random = random.Random(command.get("seed", 1))
        self.rooms = 0
        self.sessions_started = 0
        self.packets = 0
        self.errors: list[str] = []
        self.tone = (tone(440, 1.0, _RATE, amplitude=0.3)[:, 0] * 32767).astype(np.int16)

    def sample(self, started: float, phase: str) -> dict[str, Any]:
        heap = heap_usage()
        return {
            "t_s": time.monotonic() - started,
            "phase": phase,
            "rss_mib": rss_mib(os.getpid()),
            "rooms": self.rooms,
            "asyncio_tasks": len([t for t in asyncio.all_tasks() if not t.done()]),
            "heap": {
                "python_blocks": heap["python_blocks"],
                **{k.removeprefix("malloc_"): v / 2**20 for k, v in heap.items() if k != "python_blocks"},
            },
        }

    def on_data(self, packet: rtc.DataPacket) -> None:
        if packet.data:
            self.packets += 1

    async def session(self, token: str) -> None:
        room = rtc.Room()
        room.on("data_received", self.on_data)
        await asyncio.wait_for(room.connect(self.url, token, rtc.RoomOptions(auto_subscribe=True)), 15)
        self.rooms += 1
        self.sessions_started += 1
        source = rtc.AudioSource(_RATE, 1, queue_size_ms=200)
        try:
            track = rtc.LocalAudioTrack.create_audio_track("speaker", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await room.local_participant.publish_track(track, options)
            hold = self.random.uniform(1.0, 3.0)
            await asyncio.sleep(hold / 2)
            step = _RATE // 10
            for start in range(0, len(self.tone), step):
                chunk = self.tone[start : start + step]
                await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), _RATE, 1, len(chunk)))
            await asyncio.sleep(hold / 2)
        finally:
            await source.aclose()
            room.off("data_received", self.on_data)
            await room.disconnect()
            self.rooms -= 1

    async def slot(self, token: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                await self.session(token)
            except Exception as err:
                self.errors.append(f"{type(err).__name__}: {err}")
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.random.uniform(0.0, 0.5))

    async def run(self) -> None:
        started = time.monotonic()
        _say(self.sample(started, "idle"))

        async def sample_forever() -> None:
            while True:
                await asyncio.sleep(self.sample_every_s)
                _say(self.sample(started, "churn"))

        helpers = [asyncio.create_task(sample_forever())]
        deadline = started + self.seconds
        await asyncio.gather(*(self.slot(token, deadline) for token in self.tokens))
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await asyncio.sleep(2.0)  # the SDK's own tasks wind down
        gc.collect()
        final = self.sample(started, "final")
        final.update(sessions_started=self.sessions_started, packets=self.packets, errors=self.errors[:20])
        _say(final)


async def _main() -> None:
    command = json.loads(sys.stdin.readline())
    with contextlib.suppress(KeyboardInterrupt):
        await FloorChurn(command).run()


if __name__ == "__main__":
    run_on_asyncio(_main())
