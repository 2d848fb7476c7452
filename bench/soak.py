"""Soak: sessions join and leave continuously for a bounded time; RSS and task counts over time.

    python bench/soak.py [--seconds 600] [--sessions 8] [--sample-every 5] [--idle-ttl 3]
                         [--kinds leave,play_stop,...] [--floor]

The bridge runs as a subprocess (``python -m bridge``, short idle TTL, PlayAudio allowed to fetch from
127.0.0.1). This process is the driver: K phones (real participants, one room each, sending a lossy
100 ms packet every 100 ms for the whole run), a loopback HTTP server with two short WAVs, and a cloud
client that keeps K session slots churning. Each slot runs cycles of one kind after another:

- ``leave``: JoinRoom, StreamAudio (room audio arrives; 1 s of PCM streamed back on track 0), LeaveRoom;
- ``drop_stream``: JoinRoom, StreamAudio, the client drops the call (RST_STREAM), the idle TTL reaps;
- ``replace``: JoinRoom, StreamAudio, JoinRoom again for the same user (the old stream ends), a new
  StreamAudio, LeaveRoom;
- ``play_complete``: JoinRoom, StreamAudio, PlayAudio of a 0.5 s WAV until COMPLETED, LeaveRoom;
- ``play_stop``: JoinRoom, PlayAudio of a 3 s WAV, StopAudio after STARTED, LeaveRoom;
- ``play_leave``: JoinRoom, StreamAudio, PlayAudio of a 3 s WAV, LeaveRoom while it plays.

Every ``--sample-every`` seconds it samples the bridge's RSS (/proc), CPU, HealthCheck's
``trio_tasks``/``asyncio_tasks``, and from its /metrics the heap split (Python blocks, C heap in
use / free / mmap: bridge.memory) and the callback backlog. ``--kinds`` limits the cycles to some
kinds; ``--floor`` then runs the same number of slots on bare ``rtc.Room``s (_soak_floor.py) for as
long and prints both sides' fits. After the deadline every slot finishes its cycle, every session is
gone, and the bridge's task counts must equal the idle counts (taken before the first session)
exactly. It prints the samples, least-squares growth of RSS (MiB/hour) and of the task counts
(per hour) over the samples after the warm-up, and the verdict; the exit code is 1 when tasks did not
return to idle or a cycle failed.

tests/integration/test_soak.py imports ``run_soak`` from here and runs a ~40 s version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _benchlib import (
    HEAP_KINDS,
    BridgeProcess,
    Children,
    Health,
    cpu_seconds,
    free_port,
    least_squares_slope,
    rss_mib,
    scrape_memory_and_backlog,
    start_bridge,
)
from livekit import rtc

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
from support.media_server import MediaServer

__all__ = ["Sample", "SoakResult", "SoakSettings", "format_report", "run_soak"]

STREAM_AUDIO = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"
KINDS = ("leave", "drop_stream", "replace", "play_complete", "play_stop", "play_leave")
EventType = PlayAudioEventEventType
_RPC_TIMEOUT_S = 20.0
_CYCLE_TIMEOUT_S = 60.0
_FLOOR_SCRIPT = Path(__file__).resolve().parent / "_soak_floor.py"


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
    """After the bridge's run, the same churn on bare ``rtc.Room``s for as long (_soak_floor.py)."""
    progress: Callable[[str], None] | None = None

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(60.0, self.seconds / 5)


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_mib: float
    trio_tasks: int
    asyncio_tasks: int
    sessions: int
    streams: int
    phase: str
    """``churn`` while sessions come and go, ``drain`` after the deadline."""
    heap: dict[str, float] = field(default_factory=dict)
    """The bridge's heap split (bridge.memory via /metrics): ``python_blocks`` and C heap MiB."""
    cpu_pct: float = 0.0
    """The bridge's CPU since the previous sample, in % of one core."""
    backlog: int = 0
    """Callbacks, asyncio handles and room events queued in the bridge and not yet run."""


