"""Worker processes of bench.load: the simulated phones, and the bare-SDK floor.

    python -m bench.load.workers phones     # N phones (real participants), started by bench.load
                                            # (or, with the Go phones, only the ones that listen)
    python -m bench.load.workers floor      # N plain rtc.Rooms with a timestamp-reading handler

Both are plain asyncio and take JSON commands, one per line, on stdin; each command gets exactly one
answer line on stdout, prefixed with ``@@ `` (anything else on stdout is ignored by the driver). The
driver pins each worker to a core before it starts (see bench.lib.Children.spawn).

The packets and the talkback schedule are bench.load.traffic's. A listening phone records the wall
time of every quiet -> tone onset it hears, and bench.load.measure matches each burst's send time to
the first onset after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import traceback
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from bench.load.traffic import (
    HEADER,
    PERIOD_S,
    noise_body,
    silence_chunk,
    talkback_slots,
    ticks,
    tone_chunk,
)

ONSET_THRESHOLD = 4000
"""Peak (of int16 full scale) above which a received 10 ms frame counts as tone."""
QUIET_FRAMES_TO_REARM = 20
"""After a burst, this many quiet 10 ms frames before the next onset can be recorded."""
CONNECT_PARALLELISM = 4


def floor_rtc_configuration() -> rtc.RtcConfiguration:
    """The floor's WebRTC configuration: the bridge's (``bridge.livekit_io.room.rtc_configuration``,
    ICE candidates gathered once). Written out here rather than imported, because importing the
    ``bridge`` package loads the whole bridge into the floor, whose idle RSS is measured;
    bench.load checks that the two are equal before a sweep (``driver.check_floor_configuration``)."""
    return rtc.RtcConfiguration(continual_gathering_policy=rtc.ContinualGatheringPolicy.GATHER_ONCE)


Reply = dict[str, Any]


def _reply(message: Reply) -> None:
    sys.stdout.write("@@ " + json.dumps(message) + "\n")
    sys.stdout.flush()


async def _serve_commands(handlers: Mapping[str, Callable[[dict[str, Any]], Awaitable[Reply]]]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        name = command.get("cmd", "")
        try:
            reply = await handlers[name](command)
        except Exception as err:
            traceback.print_exc()
            reply = {"error": f"{name}: {type(err).__name__}: {err}"}
        _reply(reply)
        if name == "quit":
            return


async def _connect_all(
    specs: list[dict[str, Any]], connect: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    gate = asyncio.Semaphore(CONNECT_PARALLELISM)

    async def one(spec: dict[str, Any]) -> None:
        async with gate:
            await connect(spec)

    await asyncio.gather(*(one(spec) for spec in specs))


def _live_asyncio_tasks() -> int:
    return sum(1 for task in asyncio.all_tasks() if not task.done())


# --------------------------------------------------------------------------------------------
# phones
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Phone:
    index: int
    room_name: str
    identity: str
    token: str
    listen: bool
    send: bool = True
    """False for the listeners that go with the Go phones: they only listen to talkback."""
    room: rtc.Room | None = None
    sent_ns: array[int] = field(default_factory=lambda: array("q"))
    lag_ms: array[float] = field(default_factory=lambda: array("d"))
    """How late each send was against its schedule (the generator keeping up, or not)."""
    errors: int = 0
    onsets: list[tuple[str, int]] = field(default_factory=list)
    """(publisher identity, time_ns) of every tone onset heard."""
    readers: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class Phones:
    def __init__(self) -> None:
        self.phones: list[Phone] = []
        self.senders: list[asyncio.Task[None]] = []

    async def connect(self, command: dict[str, Any]) -> Reply:
        url = command["url"]
        self.phones = [Phone(**spec) for spec in command["phones"]]
        by_index = {phone.index: phone for phone in self.phones}
        started = time.monotonic()

        async def connect_one(spec: dict[str, Any]) -> None:
            phone = by_index[spec["index"]]
            room = rtc.Room()
            if phone.listen:
                room.on(
                    "track_subscribed",
                    lambda track, pub, part, p=phone: self._subscribed(p, track, pub, part),
                )
                room.on("track_unsubscribed", lambda track, pub, part, p=phone: self._unsubscribed(p, pub))
            # Only listening phones subscribe: decoding audio nobody measures would only load this core.
            await room.connect(url, phone.token, rtc.RoomOptions(auto_subscribe=phone.listen))
            phone.room = room

        await _connect_all(command["phones"], connect_one)
        loop = asyncio.get_running_loop()
        base = loop.time() + 0.2
        count = len(self.phones)
        for phone in self.phones:
            if not phone.send:
                continue
            # Real phones are not synchronised: spread the sends over the 100 ms period.
            phase = PERIOD_S * phone.index / max(1, count)
            self.senders.append(loop.create_task(self._send(phone, base + phase)))
        return {"connected": count, "connect_s": time.monotonic() - started}

    async def _send(self, phone: Phone, start: float) -> None:
        assert phone.room is not None
        loop = asyncio.get_running_loop()
        body = noise_body(phone.index)
        participant = phone.room.local_participant
        async for counter, due in ticks(start):
            lag = loop.time() - due
            now = time.time_ns()
            packet = bytes([counter & 0xFF]) + HEADER.pack(now, phone.index, counter) + body
            try:
                await participant.publish_data(packet, reliable=False)
            except Exception:
                phone.errors += 1
            phone.sent_ns.append(now)
            phone.lag_ms.append(lag * 1000)

    def _subscribed(self, phone: Phone, track: rtc.Track, publication: Any, participant: Any) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        task = asyncio.get_running_loop().create_task(self._listen(phone, track, participant.identity))
        old = phone.readers.pop(publication.sid, None)
        if old is not None:
            old.cancel()
        phone.readers[publication.sid] = task

    def _unsubscribed(self, phone: Phone, publication: Any) -> None:
        task = phone.readers.pop(publication.sid, None)
        if task is not None:
            task.cancel()

    async def _listen(self, phone: Phone, track: rtc.Track, identity: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1, capacity=200)
        loud, quiet = False, 0
        try:
            async for event in stream:
                now = time.time_ns()
                peak = int(np.abs(np.frombuffer(event.frame.data, dtype=np.int16)).max(initial=0))
                if peak >= ONSET_THRESHOLD:
                    if not loud:
                        phone.onsets.append((identity, now))
                        loud = True
                    quiet = 0
                else:
                    quiet += 1
                    if quiet >= QUIET_FRAMES_TO_REARM:
                        loud = False
        finally:
            await stream.aclose()

    async def report(self, command: dict[str, Any]) -> Reply:
        t0, t1 = int(command["t0"]), int(command["t1"])
        until = int(command.get("onsets_until", t1))
        sent: dict[int, int] = {}
        lags: list[float] = []
        onsets: list[list[Any]] = []
        errors = 0
        for phone in self.phones:
            first, last = bisect_left(phone.sent_ns, t0), bisect_right(phone.sent_ns, t1)
            sent[phone.index] = last - first
            lags.extend(phone.lag_ms[first:last])
            errors += phone.errors
            onsets.extend([phone.index, who, ns] for who, ns in phone.onsets if t0 <= ns <= until)
        return {"sent": sent, "lag_ms": lags, "errors": errors, "onsets": onsets}

    async def quit(self, _command: dict[str, Any]) -> Reply:
        for task in self.senders:
            task.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        for phone in self.phones:
            for task in phone.readers.values():
                task.cancel()
            await asyncio.gather(*phone.readers.values(), return_exceptions=True)
            if phone.room is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.room.disconnect(), 5)
        return {"ok": True}


# --------------------------------------------------------------------------------------------
# the floor: plain rtc.Rooms, a handler that only reads the timestamp
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FloorRoom:
    index: int
    room_name: str
    identity: str
    token: str
    talkback: bool
    room: rtc.Room | None = None
    records: list[tuple[int, int, int]] = field(default_factory=list)
    """(send ns, handler ns, counter) of every packet."""
    tone_ns: list[int] = field(default_factory=list)


class Floor:
    def __init__(self) -> None:
        self.rooms: list[FloorRoom] = []
        self.talkers: list[asyncio.Task[None]] = []
        self.sources: list[rtc.AudioSource] = []

    async def hello(self, _command: dict[str, Any]) -> Reply:
        return {"asyncio_tasks": _live_asyncio_tasks()}

    async def connect(self, command: dict[str, Any]) -> Reply:
        url = command["url"]
        self.rooms = [FloorRoom(**spec) for spec in command["rooms"]]
        started = time.monotonic()

        async def connect_one(spec: dict[str, Any]) -> None:
            entry = self.rooms[spec["index"]]
            records = entry.records
            unpack = HEADER.unpack_from

            def on_data(packet: rtc.DataPacket) -> None:
                # The floor's whole per-packet work: read the send time (and keep it for the report).
                now = time.time_ns()
                sent_ns, _phone, counter = unpack(packet.data, 1)
                records.append((sent_ns, now, counter))

            room = rtc.Room()
            room.on("data_received", on_data)
            # The bridge's own WebRTC configuration (ICE gathered once), so both sides do the same work.
            options = rtc.RoomOptions(auto_subscribe=True, rtc_config=floor_rtc_configuration())
            await room.connect(url, entry.token, options)
            entry.room = room

        for spec in command["rooms"]:  # one at a time, as the bridge connects rooms (livekit_io/room.py)
            await connect_one(spec)
        loop = asyncio.get_running_loop()
        talkers = [entry for entry in self.rooms if entry.talkback]
        base = loop.time() + 0.2
        for position, entry in enumerate(talkers):
            phase = PERIOD_S * position / max(1, len(talkers))
            self.talkers.append(loop.create_task(self._talk(entry, base + phase, command["talkback_mode"])))
        return {"connected": len(self.rooms), "connect_s": time.monotonic() - started}

    async def _talk(self, entry: FloorRoom, start: float, mode: str) -> None:
        """What the bridge does for a talkback session, done directly: 100 ms frames on one track."""
        assert entry.room is not None
        rate = 48000
        source = rtc.AudioSource(rate, 1, queue_size_ms=200)  # the bridge's BRIDGE_PUBLISH_QUEUE_MS
        self.sources.append(source)
        track = rtc.LocalAudioTrack.create_audio_track("speaker", source)
        await entry.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        tone, silence = tone_chunk(rate), silence_chunk(rate)
        async for is_tone in talkback_slots(
            max(start, asyncio.get_running_loop().time()), mode, entry.tone_ns
        ):
            data = tone if is_tone else silence
            await source.capture_frame(rtc.AudioFrame(data, rate, 1, rate // 10))

    async def report(self, command: dict[str, Any]) -> Reply:
        t0, t1 = int(command["t0"]), int(command["t1"])
        latencies: list[float] = []
        received: dict[int, int] = {}
        tones: list[list[int]] = []
        for entry in self.rooms:
            counters = set()
            for sent_ns, at_ns, counter in entry.records:
                if t0 <= sent_ns <= t1:
                    latencies.append((at_ns - sent_ns) / 1e6)
                    counters.add(counter)
            received[entry.index] = len(counters)
            tones.extend([entry.index, ns] for ns in entry.tone_ns if t0 <= ns <= t1)
        return {
            "latency_ms": latencies,
            "received": received,
            "tones": tones,
            "asyncio_tasks": _live_asyncio_tasks(),
        }

    async def quit(self, _command: dict[str, Any]) -> Reply:
        for task in self.talkers:
            task.cancel()
        await asyncio.gather(*self.talkers, return_exceptions=True)
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.aclose()
        # All at once and bounded as a whole: one after another, 60 rooms of a saturated floor took
        # longer than the driver waits for the answer.
        rooms = [entry.room for entry in self.rooms if entry.room is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.disconnect() for r in rooms), return_exceptions=True), 10
            )
        return {"ok": True}


async def _main(role: str) -> None:
    if role == "phones":
        phones = Phones()
        handlers = {"connect": phones.connect, "report": phones.report, "quit": phones.quit}
    elif role == "floor":
        floor = Floor()
        handlers = {
            "hello": floor.hello,
            "connect": floor.connect,
            "report": floor.report,
            "quit": floor.quit,
        }
    else:
        raise SystemExit(f"unknown role {role!r} (phones or floor)")
    await _serve_commands(handlers)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    asyncio.run(_main(sys.argv[1]))
