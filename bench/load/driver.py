"""What bench.load drives: the phones (worker processes), the cloud consumers (this process: JoinRoom,
one StreamAudio per session, talkback on a share of them) and the order of one sweep point.

For each N the phones connect (one room each) and send for the whole point; the bridge is started,
measured idle, gets N sessions, a warm-up and a window of steady traffic, every session leaves and
it is stopped; then the Python floor (bench.load.workers floor, plain rtc.Rooms) and then the Go
receiver (bench/go receiver, server-sdk-go) do the same in the same rooms, one after the other on the
bridge's core. With ``--rounds`` more bridge and floor windows follow on the same phones, in
alternating order (``run_paired_round``). The phones are the Go generator (bench/go phones) plus a
Python process for the phones that listen to talkback (``--phones go``), or all Python (``--phones
python``). What is measured and how is bench.load.measure's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpclib.const
from grpclib.client import Channel

from bench.lib import BridgeProcess, Children, module_argv, start_bridge, tail, thread_count
from bench.load.gobuild import ensure_built
from bench.load.measure import bridge_figures, measure_idle, measure_window, receiver_figures
from bench.load.traffic import HEADER, PERIOD_S, silence_chunk, talkback_slots, tone_chunk
from bench.load.workers import floor_rtc_configuration
from bridge._gen.mentra.livekit.bridge import AudioChunk, JoinRoomRequest, LeaveRoomRequest
from bridge.livekit_io.room import rtc_configuration
from bridge.testing.devserver import LocalLiveKitServer

STREAM_AUDIO = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"
WORKERS = "bench.load.workers"


def check_floor_configuration() -> None:
    """The Python floor connects its rooms with the bridge's WebRTC configuration (written out in
    bench.load.workers, which must not import the bridge): stop if the two have drifted apart."""
    if floor_rtc_configuration() != rtc_configuration():
        raise SystemExit(
            "bench.load: bench/load/workers.py floor_rtc_configuration() differs from the bridge's "
            f"rtc_configuration(): {floor_rtc_configuration()} != {rtc_configuration()}"
        )


# --------------------------------------------------------------------------------------------
# workers (JSON lines over pipes)
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Worker:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, command: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no answer to {command['cmd']} within {timeout_s} s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}); log tail:\n{tail(self.log_path)}"
                )
            if line.startswith(b"@@ "):
                reply: dict[str, Any] = json.loads(line[3:])
                if "error" in reply:
                    raise RuntimeError(f"{self.name}: {reply['error']}")
                return reply


async def spawn_worker(children: Children, role: str, cores: set[int] | None, log_path: Path) -> Worker:
    """A Python worker (bench.load.workers ``phones`` or ``floor``)."""
    proc = await children.spawn(module_argv(WORKERS, role), cores=cores, log_path=log_path, pipes=True)
    return Worker(role, proc, log_path)


async def spawn_go_worker(children: Children, command: str, cores: set[int] | None, log_path: Path) -> Worker:
    """A Go worker (bench/go ``receiver`` or ``phones``), built on first use; same protocol."""
    proc = await children.spawn([str(ensure_built()[command])], cores=cores, log_path=log_path, pipes=True)
    return Worker(f"go {command}", proc, log_path)


# --------------------------------------------------------------------------------------------
# the cloud client (in this process)
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class CloudSession:
    index: int
    user_id: str
    room: str
    talkback: bool
    records: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(send ns, receive ns, counter, the bridge's receive ms) of every chunk received."""
    tone_ns: list[int] = field(default_factory=list)
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    stream: Any = None
    ended: str = ""

    async def run(self, channel: Channel) -> None:
        try:
            async with channel.request(
                STREAM_AUDIO, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
            ) as stream:
                self.stream = stream
                await stream.send_message(AudioChunk(user_id=self.user_id, sample_rate=16000, channels=1))
                unpack = HEADER.unpack_from
                while (message := await stream.recv_message()) is not None:
                    now = time.time_ns()
                    pcm = message.pcm_data
                    if len(pcm) >= HEADER.size:
                        sent_ns, _phone, counter = unpack(pcm, 0)
                        self.records.append((sent_ns, now, counter, message.timestamp_ms))
                    self.first_audio.set()
                await stream.end()
                await stream.recv_trailing_metadata()
                self.ended = "OK"
        except Exception as err:
            self.ended = f"{type(err).__name__}: {err}"

    async def talk(self, start: float, mode: str) -> None:
        """Stream on track 0 in real time: a 100 ms 1 kHz burst once a second; in between 100 ms
        chunks of silence (``continuous``) or nothing (``bursts``)."""
        tone, silence = tone_chunk(16000), silence_chunk(16000)
        async for is_tone in talkback_slots(start, mode, self.tone_ns):
            await self.stream.send_message(
                AudioChunk(pcm_data=tone if is_tone else silence, sample_rate=16000, channels=1, track_id=0)
            )