def _growth_per_hour(points: list[tuple[str, float, float]], warmup_s: float) -> float | None:
    """Least-squares slope per hour of (phase, t_s, value) points: churn samples after the warm-up."""
    chosen = [(t, value) for phase, t, value in points if phase == "churn" and t >= warmup_s]
    slope = least_squares_slope([t for t, _ in chosen], [value for _, value in chosen])
    return None if slope is None else slope * 3600


@dataclass
class FloorResult:
    """The bare-SDK churn's samples (dicts as _soak_floor.py prints them) and its last line."""

    samples: list[dict[str, Any]]
    final: dict[str, Any]
    warmup_s: float

    def fit(self, value: Callable[[dict[str, Any]], float]) -> float | None:
        return _growth_per_hour([(s["phase"], s["t_s"], value(s)) for s in self.samples], self.warmup_s)

    @property
    def idle_rss_mib(self) -> float:
        return float(self.samples[0]["rss_mib"])

    @property
    def final_rss_mib(self) -> float:
        return float(self.final["rss_mib"])

    @property
    def sessions_started(self) -> int:
        return int(self.final.get("sessions_started", 0))


@dataclass
class SoakResult:
    settings: SoakSettings
    idle: Health
    idle_rss_mib: float
    final: Health
    final_rss_mib: float
    samples: list[Sample]
    churn_s: float
    cycles: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    chunks_to_cloud: int = 0
    streams_without_audio: Counter[str] = field(default_factory=Counter)
    """Streams (by cycle kind) that received no room audio at all while they were attached."""
    bridge_log: str = ""
    floor: FloorResult | None = None

    @property
    def tasks_returned(self) -> bool:
        return self.final.tasks == self.idle.tasks and self.final.active_sessions == 0

    def _fit(self, value: Callable[[Sample], float]) -> float | None:
        points = [(s.phase, s.t_s, value(s)) for s in self.samples]
        return _growth_per_hour(points, self.settings.warmup)

    @property
    def rss_growth_mib_per_hour(self) -> float | None:
        return self._fit(lambda s: s.rss_mib)

    def heap_growth_per_hour(self, kind: str) -> float | None:
        """Fitted growth of one part of the heap split (MiB/hour, or blocks/hour for python_blocks)."""
        if not all(kind in s.heap for s in self.samples if s.phase == "churn"):
            return None
        return self._fit(lambda s: s.heap[kind])

    @property
    def trio_growth_per_hour(self) -> float | None:
        return self._fit(lambda s: s.trio_tasks)

    @property
    def asyncio_growth_per_hour(self) -> float | None:
        return self._fit(lambda s: s.asyncio_tasks)

    @property
    def fitted_span_s(self) -> float:
        chosen = [s.t_s for s in self.samples if s.phase == "churn" and s.t_s >= self.settings.warmup]
        return max(chosen) - min(chosen) if len(chosen) > 1 else 0.0

    @property
    def rss_growth_over_run_mib(self) -> float | None:
        """The fitted RSS slope times the span it was fitted over: growth during the churn."""
        per_hour = self.rss_growth_mib_per_hour
        return None if per_hour is None else per_hour * self.fitted_span_s / 3600

    @property
    def ok(self) -> bool:
        return self.tasks_returned and not self.errors

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "settings": {
                "seconds": s.seconds,
                "sessions": s.sessions,
                "sample_every_s": s.sample_every_s,
                "idle_ttl_s": s.idle_ttl_s,
                "warmup_s": s.warmup,
                "seed": s.seed,
                "kinds": list(s.kinds),
            },
            "churn_s": self.churn_s,
            "samples": [sample.__dict__ for sample in self.samples],
            "idle": {
                "rss_mib": self.idle_rss_mib,
                "trio": self.idle.trio_tasks,
                "asyncio": self.idle.asyncio_tasks,
            },
            "final": {
                "rss_mib": self.final_rss_mib,
                "trio": self.final.trio_tasks,
                "asyncio": self.final.asyncio_tasks,
                "sessions": self.final.active_sessions,
                "sessions_started": self.final.sessions_started,
            },
            "fits_per_hour": {
                "rss_mib": self.rss_growth_mib_per_hour,
                "trio_tasks": self.trio_growth_per_hour,
                "asyncio_tasks": self.asyncio_growth_per_hour,
                **{f"heap_{kind}": self.heap_growth_per_hour(kind) for kind in HEAP_KINDS},
                "span_s": self.fitted_span_s,
            },
            "tasks_returned": self.tasks_returned,
            "cycles": dict(self.cycles),
            "outcomes": dict(self.outcomes),
            "streams_without_audio": dict(self.streams_without_audio),
            "chunks_to_cloud": self.chunks_to_cloud,
            "errors": self.errors,
            "ok": self.ok,
            "floor": None
            if self.floor is None
            else {
                "samples": self.floor.samples,
                "final": self.floor.final,
                "fits_per_hour": {
                    "rss_mib": self.floor.fit(lambda s: s["rss_mib"]),
                    **{
                        f"heap_{kind}": self.floor.fit(lambda s, kind=kind: s["heap"][kind])
                        for kind in HEAP_KINDS
                        if kind in self.floor.final["heap"]
                    },
                },
            },
        }


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
    def __init__(
        self, settings: SoakSettings, bridge: BridgeProcess, media: MediaServer, run_id: str
    ) -> None:
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

    def room(self, slot: int) -> str:
        return f"soak-{self.run_id}-{slot}"

    async def join(self, slot: int) -> None:
        user, room = f"soak-user-{slot}", self.room(slot)
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
    """_soak_floor.py for ``settings.seconds`` in the same rooms, beside the same phones."""
    say = settings.progress or (lambda _message: None)
    proc = await children.spawn(
        [sys.executable, str(_FLOOR_SCRIPT)],
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
        say(
            f"  floor t={sample['t_s']:6.1f} s  RSS {sample['rss_mib']:7.1f} MiB  rooms {sample['rooms']:3d}"
            f"  asyncio {sample['asyncio_tasks']:4d}  {_heap_text(sample['heap'])}"
        )
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
    media = MediaServer()
    media.add("/short.wav", encode_wav(tone(440, 0.5, 16000, amplitude=0.3), 16000))
    media.add("/long.wav", encode_wav(tone(440, 3.0, 16000, amplitude=0.3), 16000))
    phones: list[asyncio.Task[None]] = []
    sampler: asyncio.Task[None] | None = None
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

        samples: list[Sample] = []
        started = time.monotonic()
        phase = ["churn"]

        async def sample_forever() -> None:
            cpu_before, at_before = cpu_seconds(bridge.pid), time.monotonic()
            while True:
                health = await bridge.health()
                heap, backlog = await asyncio.to_thread(scrape_memory_and_backlog, metrics_port)
                cpu_now, at_now = cpu_seconds(bridge.pid), time.monotonic()
                cpu_pct = 100 * (cpu_now - cpu_before) / max(at_now - at_before, 1e-6)
                cpu_before, at_before = cpu_now, at_now
                sample = Sample(
                    t_s=time.monotonic() - started,
                    rss_mib=rss_mib(bridge.pid),
                    trio_tasks=health.trio_tasks,
                    asyncio_tasks=health.asyncio_tasks,
                    sessions=health.active_sessions,
                    streams=health.active_streams,
                    phase=phase[0],
                    heap=heap,
                    cpu_pct=cpu_pct,
                    backlog=backlog,
                )
                samples.append(sample)
                say(
                    f"  t={sample.t_s:6.1f} s  RSS {sample.rss_mib:7.1f} MiB  trio {sample.trio_tasks:4d}"
                    f"  asyncio {sample.asyncio_tasks:4d}  sessions {sample.sessions:3d}"
                    f"  streams {sample.streams}  CPU {sample.cpu_pct:3.0f} %  backlog {sample.backlog:5d}"
                    f"  {_heap_text(sample.heap)}"
                )
                await asyncio.sleep(settings.sample_every_s)

        sampler = loop.create_task(sample_forever())
        deadline = started + settings.seconds
        await asyncio.gather(*(driver.slot(slot, deadline) for slot in range(settings.sessions)))
        churn_s = time.monotonic() - started
        phase[0] = "drain"
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
        final_rss = rss_mib(bridge.pid)
        final_heap, final_backlog = await asyncio.to_thread(scrape_memory_and_backlog, metrics_port)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        samples.append(
            Sample(
                time.monotonic() - started,
                final_rss,
                final.trio_tasks,
                final.asyncio_tasks,
                final.active_sessions,
                final.active_streams,
                "final",
                final_heap,
                backlog=final_backlog,
            )
        )
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
            final_rss_mib=final_rss,
            samples=samples,
            churn_s=churn_s,
            cycles=driver.cycles,
            outcomes=driver.outcomes,
            errors=driver.errors,
            chunks_to_cloud=driver.chunks_to_cloud,
            streams_without_audio=driver.streams_without_audio,
            bridge_log=str(log_path),
        )
    finally:
        if sampler is not None:
            sampler.cancel()
        for task in phones:
            task.cancel()
        await asyncio.gather(*phones, *([sampler] if sampler else []), return_exceptions=True)
        if bridge is not None:
            await bridge.stop()
        await children.close()
        media.close()


