"""What bench.soak drives: K phones (one room each, a lossy 100 ms packet every 100 ms for the whole
run), a loopback HTTP server with two short WAVs, and a cloud client keeping K session slots
churning through the cycle kinds (``KINDS``, see bench.soak); then, with ``floor``, the same churn on
bare ``rtc.Room``s in a process of its own (bench.soak.floor). ``run_soak`` runs it all against a
bridge subprocess; what it samples is bench.soak.measure's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpclib.const
import numpy as np
from grpclib.client import Channel
from livekit import rtc

from bench.lib import BridgeProcess, Children, MediaFiles, free_port, module_argv, rss_mib, start_bridge
from bench.soak.measure import FloorResult, Sampler, SoakResult
from bench.soak.report import floor_sample_line, sample_line
from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
    PlayAudioEventEventType,
    PlayAudioRequest,
    StopAudioRequest,
)
from bridge.testing.devserver import DEV_API_KEY, DEV_API_SECRET, dev_token
from bridge.testing.synth import encode_wav, tone

__all__ = ["KINDS", "SoakSettings", "run_soak"]

STREAM_AUDIO = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"
KINDS = ("leave", "drop_stream", "replace", "play_complete", "play_stop", "play_leave")
EventType = PlayAudioEventEventType
_RPC_TIMEOUT_S = 20.0
_CYCLE_TIMEOUT_S = 60.0
_FLOOR = "bench.soak.floor"


@dataclass
class SoakSettings:
    livekit_url: str
    api_key: str = DEV_API_KEY
    api_secret: str = DEV_API_SECRET
    seconds: float = 600.0
    """How long sessions keep churning (the run then drains, settles and checks)."""
    sessions: int = 8
    """Session slots churning at once (and phones)."""
    sample_every_s: float = 5.0
    idle_ttl_s: float = 3.0
    warmup_s: float | None = None
    """Samples before this are left out of the fits (default: a fifth of the run, at most 60 s)."""
    seed: int = 1
    log_dir: Path | None = None
    bridge_cores: set[int] | None = None
    kinds: tuple[str, ...] = KINDS
    """The cycle kinds the slots take turns at (a subset finds which path a growth comes from)."""
    floor: bool = False
    """After the bridge's run, the same churn on bare ``rtc.Room``s for as long (bench.soak.floor)."""
    progress: Callable[[str], None] | None = None

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(60.0, self.seconds / 5)


# --------------------------------------------------------------------------------------------
# phones (driver side)
# --------------------------------------------------------------------------------------------


async def _phone(url: str, token: str, connected: asyncio.Event, index: int) -> None:
    """A phone: connect, then a lossy 1 + 3200 byte packet every 100 ms until cancelled."""
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token, rtc.RoomOptions(auto_subscribe=False)), 15)
    connected.set()
    pcm = np.random.default_rng(index).integers(-3000, 3000, 1600, dtype=np.int16).tobytes()
    loop = asyncio.get_running_loop()
    start, seq = loop.time(), 0
    try:
        while True:
            with contextlib.suppress(Exception):
                await room.local_participant.publish_data(bytes([seq & 0xFF]) + pcm, reliable=False)
            seq += 1
            await asyncio.sleep(max(0.0, start + seq * 0.1 - loop.time()))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.disconnect(), 5)


# --------------------------------------------------------------------------------------------
# the churn
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Stream:
    """One StreamAudio call from the driver."""

    channel: Channel
    user_id: str
    chunks: int = 0
    status: str = ""
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    call: Any = None

    async def run(self) -> None:
        try:
            async with self.channel.request(
                STREAM_AUDIO, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
            ) as call:
                self.call = call
                await call.send_message(AudioChunk(user_id=self.user_id, sample_rate=16000, channels=1))
                self.opened.set()
                while await call.recv_message() is not None:
                    self.chunks += 1
                await call.end()
                await call.recv_trailing_metadata()
                self.status = "OK"
        except asyncio.CancelledError:
            self.status = "dropped"
            raise
        except Exception as err:
            self.status = f"{type(err).__name__}: {getattr(err, 'status', '')} {getattr(err, 'message', err)}"
        finally:
            self.opened.set()

    async def talk(self, seconds: float) -> None:
        """Stream ``seconds`` of a 440 Hz tone on track 0 in 100 ms chunks, in real time."""
        samples = (tone(440, seconds, 16000, amplitude=0.3)[:, 0] * 32767).astype(np.int16)
        for start in range(0, len(samples), 1600):
            await self.call.send_message(
                AudioChunk(pcm_data=samples[start : start + 1600].tobytes(), sample_rate=16000, channels=1)
            )
            await asyncio.sleep(0.1)


