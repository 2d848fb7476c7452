"""A short soak: sessions join and leave continuously; afterwards the bridge has exactly its idle tasks.

The bridge runs as a subprocess (``python -m bridge``, as deployed: its RSS and task counts are its
own); this test is the driver, on trio-asyncio: phones (real participants, one room each, a lossy
100 ms packet every 100 ms), a loopback HTTP server for PlayAudio, and a cloud client keeping
``SLOTS`` session slots churning for ``CHURN_S``. Every session path is exercised: LeaveRoom, a
dropped stream reaped by the idle TTL, a replacing JoinRoom, playbacks that complete, are stopped, or
are cut by LeaveRoom. ``python -m bench.soak`` runs the same kind of churn for 10 minutes, with the
heap split and a bare-SDK comparison; this test shares no code with it.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import trio
from grpclib.const import Status
from livekit import rtc
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    HealthCheckRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
    PlayAudioRequest,
    StopAudioRequest,
)
from bridge.testing.cloud import CloudStream
from bridge.testing.devserver import LocalLiveKitServer
from bridge.testing.synth import encode_wav, tone
from support.bridge_process import BridgeProcess, bridge_process, connect_phone, microphone
from support.media_server import MediaServer
from support.playback import PlaybackCall

pytestmark = pytest.mark.livekit

CHURN_S = 30.0
SLOTS = 4
SAMPLE_EVERY_S = 2.0
IDLE_TTL_S = 2.0
WARMUP_S = min(60.0, CHURN_S / 5)
"""Samples before this are left out of the RSS fit (allocator pools and the SDK's runtime grow first)."""
KINDS = ("leave", "drop_stream", "replace", "play_complete", "play_stop", "play_leave")
RPC_TIMEOUT_S = 20.0
CYCLE_TIMEOUT_S = 60.0
TEST_BOUND_S = CHURN_S + CYCLE_TIMEOUT_S + 60.0
"""The whole test: the churn, the slowest last cycle, start-up, the TTL reaping and settling."""
MIN_SESSIONS = 3 * SLOTS
"""Sessions the churn must have started at least (seen: ~40 in 30 s with 4 slots)."""
RSS_GROWTH_BOUND_MIB = 32.0
"""Growth of the bridge's RSS over the fitted part of the churn (a least-squares line). Seen: 2-6 MiB;
a leak of 1 MiB per session (~40 sessions start in that span) goes past it."""
RSS_AFTER_BOUND_MIB = 96.0
"""RSS after every session left minus RSS before the first one (the SDK's native runtime starts with
the first room, ~20-30 MiB, and stays)."""


# --------------------------------------------------------------------------------------------
# the bridge as a subprocess
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What one HealthCheck of the bridge process says, as numbers."""

    trio_tasks: int
    asyncio_tasks: int
    sessions: int
    streams: int
    sessions_started: int
    joins_failed: int

    @property
    def tasks(self) -> tuple[int, int]:
        return self.trio_tasks, self.asyncio_tasks


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class SoakedBridge(BridgeProcess):
    """The bridge process with what the soak reads of it: RSS and HealthCheck's counters."""

    @property
    def rss_mib(self) -> float:
        return _rss_mib(self.process.pid)

    async def health(self) -> Health:
        response = await aio_as_trio(self.stub.health_check)(HealthCheckRequest(), timeout=5)
        meta = dict(response.metadata)
        return Health(
            trio_tasks=int(meta["trio_tasks"]),
            asyncio_tasks=int(meta["asyncio_tasks"]),
            sessions=response.active_sessions,
            streams=response.active_streams,
            sessions_started=int(meta["sessions_started"]),
            joins_failed=int(meta["joins_failed"]),
        )

    async def settled_health(self, timeout_s: float = 10.0) -> Health:
        """HealthCheck until the task counts stop changing (three equal readings 0.2 s apart)."""
        previous, same = await self.health(), 0
        with trio.move_on_after(timeout_s):
            while same < 2:
                await trio.sleep(0.2)
                current = await self.health()
                same = same + 1 if current.tasks == previous.tasks else 0
                previous = current
        return previous

    async def wait_tasks(self, expected: tuple[int, int], timeout_s: float) -> Health:
        """Poll until the task counts equal ``expected`` (bounded); returns the last reading."""
        current = await self.health()
        with trio.move_on_after(timeout_s):
            while current.tasks != expected:
                await trio.sleep(0.25)
                current = await self.health()
        return current


# --------------------------------------------------------------------------------------------
# the churn (cloud side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t_s: float
    phase: str
    rss_mib: float
    health: Health


@dataclass(eq=False)
class Churn:
    bridge: SoakedBridge
    livekit: LocalLiveKitServer
    media: MediaServer
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    random: random.Random = field(default_factory=lambda: random.Random(1))
    cycles: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    joins: int = 0
    chunks_to_cloud: int = 0

    def room(self, slot: int) -> str:
        return f"soak-{self.run_id}-{slot}"

    @staticmethod
    def user(slot: int) -> str:
        return f"soak-user-{slot}"

    async def join(self, slot: int) -> None:
        request = JoinRoomRequest(
            user_id=self.user(slot),
            room_name=self.room(slot),
            token=self.livekit.token(f"bridge-soak-{slot}", self.room(slot)),
            target_identity=f"phone-soak-{slot}",
        )
        response = await aio_as_trio(self.bridge.stub.join_room)(request, timeout=RPC_TIMEOUT_S)
        if not response.success:
            raise RuntimeError(f"JoinRoom failed: {response.error}")
        self.joins += 1

    async def leave(self, slot: int) -> None:
        request = LeaveRoomRequest(user_id=self.user(slot), reason="soak")
        response = await aio_as_trio(self.bridge.stub.leave_room)(request, timeout=RPC_TIMEOUT_S)
        if not response.success:
            raise RuntimeError(f"LeaveRoom failed: {response.error}")

    async def open_stream(self, calls: trio.Nursery, slot: int) -> CloudStream:
        stream = CloudStream(self.bridge.channel, self.user(slot))
        calls.start_soon(aio_as_trio(stream.run))
        with trio.fail_after(RPC_TIMEOUT_S):
            await stream.opened.wait()
        return stream

    async def finish_stream(self, stream: CloudStream) -> None:
        with trio.fail_after(RPC_TIMEOUT_S):
            await stream.ended.wait()
        self.chunks_to_cloud += len(stream.received)
        self.outcomes[f"stream {stream.status.name if stream.status else stream.message}"] += 1
        if stream.status is not Status.OK:
            raise RuntimeError(f"stream ended with {stream.status} {stream.message!r}, expected OK")

    async def talk(self, stream: CloudStream, seconds: float) -> None:
        """``seconds`` of a 440 Hz tone on track 0 in 100 ms chunks, in real time."""
        samples = (tone(440, seconds, 16000, amplitude=0.3)[:, 0] * 32767).astype(np.int16)
        for start in range(0, len(samples), 1600):
            chunk = AudioChunk(
                pcm_data=samples[start : start + 1600].tobytes(), sample_rate=16000, channels=1
            )
            await aio_as_trio(stream.send)(chunk)
            await trio.sleep(0.1)

    async def play(self, calls: trio.Nursery, slot: int, path: str, request_id: str, then: str = "") -> str:
        """PlayAudio and its events to the end; ``then`` = ``stop``/``leave`` after STARTED."""
        request = PlayAudioRequest(
            user_id=self.user(slot), request_id=request_id, audio_url=self.media.base_url + path
        )
        call = PlaybackCall(self.bridge.stub, request)
        calls.start_soon(aio_as_trio(call.run))
        if then:
            await call.started.wait()
            if then == "stop":
                stop = StopAudioRequest(user_id=self.user(slot), request_id=request_id, reason="soak")
                response = await aio_as_trio(self.bridge.stub.stop_audio)(stop, timeout=RPC_TIMEOUT_S)
                if not response.success:
                    raise RuntimeError(f"StopAudio failed: {response.error}")
            else:
                await self.leave(slot)
        await call.done.wait()
        terminal = str(call.terminal.type.name) + (f" {call.code}" if call.terminal.error else "")
        self.outcomes[f"playback {terminal}"] += 1
        return terminal

    async def cycle(self, slot: int, kind: str, serial: int) -> None:
        hold = self.random.uniform(1.0, 3.0)
        request_id = f"soak-{slot}-{serial}"
        async with trio.open_nursery() as calls:
            if kind == "leave":
                await self.join(slot)
                stream = await self.open_stream(calls, slot)
                await trio.sleep(hold / 2)
                await self.talk(stream, 1.0)
                await trio.sleep(hold / 2)
                await self.leave(slot)
                await self.finish_stream(stream)
            elif kind == "drop_stream":
                await self.join(slot)
                stream = await self.open_stream(calls, slot)
                await trio.sleep(hold)
                calls.cancel_scope.cancel()  # the cloud goes away mid-call: RST_STREAM
            elif kind == "replace":
                await self.join(slot)
                first = await self.open_stream(calls, slot)
                await trio.sleep(hold / 2)
                await self.join(slot)  # the same user again: the old session is torn down first
                await self.finish_stream(first)
                second = await self.open_stream(calls, slot)
                await trio.sleep(hold / 2)
                await self.leave(slot)
                await self.finish_stream(second)
            elif kind == "play_complete":
                await self.join(slot)
                stream = await self.open_stream(calls, slot)
                terminal = await self.play(calls, slot, "/short.wav", request_id)
                if terminal != "COMPLETED":
                    raise RuntimeError(f"a 0.5 s playback ended with {terminal}")
                await self.leave(slot)
                await self.finish_stream(stream)
            elif kind == "play_stop":
                await self.join(slot)
                terminal = await self.play(calls, slot, "/long.wav", request_id, then="stop")
                if terminal != "FAILED stopped":
                    raise RuntimeError(f"a stopped playback ended with {terminal}")
                await self.leave(slot)
            elif kind == "play_leave":
                await self.join(slot)
                stream = await self.open_stream(calls, slot)
                terminal = await self.play(calls, slot, "/long.wav", request_id, then="leave")
                if terminal != "FAILED session_closed":
                    raise RuntimeError(f"a playback cut by LeaveRoom ended with {terminal}")
                await self.finish_stream(stream)
            else:
                raise ValueError(kind)
        if kind == "drop_stream":
            self.chunks_to_cloud += len(stream.received)
            self.outcomes["stream dropped by the client"] += 1
            # No call for this user now: the idle TTL must reap it. GetStatus is read-only (it does
            # not reset the TTL), so polling it watches for the reaping without delaying it. (While
            # the reaped session is still cleaning up, GetStatus answers with the tombstone of this
            # user's previous session: test_lifecycle pins that; here we wait for the reaping's own.)
            dropped_at = trio.current_time()
            with trio.move_on_after(IDLE_TTL_S + 5.0):
                while (
                    status := await aio_as_trio(self.bridge.stub.get_status)(
                        BridgeStatusRequest(user_id=self.user(slot)), timeout=RPC_TIMEOUT_S
                    )
                ).connected or "no stream, playback or call" not in status.last_disconnect_reason:
                    await trio.sleep(0.1)
            if status.connected or "no stream, playback or call" not in status.last_disconnect_reason:
                raise RuntimeError("the idle TTL did not close a session whose stream was dropped")
            if trio.current_time() - dropped_at < IDLE_TTL_S - 0.2:
                raise RuntimeError("a session whose stream was dropped was reaped before its idle TTL")
            self.outcomes[f"reaped: {status.last_disconnect_reason}"] += 1

    async def slot(self, slot: int, deadline: float) -> None:
        serial = 0
        while trio.current_time() < deadline:
            kind = KINDS[(slot + serial) % len(KINDS)]
            try:
                with trio.fail_after(CYCLE_TIMEOUT_S):
                    await self.cycle(slot, kind, serial)
                self.cycles[kind] += 1
            except Exception as err:
                self.errors.append(f"slot {slot} {kind} #{serial}: {type(err).__name__}: {err!r}")
                # Whatever state it left: make sure this user has no session before the next cycle.
                with contextlib.suppress(Exception):
                    await self.leave(slot)
                await trio.sleep(1.0)
            serial += 1
            await trio.sleep(self.random.uniform(0.0, 0.5))


def _rss_growth_over_fit_mib(samples: list[Sample]) -> float | None:
    """The least-squares slope of RSS over the churn samples after the warm-up, times their span."""
    chosen = [(s.t_s, s.rss_mib) for s in samples if s.phase == "churn" and s.t_s >= WARMUP_S]
    if len({t for t, _ in chosen}) < 2:
        return None
    ts = np.asarray([t for t, _ in chosen])
    slope, _ = np.polyfit(ts, np.asarray([rss for _, rss in chosen]), 1)
    return float(slope) * float(ts.max() - ts.min())


def _report(churn: Churn, samples: list[Sample], idle: Health, idle_rss: float, growth: float | None) -> str:
    lines = ["     t s  phase   RSS MiB  trio  asyncio  sessions  streams"]
    for s in samples:
        h = s.health
        lines.append(
            f"  {s.t_s:6.1f}  {s.phase:6s} {s.rss_mib:8.1f}  {h.trio_tasks:4d}  {h.asyncio_tasks:7d}"
            f"  {h.sessions:8d}  {h.streams:7d}"
        )
    lines += [
        f"cycles: {dict(sorted(churn.cycles.items()))}  (JoinRooms: {churn.joins})",
        f"outcomes: {dict(sorted(churn.outcomes.items()))}",
        f"room audio chunks received by the cloud: {churn.chunks_to_cloud}",
        f"idle: RSS {idle_rss:.1f} MiB, tasks {idle.tasks}; RSS growth over the fit: "
        + ("n/a" if growth is None else f"{growth:+.1f} MiB"),
        *[f"error: {error}" for error in churn.errors[:20]],
    ]
    return "\n".join(lines)


async def test_churning_sessions_leave_exactly_the_idle_tasks_and_bounded_rss(
    aio_loop: object, livekit_server: LocalLiveKitServer, tmp_path: Path
) -> None:
    media = MediaServer()
    media.add("/short.wav", encode_wav(tone(440, 0.5, 16000, amplitude=0.3), 16000))
    media.add("/long.wav", encode_wav(tone(440, 3.0, 16000, amplitude=0.3), 16000))
    log_path = tmp_path / "bridge.log"
    rooms: list[rtc.Room] = []
    try:
        with trio.fail_after(TEST_BOUND_S):
            async with bridge_process(
                livekit_server,
                log_path,
                kind=SoakedBridge,
                BRIDGE_SESSION_IDLE_TTL_S=str(IDLE_TTL_S),
                BRIDGE_FETCH_ALLOW_HOSTS="127.0.0.1",
                BRIDGE_LOG_LEVEL="INFO",
            ) as bridge:
                await trio.sleep(1.0)
                idle = await bridge.settled_health()
                idle_rss = bridge.rss_mib
                churn = Churn(bridge, livekit_server, media)
                samples: list[Sample] = []
                phase = "churn"
                async with trio.open_nursery() as background:
                    for slot in range(SLOTS):
                        token = livekit_server.token(f"phone-soak-{slot}", churn.room(slot))
                        rooms.append(await aio_as_trio(connect_phone)(livekit_server.url, token))
                        background.start_soon(aio_as_trio(microphone), rooms[-1], slot)
                    started = trio.current_time()

                    async def sample_forever() -> None:
                        while True:
                            health = await bridge.health()
                            samples.append(
                                Sample(trio.current_time() - started, phase, bridge.rss_mib, health)
                            )
                            await trio.sleep(SAMPLE_EVERY_S)

                    background.start_soon(sample_forever)
                    async with trio.open_nursery() as slots:
                        for slot in range(SLOTS):
                            slots.start_soon(churn.slot, slot, started + CHURN_S)
                    churn_s = trio.current_time() - started
                    phase = "drain"

                    # Every session must be gone (dropped streams are reaped by the TTL), then tasks settle.
                    health = await bridge.health()
                    with trio.move_on_after(IDLE_TTL_S + 15):
                        while health.sessions:
                            await trio.sleep(0.5)
                            health = await bridge.health()
                    final = await bridge.wait_tasks(idle.tasks, timeout_s=15)
                    final = await bridge.settled_health() if final.tasks != idle.tasks else final
                    final_rss = bridge.rss_mib
                    background.cancel_scope.cancel()
                samples.append(Sample(trio.current_time() - started, "final", final_rss, final))
    finally:
        for room in rooms:
            with contextlib.suppress(Exception):
                await aio_as_trio(room.disconnect)()
        media.close()

    growth = _rss_growth_over_fit_mib(samples)
    report = _report(churn, samples, idle, idle_rss, growth)
    print(f"soak: {SLOTS} slots churning for {churn_s:.0f} s\n{report}")

    assert not churn.errors, report
    assert set(churn.cycles) == set(KINDS), f"not every session path ran: {churn.cycles}"
    assert churn.chunks_to_cloud > 0, report
    # Bounded sessions: never more open than slots, every JoinRoom made exactly one, none failed,
    # and the churn did churn.
    assert max(s.health.sessions for s in samples) <= SLOTS, report
    assert final.sessions_started - idle.sessions_started == churn.joins >= MIN_SESSIONS, report
    assert final.joins_failed == idle.joins_failed, report
    assert final.sessions == 0, report
    assert final.tasks == idle.tasks, (
        f"tasks after every session left (trio, asyncio) {final.tasks} != idle {idle.tasks}\n{report}"
    )
    assert growth is not None and growth < RSS_GROWTH_BOUND_MIB, report
    assert final_rss - idle_rss < RSS_AFTER_BOUND_MIB, report