def _heap_text(heap: dict[str, float]) -> str:
    if not heap:
        return ""
    text = f"py blocks {heap.get('python_blocks', 0) / 1000:7.1f}k"
    if "in_use" in heap:
        text += f"  C heap in use {heap['in_use']:6.1f} / free {heap['free']:6.1f}"
        text += f" / mmap {heap['mmap']:5.1f} MiB"
    return text


def format_report(result: SoakResult) -> str:
    s = result.settings
    lines = [
        f"soak: {s.sessions} session slots churning for {result.churn_s:.0f} s (idle TTL {s.idle_ttl_s:g} s)",
        "",
        "     t s   phase   RSS MiB  trio  asyncio  sessions  streams  CPU %  backlog",
    ]
    for sample in result.samples:
        lines.append(
            f"  {sample.t_s:6.1f}  {sample.phase:6s}  {sample.rss_mib:8.1f}  {sample.trio_tasks:4d}"
            f"  {sample.asyncio_tasks:7d}  {sample.sessions:8d}  {sample.streams:7d}  {sample.cpu_pct:5.0f}"
            f"  {sample.backlog:7d}  {_heap_text(sample.heap)}"
        )

    def per_hour(value: float | None, unit: str) -> str:
        return "n/a (too few samples)" if value is None else f"{value:+.1f} {unit}/hour"

    lines += [
        "",
        f"cycles: {dict(sorted(result.cycles.items()))}  (sessions started: {result.final.sessions_started})",
        f"outcomes: {dict(sorted(result.outcomes.items()))}",
        f"room audio chunks received by the cloud: {result.chunks_to_cloud}; "
        f"streams that got none: {dict(result.streams_without_audio) or 0}",
        f"fits over {result.fitted_span_s:.0f} s of churn after a {s.warmup:g} s warm-up:",
        f"  RSS     {per_hour(result.rss_growth_mib_per_hour, 'MiB')}"
        + (
            ""
            if result.rss_growth_over_run_mib is None
            else f"  ({result.rss_growth_over_run_mib:+.1f} MiB over the fitted span)"
        ),
        f"  Python blocks   {per_hour(result.heap_growth_per_hour('python_blocks'), 'blocks')}",
        f"  C heap in use   {per_hour(result.heap_growth_per_hour('in_use'), 'MiB')}",
        f"  C heap free     {per_hour(result.heap_growth_per_hour('free'), 'MiB')}  (freed, not returned)",
        f"  C heap mmap     {per_hour(result.heap_growth_per_hour('mmap'), 'MiB')}",
        f"  trio    {per_hour(result.trio_growth_per_hour, 'tasks')}",
        f"  asyncio {per_hour(result.asyncio_growth_per_hour, 'tasks')}",
        f"RSS: idle {result.idle_rss_mib:.1f} MiB -> after every session left {result.final_rss_mib:.1f} MiB",
        f"tasks: idle trio {result.idle.trio_tasks} / asyncio {result.idle.asyncio_tasks} -> after every "
        f"session left trio {result.final.trio_tasks} / asyncio {result.final.asyncio_tasks}: "
        + ("back to idle exactly" if result.tasks_returned else "NOT back to idle (leak)"),
        f"bridge log: {result.bridge_log}",
    ]
    if result.floor is not None:
        lines += ["", *_floor_report(result)]
    if result.errors:
        lines.append(f"{len(result.errors)} cycle errors:")
        lines += [f"  {error}" for error in result.errors[:20]]
    lines.append("PASS" if result.ok else "FAIL")
    return "\n".join(lines)