class _Driver:
    def __init__(self, settings: SoakSettings, bridge: BridgeProcess, media: MediaFiles, run_id: str) -> None:
        self.settings = settings
        self.bridge = bridge
        self.media = media
        self.run_id = run_id
        self.random = random.Random(settings.seed)
        self.cycles: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.chunks_to_cloud = 0
        self.streams_without_audio: Counter[str] = Counter()
        self.join_ms: list[float] = []

    def room(self, slot: int) -> str:
        return f"soak-{self.run_id}-{slot}"

    async def join(self, slot: int) -> None:
        user, room = f"soak-user-{slot}", self.room(slot)
        started = time.monotonic()
        response = await self.bridge.stub.join_room(
            JoinRoomRequest(
                user_id=user,
                room_name=room,
                token=dev_token(
                    f"bridge-soak-{slot}",
                    room,
                    api_key=self.settings.api_key,
                    api_secret=self.settings.api_secret,
                ),
                target_identity=f"phone-soak-{slot}",
            ),
            timeout=_RPC_TIMEOUT_S,
        )
        if not response.success:
            raise RuntimeError(f"JoinRoom failed: {response.error}")
        self.join_ms.append((time.monotonic() - started) * 1000)

    async def leave(self, slot: int) -> None:
        response = await self.bridge.stub.leave_room(
            LeaveRoomRequest(user_id=f"soak-user-{slot}", reason="soak"), timeout=_RPC_TIMEOUT_S
        )
        if not response.success:
            raise RuntimeError(f"LeaveRoom failed: {response.error}")

    async def open_stream(self, slot: int) -> tuple[_Stream, asyncio.Task[None]]:
        stream = _Stream(self.bridge.channel, f"soak-user-{slot}")
        task = asyncio.get_running_loop().create_task(stream.run())
        await asyncio.wait_for(stream.opened.wait(), _RPC_TIMEOUT_S)
        return stream, task

    async def finish_stream(
        self, stream: _Stream, task: asyncio.Task[None], kind: str, expect: str = "OK"
    ) -> None:
        await asyncio.wait_for(task, _RPC_TIMEOUT_S)
        self.chunks_to_cloud += stream.chunks
        if stream.chunks == 0:
            self.streams_without_audio[kind] += 1
        self.outcomes[f"stream {stream.status}"] += 1
        if stream.status != expect:
            raise RuntimeError(f"stream ended with {stream.status!r}, expected {expect!r}")

    async def play(self, slot: int, path: str, request_id: str, then: str = "") -> str:
        """PlayAudio and read its events to the end; ``then`` = ``stop``/``leave`` after STARTED."""
        request = PlayAudioRequest(
            user_id=f"soak-user-{slot}", request_id=request_id, audio_url=self.media.base_url + path
        )
        terminal = ""
        async for event in self.bridge.stub.play_audio(request, timeout=_RPC_TIMEOUT_S):
            if event.type is EventType.STARTED and then == "stop":
                response = await self.bridge.stub.stop_audio(
                    StopAudioRequest(user_id=f"soak-user-{slot}", request_id=request_id, reason="soak"),
                    timeout=_RPC_TIMEOUT_S,
                )
                if not response.success:
                    raise RuntimeError(f"StopAudio failed: {response.error}")
            elif event.type is EventType.STARTED and then == "leave":
                await self.leave(slot)
            if event.type in (EventType.COMPLETED, EventType.FAILED):
                terminal = event.type.name + (f" {event.metadata.get('code')}" if event.error else "")
        self.outcomes[f"playback {terminal}"] += 1
        return terminal

    async def cycle(self, slot: int, kind: str, serial: int) -> None:
        hold = self.random.uniform(1.0, 3.0)
        if kind == "leave":
            await self.join(slot)
            stream, task = await self.open_stream(slot)
            await asyncio.sleep(hold / 2)
            await stream.talk(1.0)
            await asyncio.sleep(hold / 2)
            await self.leave(slot)
            await self.finish_stream(stream, task, kind)
        elif kind == "drop_stream":
            await self.join(slot)
            stream, task = await self.open_stream(slot)
            await asyncio.sleep(hold)
            task.cancel()  # the cloud goes away mid-call: RST_STREAM
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.chunks_to_cloud += stream.chunks
            self.outcomes["stream dropped by the client"] += 1
            # No call for this user now (GetStatus would count as activity): the idle TTL must reap it.
            await asyncio.sleep(self.settings.idle_ttl_s + 2.0)
            status = await self.bridge.stub.get_status(
                BridgeStatusRequest(user_id=f"soak-user-{slot}"), timeout=_RPC_TIMEOUT_S
            )
            if status.connected:
                raise RuntimeError("the idle TTL did not close a session whose stream was dropped")
            self.outcomes[f"reaped: {status.last_disconnect_reason}"] += 1
        elif kind == "replace":
            await self.join(slot)
            first, first_task = await self.open_stream(slot)
            await asyncio.sleep(hold / 2)
            await self.join(slot)  # the same user again: the old session is torn down first
            await self.finish_stream(first, first_task, "replace (replaced)")
            second, second_task = await self.open_stream(slot)
            await asyncio.sleep(hold / 2)
            await self.leave(slot)
            await self.finish_stream(second, second_task, kind)
        elif kind == "play_complete":
            await self.join(slot)
            stream, task = await self.open_stream(slot)
            terminal = await self.play(slot, "/short.wav", f"soak-{slot}-{serial}")
            if terminal != "COMPLETED":
                raise RuntimeError(f"a 0.5 s playback ended with {terminal}")
            await self.leave(slot)
            await self.finish_stream(stream, task, kind)
        elif kind == "play_stop":
            await self.join(slot)
            terminal = await self.play(slot, "/long.wav", f"soak-{slot}-{serial}", then="stop")
            if terminal != "FAILED stopped":
                raise RuntimeError(f"a stopped playback ended with {terminal}")
            await self.leave(slot)
        elif kind == "play_leave":
            await self.join(slot)
            stream, task = await self.open_stream(slot)
            terminal = await self.play(slot, "/long.wav", f"soak-{slot}-{serial}", then="leave")
            if terminal != "FAILED session_closed":
                raise RuntimeError(f"a playback cut by LeaveRoom ended with {terminal}")
            await self.finish_stream(stream, task, kind)
        else:
            raise ValueError(kind)

    async def slot(self, slot: int, deadline: float) -> None:
        serial = 0
        while time.monotonic() < deadline:
            kinds = self.settings.kinds
            kind = kinds[(slot + serial) % len(kinds)]
            try:
                await asyncio.wait_for(self.cycle(slot, kind, serial), _CYCLE_TIMEOUT_S)
                self.cycles[kind] += 1
            except Exception as err:
                self.errors.append(f"slot {slot} {kind} #{serial}: {type(err).__name__}: {err}")
                # Whatever state it left: make sure this user has no session before the next cycle.
                with contextlib.suppress(Exception):
                    await self.leave(slot)
                await asyncio.sleep(1.0)
            serial += 1
            await asyncio.sleep(self.random.uniform(0.0, 0.5))