@dataclass
class Point:
    """Everything one N needs: names, tokens, the phones."""

    n: int
    rooms: list[str]
    talkback: set[int]
    livekit: LocalLiveKitServer
    phones: Worker
    listeners: Worker | None
    """With the Go phones: the Python process whose participants listen to talkback (None without)."""
    children: Children
    cores: tuple[set[int], set[int]] | None
    args: argparse.Namespace
    logs: Path

    @property
    def bridge_cores(self) -> set[int] | None:
        return self.cores[0] if self.cores else None

    def pids(self, measured: int) -> dict[str, int]:
        pids = {"measured": measured, "phones": self.phones.pid, "cloud": os.getpid()}
        if self.listeners is not None:
            pids["listeners"] = self.listeners.pid
        if self.livekit.process is not None:
            pids["server"] = self.livekit.process.pid
        return pids

    async def generator_report(self, t0_ns: int, t1_ns: int) -> dict[str, Any]:
        """What the phones sent in [t0, t1] and their send lag; the tone onsets heard since t0 (from
        the listeners process when there is one)."""
        command = {"cmd": "report", "t0": t0_ns, "t1": t1_ns, "onsets_until": time.time_ns()}
        report = await self.phones.call(command, 30)
        if self.listeners is not None:
            report["onsets"] = (await self.listeners.call(command, 30))["onsets"]
        return report


# --------------------------------------------------------------------------------------------
# one point: the bridge side, then the Python floor, then the Go receiver, on the same phones
# --------------------------------------------------------------------------------------------


def _log_name(kind: str, n: int, round_: int) -> str:
    return f"{kind}-n{n}.log" if round_ == 1 else f"{kind}-n{n}-r{round_}.log"


async def run_bridge_side(point: Point, round_: int = 1) -> dict[str, Any]:
    args, n = point.args, point.n
    bridge: BridgeProcess = await start_bridge(
        point.children,
        livekit_url=point.livekit.url,
        log_path=point.logs / _log_name("bridge", n, round_),
        cores=point.bridge_cores,
        # Sized from its one core the bridge would refuse joins beyond capacity.SESSIONS_PER_CORE (25):
        # the sweep measures past that rule on purpose.
        settings={"BRIDGE_MAX_SESSIONS": str(n)},
        unix_socket=point.logs / f"bridge-n{n}-r{round_}.sock" if args.cloud_transport == "unix" else None,
    )
    sessions = [CloudSession(i, f"user-{i}", room, i in point.talkback) for i, room in enumerate(point.rooms)]
    streams: list[asyncio.Task[None]] = []
    talkers: list[asyncio.Task[None]] = []
    try:
        await asyncio.sleep(args.settle)
        idle_health = await bridge.settled_health()
        idle = await measure_idle(bridge.pid)

        gate = asyncio.Semaphore(args.joins_at_once)

        async def join(session: CloudSession) -> None:
            async with gate:
                response = await bridge.stub.join_room(
                    JoinRoomRequest(
                        user_id=session.user_id,
                        room_name=session.room,
                        token=point.livekit.token(f"bridge-{session.index}", session.room),
                        target_identity=f"phone-{session.index}",
                    ),
                    timeout=30,
                )
            if not response.success:
                raise RuntimeError(f"JoinRoom {session.user_id} failed: {response.error}")
            # Its stream at once, as a cloud would: opened only after the last join (40 one at a
            # time took over 2 s), the first sessions' queues overflowed and q_dropped counted it.
            streams.append(loop.create_task(session.run(bridge.channel)))

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(join(s) for s in sessions))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.first_audio.wait() for s in sessions)), 20)
        silent = [s.user_id for s in sessions if not s.first_audio.is_set()]
        if silent:
            raise RuntimeError(f"no room audio reached the cloud within 20 s for {silent}")
        base = loop.time() + 0.1
        talking = [s for s in sessions if s.talkback]
        for position, session in enumerate(talking):
            start = base + PERIOD_S * position / max(1, len(talking))
            talkers.append(loop.create_task(session.talk(start, args.talkback_mode)))
        await asyncio.sleep(args.warmup)

        window = await measure_window(args.seconds, point.pids(bridge.pid), bridge.pid)
        at_n = await bridge.health()
        threads = thread_count(bridge.pid)
        await asyncio.sleep(args.drain)
        generator = await point.generator_report(window.t0_ns, window.t1_ns)
        for task in talkers:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)

        # Everybody leaves; the task counts must return to the idle ones exactly.
        await asyncio.gather(
            *(
                bridge.stub.leave_room(LeaveRoomRequest(user_id=s.user_id, reason="bench done"))
                for s in sessions
            )
        )
        await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), 15)
        after = await bridge.wait_tasks(idle_health.tasks, timeout_s=10)
    finally:
        for task in [*talkers, *streams]:
            task.cancel()
        await asyncio.gather(*talkers, *streams, return_exceptions=True)
        code = await bridge.stop()
    return bridge_figures(n, window, idle, (idle_health, at_n, after), threads, sessions, generator, code)