def _floor_report(result: SoakResult) -> list[str]:
    floor = result.floor
    assert floor is not None
    lines = [
        "bare-SDK floor (same slots, phones and rooms; connect, publish, 1 s of tone, disconnect):",
        "     t s   phase   RSS MiB  rooms  asyncio",
    ]
    for sample in [*floor.samples, floor.final]:
        lines.append(
            f"  {sample['t_s']:6.1f}  {sample['phase']:6s}  {sample['rss_mib']:8.1f}  {sample['rooms']:5d}"
            f"  {sample['asyncio_tasks']:7d}  {_heap_text(sample['heap'])}"
        )

    def per_hour(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.1f} MiB/hour"

    lines += [
        f"floor sessions: {floor.sessions_started}; errors: {len(floor.final.get('errors', []))}",
        f"floor RSS: idle {floor.idle_rss_mib:.1f} MiB -> "
        f"after every room left {floor.final_rss_mib:.1f} MiB",
        "                        bridge            floor",
        f"  RSS fit          {per_hour(result.rss_growth_mib_per_hour):>17}  "
        f"{per_hour(floor.fit(lambda s: s['rss_mib'])):>17}",
    ]
    for kind, label in (("in_use", "C heap in use"), ("free", "C heap free")):
        if kind in floor.final["heap"]:
            lines.append(
                f"  {label:15s}  {per_hour(result.heap_growth_per_hour(kind)):>17}  "
                f"{per_hour(floor.fit(lambda s, kind=kind: s['heap'][kind])):>17}"
            )
    bridge_held = result.final_rss_mib - result.idle_rss_mib
    floor_held = floor.final_rss_mib - floor.idle_rss_mib
    lines += [
        f"  RSS held after all left {bridge_held:+8.1f} MiB      {floor_held:+8.1f} MiB  (above idle)",
        f"  sessions            {result.final.sessions_started:13d}  {floor.sessions_started:17d}",
    ]
    for error in floor.final.get("errors", [])[:5]:
        lines.append(f"  floor error: {error}")
    return lines