async def _run_floor(
    settings: SoakSettings, driver: _Driver, children: Children, log_dir: Path
) -> FloorResult:
    """bench.soak.floor for ``settings.seconds`` in the same rooms, beside the same phones."""
    say = settings.progress or (lambda _message: None)
    proc = await children.spawn(
        module_argv(_FLOOR),
        cores=settings.bridge_cores,
        log_path=log_dir / "floor.log",
        pipes=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    tokens = [
        dev_token(
            f"floor-soak-{slot}", driver.room(slot), api_key=settings.api_key, api_secret=settings.api_secret
        )
        for slot in range(settings.sessions)
    ]
    command = {
        "url": settings.livekit_url,
        "tokens": tokens,
        "seconds": settings.seconds,
        "sample_every_s": settings.sample_every_s,
        "seed": settings.seed,
    }
    proc.stdin.write((json.dumps(command) + "\n").encode())
    await proc.stdin.drain()
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + settings.seconds + 120
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
        if not line:
            raise RuntimeError(f"the floor process exited early; see {log_dir / 'floor.log'}")
        if not line.startswith(b"@@ "):
            continue
        sample = json.loads(line[3:])
        samples.append(sample)
        say(floor_sample_line(sample))
        if sample["phase"] == "final":
            await children.stop(proc)
            return FloorResult(samples[:-1], sample, settings.warmup)


async def run_soak(settings: SoakSettings) -> SoakResult:
    """Run the soak (plain asyncio); returns the samples and the verdict's inputs."""
    say = settings.progress or (lambda _message: None)
    run_id = uuid.uuid4().hex[:6]
    log_dir = settings.log_dir or Path(tempfile.mkdtemp(prefix="livekit-bridge-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "bridge.log"
    children = Children()
    media = MediaFiles()
    media.add("/short.wav", encode_wav(tone(440, 0.5, 16000, amplitude=0.3), 16000))
    media.add("/long.wav", encode_wav(tone(440, 3.0, 16000, amplitude=0.3), 16000))
    phones: list[asyncio.Task[None]] = []
    sampling: asyncio.Task[None] | None = None
    bridge: BridgeProcess | None = None
    metrics_port = free_port()
    try:
        bridge = await start_bridge(
            children,
            livekit_url=settings.livekit_url,
            log_path=log_path,
            cores=settings.bridge_cores,
            settings={
                "BRIDGE_SESSION_IDLE_TTL_S": str(settings.idle_ttl_s),
                "BRIDGE_FETCH_ALLOW_HOSTS": "127.0.0.1",
                "BRIDGE_LOG_LEVEL": "INFO",
                "BRIDGE_METRICS_PORT": str(metrics_port),
            },
        )
        await asyncio.sleep(1.0)
        idle = await bridge.settled_health()
        idle_rss = rss_mib(bridge.pid)
        say(
            f"bridge idle: RSS {idle_rss:.1f} MiB, "
            f"tasks trio {idle.trio_tasks} / asyncio {idle.asyncio_tasks}"
        )

        loop = asyncio.get_running_loop()
        driver = _Driver(settings, bridge, media, run_id)
        ready = [asyncio.Event() for _ in range(settings.sessions)]
        for slot in range(settings.sessions):
            token = dev_token(
                f"phone-soak-{slot}",
                driver.room(slot),
                api_key=settings.api_key,
                api_secret=settings.api_secret,
            )
            phones.append(loop.create_task(_phone(settings.livekit_url, token, ready[slot], slot)))
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 30)
        say(f"{settings.sessions} phones sending; churning for {settings.seconds:g} s")

        sampler = Sampler(bridge, metrics_port, on_sample=lambda sample: say(sample_line(sample)))
        started = sampler.started
        sampling = loop.create_task(sampler.run(settings.sample_every_s))
        deadline = started + settings.seconds
        await asyncio.gather(*(driver.slot(slot, deadline) for slot in range(settings.sessions)))
        churn_s = time.monotonic() - started
        sampler.phase = "drain"
        say(f"churn over after {churn_s:.1f} s; waiting for every session to be gone")

        # Every session must be gone (dropped streams are reaped by the TTL), then tasks settle.
        gone_by = time.monotonic() + settings.idle_ttl_s + 15
        health = await bridge.health()
        while health.active_sessions and time.monotonic() < gone_by:
            await asyncio.sleep(0.5)
            health = await bridge.health()
        if health.active_sessions:
            driver.errors.append(f"{health.active_sessions} sessions still open after the churn")
        final = await bridge.wait_tasks(idle.tasks, timeout_s=15)
        final = await bridge.settled_health() if final.tasks != idle.tasks else final
        final_sample = await sampler.final(final, sampling)
        floor = None
        if settings.floor:
            say(f"bare-SDK floor: the same churn on plain rtc.Rooms for {settings.seconds:g} s")
            try:
                floor = await _run_floor(settings, driver, children, log_dir)
            except (RuntimeError, TimeoutError, ValueError) as err:
                driver.errors.append(f"the floor run failed: {type(err).__name__}: {err}")
        return SoakResult(
            floor=floor,
            settings=settings,
            idle=idle,
            idle_rss_mib=idle_rss,
            final=final,
            final_rss_mib=final_sample.rss_mib,
            samples=sampler.samples,
            churn_s=churn_s,
            cycles=driver.cycles,
            outcomes=driver.outcomes,
            errors=driver.errors,
            chunks_to_cloud=driver.chunks_to_cloud,
            streams_without_audio=driver.streams_without_audio,
            bridge_log=str(log_path),
            join_ms=driver.join_ms,
        )
    finally:
        if sampling is not None:
            sampling.cancel()
        for task in phones:
            task.cancel()
        await asyncio.gather(*phones, *([sampling] if sampling else []), return_exceptions=True)
        if bridge is not None:
            await bridge.stop()
        await children.close()
        media.close()