RECEIVERS = {"floor": "the Python floor (plain rtc.Room)", "go": "the Go receiver (server-sdk-go)"}
SIDE_WHAT = {"bridge": "the bridge", **RECEIVERS}


async def run_receiver_side(point: Point, kind: str, round_: int = 1) -> dict[str, Any]:
    """The Python floor (``floor``) or the Go receiver (``go``): joins the same rooms on the bridge's
    core, a warm-up and a window of steady traffic; identities ``<kind>-<i>``."""
    args, n = point.args, point.n
    log_path = point.logs / _log_name(kind, n, round_)
    if kind == "floor":
        worker = await spawn_worker(point.children, "floor", point.bridge_cores, log_path)
    else:
        worker = await spawn_go_worker(point.children, "receiver", point.bridge_cores, log_path)
    task_kind = "asyncio" if kind == "floor" else "goroutines"
    report_key = "asyncio_tasks" if kind == "floor" else "goroutines"
    try:
        idle_tasks = (await worker.call({"cmd": "hello"}, 60))[report_key]
        await asyncio.sleep(args.settle)
        idle = await measure_idle(worker.pid)
        rooms = [
            {
                "index": i,
                "room_name": room,
                "identity": f"{kind}-{i}",
                "token": point.livekit.token(f"{kind}-{i}", room),
                "talkback": i in point.talkback,
            }
            for i, room in enumerate(point.rooms)
        ]
        await worker.call(
            {"cmd": "connect", "url": point.livekit.url, "rooms": rooms, "talkback_mode": args.talkback_mode},
            30 + 3 * n,
        )
        await asyncio.sleep(args.warmup)
        window = await measure_window(args.seconds, point.pids(worker.pid), worker.pid)
        threads = thread_count(worker.pid)
        await asyncio.sleep(args.drain)
        report = await worker.call({"cmd": "report", "t0": window.t0_ns, "t1": window.t1_ns}, 30)
        generator = await point.generator_report(window.t0_ns, window.t1_ns)
        try:
            await worker.call({"cmd": "quit"}, 30)  # leave the rooms before the next side joins them
        except TimeoutError:
            print(f"  N={n}: {worker.name} did not leave its rooms within 30 s; stopping it", flush=True)
    finally:
        await point.children.stop(worker.proc, grace_s=5)
    tasks = (task_kind, idle_tasks, report[report_key])
    return receiver_figures(n, window, idle, tasks, threads, report, generator)