def plot(result: SoakResult, path: Path) -> bool:
    """RSS and the heap split over time (bridge, and the floor if it ran), and the task counts."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    fig, (memory, tasks) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    bridge = result.samples
    ts = [s.t_s for s in bridge]
    memory.plot(ts, [s.rss_mib for s in bridge], "-", color="tab:blue", label="bridge RSS")
    if all("in_use" in s.heap for s in bridge):
        memory.plot(
            ts, [s.heap["in_use"] for s in bridge], ":", color="tab:blue", label="bridge C heap in use"
        )
        memory.plot(ts, [s.heap["free"] for s in bridge], "-.", color="tab:blue", label="bridge C heap free")
    if result.floor is not None:
        floor = [*result.floor.samples, result.floor.final]
        fts = [s["t_s"] for s in floor]
        memory.plot(fts, [s["rss_mib"] for s in floor], "-", color="tab:orange", label="floor RSS")
        if all("in_use" in s["heap"] for s in floor):
            memory.plot(
                fts,
                [s["heap"]["in_use"] for s in floor],
                ":",
                color="tab:orange",
                label="floor C heap in use",
            )
            memory.plot(
                fts, [s["heap"]["free"] for s in floor], "-.", color="tab:orange", label="floor C heap free"
            )
    memory.axvline(result.settings.warmup, color="grey", alpha=0.4)
    memory.set_ylabel("MiB")
    memory.set_ylim(bottom=0)
    memory.set_title(
        f"soak: {result.settings.sessions} slots, {result.final.sessions_started} bridge sessions"
    )
    memory.grid(True, alpha=0.3)
    memory.legend(fontsize=8, ncol=2)
    tasks.plot(ts, [s.trio_tasks for s in bridge], "-", label="bridge Trio tasks")
    tasks.plot(ts, [s.asyncio_tasks for s in bridge], "-", label="bridge asyncio tasks")
    tasks.plot(ts, [s.sessions for s in bridge], "--", label="sessions open")
    tasks.set_xlabel("seconds since the churn started")
    tasks.set_ylim(bottom=0)
    tasks.grid(True, alpha=0.3)
    tasks.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


async def _run_watched(settings: SoakSettings, server: Any) -> SoakResult:
    """run_soak, with a watchdog that kills our LiveKit server should this process be killed."""
    if server is None or server.process is None:
        return await run_soak(settings)
    children = Children()
    watchdog = await children.watch(server.process.pid, str(server.log_path.parent))
    try:
        return await run_soak(settings)
    finally:
        await children.disarm(watchdog)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long sessions churn (max 4 h)")
    parser.add_argument("--sessions", type=int, default=8, help="session slots churning at once")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--idle-ttl", type=float, default=3.0, help="BRIDGE_SESSION_IDLE_TTL_S of the bridge")
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out of the fits")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated cycle kinds to run (default: all of {','.join(KINDS)})",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="then run the same churn on bare rtc.Rooms (no bridge) for as long, and compare",
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results"), help="logs and JSON"
    )
    parser.add_argument(
        "--livekit-url", default="", help="use this LiveKit server (dev keys) instead of a local one"
    )
    args = parser.parse_args()
    if not 0 < args.seconds <= 4 * 3600:
        parser.error("--seconds must be in (0, 14400]")
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds must name some of {','.join(KINDS)}")
    if not 1 <= args.sessions <= 64:
        parser.error("--sessions must be in 1..64")
    if args.livekit_url and not args.livekit_url.startswith(("ws://127.", "ws://localhost")):
        parser.error("--livekit-url must be a loopback ws:// URL")

    from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

    server = None
    try:
        if args.livekit_url:
            url = args.livekit_url
        else:
            ensure_server_binary(log=lambda message: print(message, file=sys.stderr))
            server = LocalLiveKitServer()
            server.start()
            url = server.url
        out = Path(args.out) / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
        settings = SoakSettings(
            livekit_url=url,
            log_dir=out,
            seconds=args.seconds,
            sessions=args.sessions,
            sample_every_s=args.sample_every,
            idle_ttl_s=args.idle_ttl,
            warmup_s=args.warmup,
            seed=args.seed,
            kinds=kinds,
            floor=args.floor,
            progress=lambda message: print(message, flush=True),
        )
        result = asyncio.run(_run_watched(settings, server))
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.close()
    print()
    print(format_report(result))
    json_path = out / "soak.json"
    json_path.write_text(json.dumps(result.to_json(), indent=1))
    print(f"JSON: {json_path}")
    if plot(result, out / "soak.png"):
        print(f"plot: {out / 'soak.png'}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
