"""Load benchmark: N phones -> bridge -> cloud, next to the bare-SDK floor on the same phones.

    python bench/load.py --sweep 1,5,10 --seconds 20 --talkback 0.25 --out bench/results/

Processes (all on 127.0.0.1; every one is killed when this script ends, Ctrl-C included):

- a LiveKit server (bridge.testing.devserver.LocalLiveKitServer), not pinned;
- the phones (bench/_load_workers.py phones), pinned to the LOAD core: N real participants, each
  sending a lossy data packet every 100 ms (1 sequence byte + 3200 bytes with a send timestamp);
  the phones of talkback sessions also listen for tone bursts;
- this script, pinned to the LOAD core too: the cloud client (grpclib, one StreamAudio per session;
  a share of them streams 100 ms chunks back, a tone burst once a second), and the orchestration;
- the bridge (``python -m bridge``), pinned to the BRIDGE core, measured first;
- then the floor (bench/_load_workers.py floor), pinned to the BRIDGE core: N plain ``rtc.Room``s
  joined to the same rooms, with a ``data_received`` handler that only reads the timestamp, and for
  talkback rooms one published track fed the same tone schedule directly.

For each N the bridge and then the floor run one after the other against the same, still-sending
phones, each over an equal window of steady traffic. bench/README.md says what every number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpclib.const
import numpy as np
from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import (
    BridgeProcess,
    Children,
    cpu_seconds,
    load_average,
    percentiles,
    pick_cores,
    rss_mib,
    start_bridge,
    tail,
    thread_count,
)
from _load_workers import HEADER, PERIOD_S, silence_chunk, talkback_slots, tone_chunk

from bridge._gen.mentra.livekit.bridge import AudioChunk, JoinRoomRequest, LeaveRoomRequest
from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

STREAM_AUDIO = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"
WORKERS = Path(__file__).resolve().parent / "_load_workers.py"
SATURATED_PCT = 85.0
"""A process at more than this % of its (single) core is treated as saturated."""
ONSET_MATCH_S = 0.9
"""A tone burst is heard if an onset follows its send within this long (bursts are 1 s apart)."""


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
    proc = await children.spawn(
        [sys.executable, str(WORKERS), role], cores=cores, log_path=log_path, pipes=True
    )
    return Worker(role, proc, log_path)


# --------------------------------------------------------------------------------------------
# the cloud client (in this process)
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class CloudSession:
    index: int
    user_id: str
    room: str
    talkback: bool
    records: list[tuple[int, int, int]] = field(default_factory=list)
    """(send ns, receive ns, counter) of every chunk received."""
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
                        self.records.append((sent_ns, now, counter))
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


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Window:
    t0_ns: int
    t1_ns: int
    seconds: float
    cpu_pct: dict[str, float]
    """% of one core over the window, per process name."""
    rss_mib: list[float]
    """RSS of the measured process, sampled each second."""


async def measure_window(seconds: float, pids: dict[str, int], rss_pid: int) -> Window:
    start_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start, t0 = time.monotonic(), time.time_ns()
    samples = [rss_mib(rss_pid)]
    end = start + seconds
    while (remaining := end - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, remaining))
        samples.append(rss_mib(rss_pid))
    elapsed, t1 = time.monotonic() - start, time.time_ns()
    cpu = {name: 100 * (cpu_seconds(pid) - start_cpu[name]) / elapsed for name, pid in pids.items()}
    return Window(t0, t1, elapsed, cpu, samples)


def onset_delays(
    tones: list[tuple[int, int]], onsets: list[tuple[int, int]]
) -> tuple[list[float], int, dict[int, float]]:
    """Match each (session, send ns) burst to the first onset heard after it in that session.

    Returns the delays in ms, the number of bursts nobody heard within ONSET_MATCH_S, and each
    session's median delay (a fixed offset per session shows up there, not in the spread).
    """
    by_session: dict[int, list[int]] = {}
    for session, ns in onsets:
        by_session.setdefault(session, []).append(ns)
    for values in by_session.values():
        values.sort()
    delays, missed = [], 0
    per_session: dict[int, list[float]] = {}
    limit = int(ONSET_MATCH_S * 1e9)
    for session, sent in tones:
        heard = [ns for ns in by_session.get(session, []) if sent <= ns < sent + limit]
        if heard:
            delay = (heard[0] - sent) / 1e6
            delays.append(delay)
            per_session.setdefault(session, []).append(delay)
        else:
            missed += 1
    medians = {session: float(np.median(values)) for session, values in sorted(per_session.items())}
    return delays, missed, medians


def missing_packets(sent: dict[str, int], received: dict[int, int]) -> int:
    return sum(max(0, count - received.get(int(index), 0)) for index, count in sent.items())


@dataclass
class Point:
    """Everything one N needs: names, tokens, the phones."""

    n: int
    rooms: list[str]
    talkback: set[int]
    livekit: LocalLiveKitServer
    phones: Worker
    children: Children
    cores: tuple[set[int], set[int]] | None
    args: argparse.Namespace
    logs: Path

    @property
    def bridge_cores(self) -> set[int] | None:
        return self.cores[0] if self.cores else None

    def pids(self, measured: int) -> dict[str, int]:
        pids = {"measured": measured, "phones": self.phones.pid, "cloud": os.getpid()}
        if self.livekit.process is not None:
            pids["server"] = self.livekit.process.pid
        return pids


async def measure_bridge(point: Point) -> dict[str, Any]:
    args, n = point.args, point.n
    bridge: BridgeProcess = await start_bridge(
        point.children,
        livekit_url=point.livekit.url,
        log_path=point.logs / f"bridge-n{n}.log",
        cores=point.bridge_cores,
    )
    sessions = [CloudSession(i, f"user-{i}", room, i in point.talkback) for i, room in enumerate(point.rooms)]
    streams: list[asyncio.Task[None]] = []
    talkers: list[asyncio.Task[None]] = []
    try:
        await asyncio.sleep(args.settle)
        idle = await bridge.settled_health()
        idle_rss = rss_mib(bridge.pid)
        before = cpu_seconds(bridge.pid)
        await asyncio.sleep(2.0)
        idle_cpu = 100 * (cpu_seconds(bridge.pid) - before) / 2.0

        gate = asyncio.Semaphore(4)

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

        await asyncio.gather(*(join(s) for s in sessions))
        loop = asyncio.get_running_loop()
        streams = [loop.create_task(s.run(bridge.channel)) for s in sessions]
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
        generator = await point.phones.call(
            {"cmd": "report", "t0": window.t0_ns, "t1": window.t1_ns, "onsets_until": time.time_ns()}, 30
        )
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
        after = await bridge.wait_tasks(idle.tasks, timeout_s=10)
    finally:
        for task in [*talkers, *streams]:
            task.cancel()
        await asyncio.gather(*talkers, *streams, return_exceptions=True)
        code = await bridge.stop()

    latencies, received = [], {}
    for session in sessions:
        counters = set()
        for sent_ns, at_ns, counter in session.records:
            if window.t0_ns <= sent_ns <= window.t1_ns:
                latencies.append((at_ns - sent_ns) / 1e6)
                counters.add(counter)
        received[session.index] = len(counters)
    tones = [(s.index, ns) for s in sessions for ns in s.tone_ns if window.t0_ns <= ns <= window.t1_ns]
    onsets = [(i, ns) for i, who, ns in generator["onsets"] if who.startswith("bridge-")]
    delays, missed, by_session = onset_delays(tones, onsets)
    rss_n = window.rss_mib[-1]
    return {
        "cpu_pct": window.cpu_pct["measured"],
        "cpu_pct_per_session": window.cpu_pct["measured"] / n,
        "idle_cpu_pct": idle_cpu,
        "rss_idle_mib": idle_rss,
        "rss_mib": rss_n,
        "rss_samples_mib": window.rss_mib,
        "rss_per_session_mib": (rss_n - idle_rss) / n,
        "threads": threads,
        "tasks_idle": {"trio": idle.trio_tasks, "asyncio": idle.asyncio_tasks},
        "tasks_at_n": {"trio": at_n.trio_tasks, "asyncio": at_n.asyncio_tasks},
        "tasks_per_session": {
            "trio": (at_n.trio_tasks - idle.trio_tasks) / n,
            "asyncio": (at_n.asyncio_tasks - idle.asyncio_tasks) / n,
        },
        "tasks_after_leave": {"trio": after.trio_tasks, "asyncio": after.asyncio_tasks},
        "tasks_back_to_idle": after.tasks == idle.tasks,
        "latency_ms": percentiles(latencies),
        "onset_ms": percentiles(delays),
        "onset_p50_by_session_ms": by_session,
        "tones_sent": len(tones),
        "tones_missed": missed,
        "packets_sent": sum(generator["sent"].values()),
        "packets_received": sum(received.values()),
        "packets_missing": missing_packets(generator["sent"], received),
        "queue_dropped_chunks": at_n.queue_dropped_chunks,
        "packets_lost": at_n.packets_lost,
        "streams_ended": sorted({s.ended for s in sessions}),
        "exit_code": code,
        "load": _load_of(window, generator),
    }


async def measure_floor(point: Point) -> dict[str, Any]:
    args, n = point.args, point.n
    floor = await spawn_worker(point.children, "floor", point.bridge_cores, point.logs / f"floor-n{n}.log")
    try:
        idle_tasks = (await floor.call({"cmd": "hello"}, 60))["asyncio_tasks"]
        await asyncio.sleep(args.settle)
        idle_rss = rss_mib(floor.pid)
        before = cpu_seconds(floor.pid)
        await asyncio.sleep(2.0)
        idle_cpu = 100 * (cpu_seconds(floor.pid) - before) / 2.0
        rooms = [
            {
                "index": i,
                "room_name": room,
                "identity": f"floor-{i}",
                "token": point.livekit.token(f"floor-{i}", room),
                "talkback": i in point.talkback,
            }
            for i, room in enumerate(point.rooms)
        ]
        await floor.call(
            {"cmd": "connect", "url": point.livekit.url, "rooms": rooms, "talkback_mode": args.talkback_mode},
            30 + 3 * n,
        )
        await asyncio.sleep(args.warmup)
        window = await measure_window(args.seconds, point.pids(floor.pid), floor.pid)
        threads = thread_count(floor.pid)
        await asyncio.sleep(args.drain)
        report = await floor.call({"cmd": "report", "t0": window.t0_ns, "t1": window.t1_ns}, 30)
        generator = await point.phones.call(
            {"cmd": "report", "t0": window.t0_ns, "t1": window.t1_ns, "onsets_until": time.time_ns()}, 30
        )
        await floor.call({"cmd": "quit"}, 30)
    finally:
        await point.children.stop(floor.proc, grace_s=5)
    received = {int(k): v for k, v in report["received"].items()}
    onsets = [(i, ns) for i, who, ns in generator["onsets"] if who.startswith("floor-")]
    delays, missed, by_session = onset_delays([(i, ns) for i, ns in report["tones"]], onsets)
    rss_n = window.rss_mib[-1]
    return {
        "cpu_pct": window.cpu_pct["measured"],
        "cpu_pct_per_session": window.cpu_pct["measured"] / n,
        "idle_cpu_pct": idle_cpu,
        "rss_idle_mib": idle_rss,
        "rss_mib": rss_n,
        "rss_samples_mib": window.rss_mib,
        "rss_per_session_mib": (rss_n - idle_rss) / n,
        "threads": threads,
        "tasks_idle": {"asyncio": idle_tasks},
        "tasks_at_n": {"asyncio": report["asyncio_tasks"]},
        "tasks_per_session": {"asyncio": (report["asyncio_tasks"] - idle_tasks) / n},
        "latency_ms": percentiles(report["latency_ms"]),
        "onset_ms": percentiles(delays),
        "onset_p50_by_session_ms": by_session,
        "tones_sent": len(report["tones"]),
        "tones_missed": missed,
        "packets_sent": sum(generator["sent"].values()),
        "packets_received": sum(received.values()),
        "packets_missing": missing_packets(generator["sent"], received),
        "load": _load_of(window, generator),
    }


def _load_of(window: Window, generator: dict[str, Any]) -> dict[str, Any]:
    return {
        "phones_cpu_pct": window.cpu_pct["phones"],
        "cloud_cpu_pct": window.cpu_pct["cloud"],
        "server_cpu_pct": window.cpu_pct.get("server"),
        "send_lag_ms": percentiles(generator["lag_ms"]),
        "send_errors": generator["errors"],
        "window_s": window.seconds,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def warnings_for(point: dict[str, Any], pinned: bool) -> list[str]:
    found = []
    for side in ("bridge", "floor"):
        load = point[side]["load"]
        phones, cloud = load["phones_cpu_pct"], load["cloud_cpu_pct"]
        lag = load["send_lag_ms"]["p99"] or 0.0
        if phones > SATURATED_PCT:
            found.append(
                f"{side} run: the phones used {phones:.0f} % of their core: GENERATOR-BOUND, these figures "
                "are not a bridge limit (use fewer phones or a cheaper generator)"
            )
        elif pinned and phones + (cloud if side == "bridge" else 0) > SATURATED_PCT:
            found.append(
                f"{side} run: the load core was {phones + cloud:.0f} % busy (phones {phones:.0f} % + cloud "
                f"client {cloud:.0f} %): load-bound, not a bridge limit"
            )
        if lag > 20:
            found.append(f"{side} run: phones sent late (p99 {lag:.0f} ms behind schedule): generator-bound")
        if point[side]["cpu_pct"] > SATURATED_PCT:
            what = (
                "the BRIDGE's core is saturated: a bridge limit"
                if side == "bridge"
                else "the floor saturated"
            )
            found.append(f"{side} run: {point[side]['cpu_pct']:.0f} % of one core: {what}")
    if not point["bridge"]["tasks_back_to_idle"]:
        found.append(
            "bridge tasks did not return to idle after every session left: "
            f"idle {point['bridge']['tasks_idle']}, after {point['bridge']['tasks_after_leave']}"
        )
    return found


async def run_point(
    n: int, args: argparse.Namespace, lk: LocalLiveKitServer, children: Children, cores: Any, logs: Path
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    rooms = [f"load-{run}-n{n}-{i}" for i in range(n)]
    talkback = set(range(min(n, math.ceil(n * args.talkback))))
    phones = await spawn_worker(children, "phones", cores[1] if cores else None, logs / f"phones-n{n}.log")
    specs = [
        {
            "index": i,
            "room_name": room,
            "identity": f"phone-{i}",
            "token": lk.token(f"phone-{i}", room),
            "listen": i in talkback,
        }
        for i, room in enumerate(rooms)
    ]
    try:
        connected = await phones.call({"cmd": "connect", "url": lk.url, "phones": specs}, 30 + 3 * n)
        print(
            f"  N={n}: {n} phones connected in {connected['connect_s']:.1f} s; measuring the bridge…",
            flush=True,
        )
        point = Point(n, rooms, talkback, lk, phones, children, cores, args, logs)
        bridge = await measure_bridge(point)
        print(f"  N={n}: measuring the floor (plain rtc.Room) on the same phones…", flush=True)
        floor = await measure_floor(point)
        with contextlib.suppress(Exception):
            await phones.call({"cmd": "quit"}, 30)
    finally:
        await children.stop(phones.proc, grace_s=5)
    result: dict[str, Any] = {"n": n, "talkback_sessions": len(talkback), "bridge": bridge, "floor": floor}
    result["ratios"] = {
        "cpu": ratio(bridge["cpu_pct_per_session"], floor["cpu_pct_per_session"]),
        "rss": ratio(bridge["rss_per_session_mib"], floor["rss_per_session_mib"]),
        **{
            f"latency_{q}": ratio(bridge["latency_ms"][q], floor["latency_ms"][q])
            for q in ("p50", "p95", "p99", "max")
        },
        **{
            f"onset_{q}": ratio(bridge["onset_ms"][q], floor["onset_ms"][q])
            for q in ("p50", "p95", "p99", "max")
        },
    }
    result["warnings"] = warnings_for(result, cores is not None)
    return result


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def add_marginal_rss(points: list[dict[str, Any]]) -> None:
    """RSS per added session between consecutive sweep points: (RSS at N2 - RSS at N1) / (N2 - N1).

    Unlike the per-session figure it leaves out what the first room costs once (the SDK's native
    runtime), so it is what one more session costs at that size.
    """
    for previous, point in itertools.pairwise(points):
        step = point["n"] - previous["n"]
        if step <= 0:
            continue
        for side in ("bridge", "floor"):
            point[side]["rss_marginal_mib_per_session"] = (
                point[side]["rss_mib"] - previous[side]["rss_mib"]
            ) / step


def _f(value: float | None, width: int = 6, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _x(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:5.2f}x"


def format_tables(points: list[dict[str, Any]]) -> str:
    lines = []
    lines.append(
        "\nroom -> cloud latency, ms (bridge: phone send -> cloud receive; floor: phone send -> handler)"
    )
    lines.append(
        "    N |  bridge p50   p95   p99   max |   floor p50   p95   p99   max |"
        " added p50   p99 | ratio p50  p99"
    )
    for p in points:
        b, f = p["bridge"]["latency_ms"], p["floor"]["latency_ms"]
        added = [None if b[q] is None or f[q] is None else b[q] - f[q] for q in ("p50", "p99")]
        lines.append(
            f"{p['n']:5d} | {_f(b['p50'], 10)}{_f(b['p95'])}{_f(b['p99'])}{_f(b['max'])} |"
            f" {_f(f['p50'], 9)}{_f(f['p95'])}{_f(f['p99'])}{_f(f['max'])} |"
            f" {_f(added[0], 9)}{_f(added[1])} |"
            f" {_x(p['ratios']['latency_p50'])}{_x(p['ratios']['latency_p99'])}"
        )
    lines.append(
        "\ncloud -> room tone onset, ms (send of a burst -> first loud frame at the listening phone)"
    )
    lines.append(
        "    N | talk |  bridge p50   p95   p99   max miss |   floor p50   p95   p99   max miss |"
        " added p50  ratio p50"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        bo, fo = b["onset_ms"], f["onset_ms"]
        added = None if bo["p50"] is None or fo["p50"] is None else bo["p50"] - fo["p50"]
        lines.append(
            f"{p['n']:5d} | {p['talkback_sessions']:4d} | {_f(bo['p50'], 10)}{_f(bo['p95'])}{_f(bo['p99'])}"
            f"{_f(bo['max'])} {b['tones_missed']:3d}/{b['tones_sent']:<3d}|"
            f" {_f(fo['p50'], 9)}{_f(fo['p95'])}{_f(fo['p99'])}{_f(fo['max'])}"
            f" {f['tones_missed']:3d}/{f['tones_sent']:<3d}|"
            f" {_f(added, 9)} {_x(p['ratios']['onset_p50'])}"
        )
    lines.append("\nper session (bridge vs floor): CPU % of one core, RSS MiB above the idle process, tasks")
    lines.append(
        "    N | CPU%/s bridge  floor  ratio | MiB/s bridge  floor  ratio | tasks/s trio aio | floor aio"
        " | idle RSS br/fl MiB | marginal MiB/s br/fl"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        lines.append(
            f"{p['n']:5d} | {_f(b['cpu_pct_per_session'], 13, 2)}{_f(f['cpu_pct_per_session'], 7, 2)}"
            f" {_x(p['ratios']['cpu'])} |"
            f" {_f(b['rss_per_session_mib'], 12, 2)}{_f(f['rss_per_session_mib'], 7, 2)}"
            f" {_x(p['ratios']['rss'])} | {_f(b['tasks_per_session']['trio'], 12, 1)}"
            f"{_f(b['tasks_per_session']['asyncio'], 4, 1)} | {_f(f['tasks_per_session']['asyncio'], 9, 1)}"
            f" | {b['rss_idle_mib']:6.1f} / {f['rss_idle_mib']:5.1f}    "
            f" | {_f(b.get('rss_marginal_mib_per_session'), 7, 2)}"
            f" / {_f(f.get('rss_marginal_mib_per_session'), 5, 2)}"
        )
    lines.append("\ndrops and load (window of steady traffic)")
    lines.append(
        "    N | q_dropped pkts_lost | missing br/fl of sent | gen CPU% br/fl | cloud CPU% |"
        " server CPU% br/fl | send lag p99 ms | tasks back"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        bl, fl = b["load"], f["load"]
        lag = max(bl["send_lag_ms"]["p99"] or 0, fl["send_lag_ms"]["p99"] or 0)
        lines.append(
            f"{p['n']:5d} | {b['queue_dropped_chunks']:9d} {b['packets_lost']:9d} |"
            f" {b['packets_missing']:5d} / {f['packets_missing']:<5d} of {b['packets_sent']:<6d} |"
            f" {bl['phones_cpu_pct']:6.1f} / {fl['phones_cpu_pct']:5.1f} | {bl['cloud_cpu_pct']:10.1f} |"
            f" {_f(bl['server_cpu_pct'], 9)} / {_f(fl['server_cpu_pct'], 5)} | {lag:15.1f} |"
            f" {'yes' if b['tasks_back_to_idle'] else 'NO'}"
        )
    for p in points:
        for warning in p["warnings"]:
            lines.append(f"WARNING N={p['n']}: {warning}")
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    ns = [p["n"] for p in points]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))

    def series(ax: Any, title: str, ylabel: str, getters: list[tuple[str, Any, str]]) -> None:
        for label, get, style in getters:
            ys = [get(p) for p in points]
            color = "tab:blue" if label.startswith("bridge") else "tab:orange"
            ax.plot(ns, [float("nan") if y is None else y for y in ys], style, color=color, label=label)
        ax.set_title(title)
        ax.set_xticks(ns)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("sessions (N)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)

    series(
        axes[0][0],
        "CPU per session",
        "% of one core",
        [
            ("bridge", lambda p: p["bridge"]["cpu_pct_per_session"], "o-"),
            ("floor (plain rtc.Room)", lambda p: p["floor"]["cpu_pct_per_session"], "s--"),
        ],
    )
    series(
        axes[0][1],
        "RSS per session (above idle)",
        "MiB",
        [
            ("bridge", lambda p: p["bridge"]["rss_per_session_mib"], "o-"),
            ("floor", lambda p: p["floor"]["rss_per_session_mib"], "s--"),
        ],
    )
    series(
        axes[1][0],
        "room -> cloud latency",
        "ms",
        [
            ("bridge p50", lambda p: p["bridge"]["latency_ms"]["p50"], "o-"),
            ("bridge p99", lambda p: p["bridge"]["latency_ms"]["p99"], "o:"),
            ("floor p50", lambda p: p["floor"]["latency_ms"]["p50"], "s--"),
            ("floor p99", lambda p: p["floor"]["latency_ms"]["p99"], "s:"),
        ],
    )
    series(
        axes[1][1],
        "cloud -> room tone onset",
        "ms",
        [
            ("bridge p50", lambda p: p["bridge"]["onset_ms"]["p50"], "o-"),
            ("bridge p99", lambda p: p["bridge"]["onset_ms"]["p99"], "o:"),
            ("floor p50", lambda p: p["floor"]["onset_ms"]["p50"], "s--"),
            ("floor p99", lambda p: p["floor"]["onset_ms"]["p99"], "s:"),
        ],
    )
    fig.suptitle("livekit-bridge load vs the bare-SDK floor (same phones, same rooms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, lk: LocalLiveKitServer, children: Children) -> int:
    sweep = [int(x) for x in args.sweep.split(",") if x.strip()]
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = out / f"load-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    cores = pick_cores()
    if cores is None:
        print("WARNING: fewer than 2 usable cores: nothing is pinned, every figure is shared-core noise")
    else:
        # This process is the cloud client: it shares the load core with the phones.
        os.sched_setaffinity(0, cores[1])
        print(
            f"bridge / floor pinned to core {sorted(cores[0])}; "
            f"phones + cloud client to core {sorted(cores[1])}"
        )
    print(f"load average before: {load_average()}  (other work on the machine makes every figure noisier)")
    points = []
    assert lk.process is not None
    watchdog = await children.watch(lk.process.pid, str(lk.log_path.parent))
    try:
        for n in sweep:
            points.append(await run_point(n, args, lk, children, cores, logs))
            print(format_tables(points[-1:]), flush=True)
    finally:
        await children.close()
        await children.disarm(watchdog)
    report = {
        "args": vars(args),
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "pinned": None if cores is None else {"bridge": sorted(cores[0]), "load": sorted(cores[1])},
            "load_average_after": load_average(),
            "python": platform.python_version(),
        },
        "points": points,
    }
    add_marginal_rss(points)
    print("\n== summary ==" + format_tables(points))
    json_path = out / f"load-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=1))
    png_path = out / f"load-{stamp}.png"
    print(f"\nJSON: {json_path}")
    if plot(points, png_path):
        print(f"PNG:  {png_path}")
    print(f"logs: {logs}")
    return 1 if any(not p["bridge"]["tasks_back_to_idle"] for p in points) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="1,5,10", help="comma-separated session counts N")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per side and N")
    parser.add_argument("--talkback", type=float, default=0.25, help="share of sessions streaming audio back")
    parser.add_argument(
        "--talkback-mode",
        choices=("continuous", "bursts"),
        default="continuous",
        help="between the once-a-second tone bursts: 100 ms chunks of silence, or nothing",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="steady traffic before each window")
    parser.add_argument("--settle", type=float, default=2.0, help="idle time before the idle readings")
    parser.add_argument("--drain", type=float, default=1.5, help="wait for late packets after a window")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    if not 0 <= args.talkback <= 1:
        parser.error("--talkback is a share between 0 and 1")
    if args.seconds <= 0 or args.seconds > 3600:
        parser.error("--seconds must be in (0, 3600]")
    sweep = [int(x) for x in args.sweep.split(",") if x.strip()]
    if not sweep or min(sweep) < 1 or max(sweep) > 200:
        parser.error("--sweep takes session counts between 1 and 200")

    ensure_server_binary(log=lambda message: print(message, file=sys.stderr))
    children = Children()
    lk = LocalLiveKitServer()
    try:
        lk.start()  # before this process pins itself: the server's threads stay unpinned
        return asyncio.run(run(args, lk, children))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process", file=sys.stderr)
        return 130
    finally:
        children.kill_all_now()
        lk.close()


if __name__ == "__main__":
    sys.exit(main())