async def start_phones(
    rooms: list[str],
    talkback: set[int],
    lk: LocalLiveKitServer,
    children: Children,
    args: argparse.Namespace,
    load_cores: set[int] | None,
    logs: Path,
) -> tuple[Worker, Worker | None, float]:
    """The phones of a point, connected: ``phone-<i>`` sends in room i (the bridge's target); the
    phones of talkback sessions also listen. With ``--phones go`` the Go generator sends and a Python
    process (identities ``listener-<i>``) listens in the talkback rooms only. Returns the phones, the
    listeners (or None) and the seconds the phones took to connect."""
    n = len(rooms)

    def spec(i: int, identity: str, listen: bool, send: bool) -> dict[str, Any]:
        token = lk.token(identity, rooms[i])
        return {
            "index": i,
            "room_name": rooms[i],
            "identity": identity,
            "token": token,
            "listen": listen,
            "send": send,
        }

    timeout = 30 + 3 * n
    if args.phones == "python":
        phones = await spawn_worker(children, "phones", load_cores, logs / f"phones-n{n}.log")
        specs = [spec(i, f"phone-{i}", i in talkback, True) for i in range(n)]
        connected = await phones.call({"cmd": "connect", "url": lk.url, "phones": specs}, timeout)
        return phones, None, connected["connect_s"]
    phones = await spawn_go_worker(children, "phones", load_cores, logs / f"phones-n{n}.log")
    # Addressed to the three measured sides only: the listener in a talkback room would otherwise
    # receive (and pay for, on this core) every packet too.
    receivers = {i: [f"bridge-{i}", *(f"{kind}-{i}" for kind in RECEIVERS)] for i in range(n)}
    specs = [{**spec(i, f"phone-{i}", False, True), "to": receivers[i]} for i in range(n)]
    connected = await phones.call({"cmd": "connect", "url": lk.url, "phones": specs}, timeout)
    listeners = None
    if talkback:
        listeners = await spawn_worker(children, "phones", load_cores, logs / f"listeners-n{n}.log")
        specs = [spec(i, f"listener-{i}", True, False) for i in sorted(talkback)]
        await listeners.call({"cmd": "connect", "url": lk.url, "phones": specs}, timeout)
    return phones, listeners, connected["connect_s"]


async def run_point(
    n: int, args: argparse.Namespace, lk: LocalLiveKitServer, children: Children, cores: Any, logs: Path
) -> dict[str, Any]:
    """The phones connect; the bridge side, the Python floor, the Go receiver. Returns each side's figures."""
    run = uuid.uuid4().hex[:6]
    rooms = [f"load-{run}-n{n}-{i}" for i in range(n)]
    talkback = set(range(min(n, math.ceil(n * args.talkback))))
    phones: Worker | None = None
    listeners: Worker | None = None
    try:
        load_cores = cores[1] if cores else None
        phones, listeners, connect_s = await start_phones(
            rooms, talkback, lk, children, args, load_cores, logs
        )
        print(
            f"  N={n}: {n} {args.phones} phones connected in {connect_s:.1f} s; measuring the bridge…",
            flush=True,
        )
        point = Point(n, rooms, talkback, lk, phones, listeners, children, cores, args, logs)
        sides = {"bridge": await run_bridge_side(point)}
        for kind, what in RECEIVERS.items():
            print(f"  N={n}: measuring {what} on the same phones…", flush=True)
            sides[kind] = await run_receiver_side(point, kind)
        rounds = [{"order": ["bridge", "floor"], "bridge": sides["bridge"], "floor": sides["floor"]}]
        for round_ in range(2, args.rounds + 1):
            rounds.append(await run_paired_round(point, round_))
        for worker in (phones, listeners):
            if worker is not None:
                with contextlib.suppress(Exception):
                    await worker.call({"cmd": "quit"}, 30)
    finally:
        for worker in (listeners, phones):
            if worker is not None:
                await children.stop(worker.proc, grace_s=5)
    return {"n": n, "phones": args.phones, "talkback_sessions": len(talkback), **sides, "rounds": rounds}


async def run_paired_round(point: Point, round_: int) -> dict[str, Any]:
    """One more bridge window and floor window on the same phones (``--rounds``), the floor first in
    even rounds: whatever drifts over a point (the server's state, the phones' phases, other work on
    the machine) then falls on each side equally often, and the rounds' medians compare the two."""
    order = ["floor", "bridge"] if round_ % 2 == 0 else ["bridge", "floor"]
    figures: dict[str, Any] = {"order": order}
    for side in order:
        print(f"  N={point.n}: round {round_} of {point.args.rounds}: {SIDE_WHAT[side]}…", flush=True)
        if side == "bridge":
            figures[side] = await run_bridge_side(point, round_)
        else:
            figures[side] = await run_receiver_side(point, side, round_)
    return figures
