"""The native floor, per packet (#15 item 4): what one received data packet costs the bare SDK.

    python -m bench.native_floor                        # every try, N = 10, 10 s windows (~5 min)
    python -m bench.native_floor --tries baseline,no-log-capture --seconds 20
    python -m bench.native_floor --tries baseline --perf 8        # + perf record of the receiver
    python -m bench.native_floor --list                 # the tries and what each changes

One LiveKit server on loopback (``LocalLiveKitServer``), one phones process (N Python participants,
``phone-<i>`` in room i, each sending one data packet every 100 ms to ``floor-<i>`` only) on the load
core, and for each try a fresh bare-SDK receiver process (plain asyncio, N ``rtc.Room``s joined one
at a time, a ``data_received`` handler that reads the send time, as ``bench.load``'s floor) on the
other core. For each try: the receiver connects with the phones silent, is measured idle, the phones
send (the try's packet size and kind), a warm-up, then a window of ``--seconds``; CPU by thread group
(``bench.load.threads``) over the window ÷ packets the handlers got in it = CPU per packet.

The roles this module also runs as (JSON lines on stdin, ``@@`` answers, as ``bench.load.workers``):

    python -m bench.native_floor phones       # the phones
    python -m bench.native_floor receiver     # the bare-SDK receiver; its environment is the try's
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only these two bench modules at the top: the receiver and the phones run from this module, and
# bench.lib imports the bridge, which imports trio-asyncio, which installs its event loop policy:
# asyncio.run() would then run them on trio-asyncio's loop, not plain asyncio.
from bench.load.threads import GROUPS, cpu_by_group
from bench.load.traffic import HEADER, PCM_BYTES, PERIOD_S, noise_body, ticks

if TYPE_CHECKING:
    from bench.lib import Children

MODULE = "bench.native_floor"
CAPTURE_ENV = "NATIVE_FLOOR_LOG_CAPTURE"
"""``0``: the receiver initialises the SDK's native core with ``capture_logs`` off (see ``_patch_ffi``)."""
CENSUS_ENV = "NATIVE_FLOOR_LOG_CENSUS"
"""``1``: the receiver counts the FFI events and log records crossing into Python (a diagnostic)."""


# --------------------------------------------------------------------------------------------
# the tries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Try:
    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    rtc: str = "once"
    """``once``: the bridge's RtcConfiguration (ICE gathered once); ``default``: the SDK's."""
    single_pc: bool | None = None
    auto_subscribe: bool = True
    ffi_filter: bool = False
    size: int = PCM_BYTES
    reliable: bool = False
    diagnostic: bool = False
    """Its CPU includes the census itself: not a candidate."""
    sink_warning: bool = False
    """Load the SDK's native library patched so libwebrtc's log sink starts at LS_WARNING (see
    ``sink_warning_library``), through the SDK's own ``LIVEKIT_LIB_PATH``."""


TRIES = (
    Try("baseline", "SDK defaults + the bridge's GATHER_ONCE, 3200 B lossy"),
    Try("sdk-gathering", "RtcConfiguration left to the SDK (GATHER_CONTINUALLY)", rtc="default"),
    Try("two-pcs", "RoomOptions(single_peer_connection=False) (the default is one)", single_pc=False),
    Try("no-autosub", "RoomOptions(auto_subscribe=False)", auto_subscribe=False),
    Try("reliable", "the phones send reliable packets", reliable=True),
    Try("size-1600", "the phones send 1600 B of PCM instead of 3200", size=PCM_BYTES // 2),
    Try(
        "rust-log-off",
        "RUST_LOG=off, LIVEKIT_RTC_DEBUG=0 (env)",
        env={"RUST_LOG": "off", "LIVEKIT_RTC_DEBUG": "0"},
    ),
    Try(
        "tokio-4",
        "TOKIO_WORKER_THREADS=4 (pinned, tokio sizes itself to 1)",
        env={"TOKIO_WORKER_THREADS": "4"},
    ),
    Try("ffi-filter", "the bridge's narrow_to_own_events on every room", ffi_filter=True),
    Try("no-log-capture", "livekit_ffi_initialize(capture_logs=False)", env={CAPTURE_ENV: "0"}),
    Try(
        "no-log-capture+filter",
        "capture_logs=False and narrow_to_own_events",
        env={CAPTURE_ENV: "0"},
        ffi_filter=True,
    ),
    Try(
        "sink-warning",
        "the SDK's .so with libwebrtc's log sink at LS_WARNING, not LS_VERBOSE (LIVEKIT_LIB_PATH)",
        sink_warning=True,
    ),
    Try(
        "sink-warning-1600",
        "sink at LS_WARNING, 1600 B packets: what is left per byte",
        size=PCM_BYTES // 2,
        sink_warning=True,
    ),
    Try(
        "sink-warning+no-capture",
        "sink at LS_WARNING, capture_logs=False and narrow_to_own_events",
        env={CAPTURE_ENV: "0"},
        ffi_filter=True,
        sink_warning=True,
    ),
    Try(
        "log-census",
        "baseline, counting FFI events and log records (diagnostic)",
        env={CENSUS_ENV: "1"},
        diagnostic=True,
    ),
    Try(
        "sink-warning-census",
        "sink at LS_WARNING, counting FFI events and log records (diagnostic)",
        env={CENSUS_ENV: "1"},
        diagnostic=True,
        sink_warning=True,
    ),
)
BY_NAME = {t.name: t for t in TRIES}


# --------------------------------------------------------------------------------------------
# the SDK change, tried without rebuilding the SDK
# --------------------------------------------------------------------------------------------

PATCH_CACHE = Path.home() / ".cache" / "livekit-bridge" / "native-floor"


def sink_warning_library() -> Path | None:
    """A copy of the SDK's native library whose libwebrtc log sink is added at LS_WARNING instead of
    LS_VERBOSE (webrtc-sys ``src/webrtc.cpp`` ``LogSink::LogSink``): the change the SDK would make,
    as a 6-byte patch of the wheel's binary, written under ~/.cache (never into the checkout). The
    bridge loads the same copy by default (``bridge.livekit_io.native_library``). None if the
    installed library is not the one this patch was written for."""
    return _bridge_livekit_io("native_library").quiet_library(PATCH_CACHE)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# the receiver process
# --------------------------------------------------------------------------------------------


class _InitWithoutCapture:
    """``livekit_ffi_initialize`` with its second argument (``capture_logs``) forced off, and/or the
    event callback wrapped by a census; everything else goes to the real function."""

    def __init__(self, fn: Any, capture: bool, census: Counter[str] | None) -> None:
        self._fn, self._capture, self._census = fn, capture, census

    @property
    def argtypes(self) -> Any:
        return self._fn.argtypes

    @argtypes.setter
    def argtypes(self, value: Any) -> None:
        self._fn.argtypes = value

    def __call__(self, callback: Any, capture: bool, *rest: Any) -> Any:
        if self._census is not None:
            callback = _census_callback(callback, self._census)
        return self._fn(callback, capture and self._capture, *rest)


_KEEP: list[Any] = []
"""ctypes callbacks must outlive the native core's use of them."""


def _census_callback(original: Any, census: Counter[str]) -> Any:
    from livekit.rtc._ffi_client import ffi_cb_fnc
    from livekit.rtc._proto import ffi_pb2

    def counting(ptr: Any, length: int) -> None:
        import ctypes

        event = ffi_pb2.FfiEvent()
        event.ParseFromString(ctypes.string_at(ptr, int(length)))
        which = event.WhichOneof("message")
        census["event:" + str(which)] += 1
        census["bytes:" + str(which)] += int(length)
        if which == "logs":
            for record in event.logs.records:
                # libwebrtc's lines start with "(file.cc:line): ": group by that, others by target.
                where = record.message.split(")", 1)[0] + ")" if record.message.startswith("(") else ""
                census["log:" + record.target + " " + where] += 1
                census["logbytes:" + record.target + " " + where] += len(record.message)
                census["logs_total"] += 1
        elif which == "room_event":
            census["room_event:" + str(event.room_event.WhichOneof("message"))] += 1
        original(ptr, length)

    wrapped = ffi_cb_fnc(counting)
    _KEEP.append(wrapped)
    return wrapped


class _LibProxy:
    def __init__(self, lib: Any, init: _InitWithoutCapture) -> None:
        object.__setattr__(self, "_lib", lib)
        object.__setattr__(self, "_init", init)

    def __getattr__(self, name: str) -> Any:
        if name == "livekit_ffi_initialize":
            return self._init
        return getattr(self._lib, name)


def _patch_ffi(capture: bool, census: Counter[str] | None) -> None:
    """The Python SDK (1.2.1) initialises its native core with ``capture_logs=True``, hard-coded:
    every ``log`` record of the Rust side (libwebrtc's own log lines included: its sink is added at
    ``LS_VERBOSE`` and forwarded as ``log::debug!``) is then passed, batched and protobuf-encoded,
    to Python, which drops the debug ones. Off, the Rust side falls back to ``env_logger``
    (``RUST_LOG``, default: errors only). Must run before the first ``FfiClient`` is created."""
    from livekit.rtc import _ffi_client

    real = _ffi_client.get_ffi_lib

    def get_ffi_lib() -> Any:
        lib = real()
        return _LibProxy(lib, _InitWithoutCapture(lib.livekit_ffi_initialize, capture, census))

    _ffi_client.get_ffi_lib = get_ffi_lib


@functools.cache  # once per process: the receiver asks for ffi_filter once per room it connects
def _bridge_livekit_io(name: str) -> Any:
    """The bridge's ``livekit_io/<name>.py`` (``ffi_filter`` imports only the SDK,
    ``native_library`` only the standard library), loaded from its file: importing it as
    ``bridge.livekit_io.<name>`` would run the bridge package's imports, and with them trio-asyncio's."""
    import importlib.util

    package = importlib.util.find_spec("bridge")
    assert package is not None and package.submodule_search_locations
    path = Path(next(iter(package.submodule_search_locations))) / "livekit_io" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"native_floor_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def _receiver_main() -> None:
    census: Counter[str] | None = Counter() if os.environ.get(CENSUS_ENV) == "1" else None
    capture = os.environ.get(CAPTURE_ENV, "1") != "0"
    if census is not None or not capture:
        _patch_ffi(capture, census)

    from livekit import rtc

    from bench.load.workers import _serve_commands, floor_rtc_configuration

    rooms: list[rtc.Room] = []
    totals = {"packets": 0, "bytes": 0}

    def on_data(packet: rtc.DataPacket) -> None:
        # The floor's whole per-packet work: read the send time.
        HEADER.unpack_from(packet.data, 1)
        totals["packets"] += 1
        totals["bytes"] += len(packet.data)

    async def hello(_command: dict[str, Any]) -> dict[str, Any]:
        loop = type(asyncio.get_running_loop())
        return {"pid": os.getpid(), "loop": f"{loop.__module__}.{loop.__name__}"}

    async def connect(command: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        rtc_config = floor_rtc_configuration() if command["rtc"] == "once" else None
        options = rtc.RoomOptions(
            auto_subscribe=command["auto_subscribe"],
            rtc_config=rtc_config,
            single_peer_connection=command["single_pc"],
        )
        narrowed = 0
        for token in command["tokens"]:  # one at a time, as the bridge connects rooms
            room = rtc.Room()
            room.on("data_received", on_data)
            await asyncio.wait_for(room.connect(command["url"], token, options), 30)
            rooms.append(room)
            if command["ffi_filter"]:
                narrowed += _bridge_livekit_io("ffi_filter").narrow_to_own_events(room) is not None
        return {
            "connected": len(rooms),
            "narrowed": narrowed,
            "connect_s": time.monotonic() - started,
            "trio_asyncio": "trio_asyncio" in sys.modules,
        }

    async def count(_command: dict[str, Any]) -> dict[str, Any]:
        return dict(totals)

    async def census_reply(_command: dict[str, Any]) -> dict[str, Any]:
        return {"census": dict(census or {})}

    async def quit_(_command: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.disconnect() for r in rooms), return_exceptions=True), 10
            )
        return {"ok": True}

    await _serve_commands(
        {"hello": hello, "connect": connect, "count": count, "census": census_reply, "quit": quit_}
    )


# --------------------------------------------------------------------------------------------
# the phones process
# --------------------------------------------------------------------------------------------


async def _phones_main() -> None:
    from livekit import rtc

    from bench.load.workers import _serve_commands

    rooms: list[rtc.Room] = []
    tasks: list[asyncio.Task[None]] = []
    mode = {"on": False, "size": PCM_BYTES, "reliable": False}
    totals = {"sent": 0, "errors": 0, "late": 0}

    async def send(index: int, room: rtc.Room, to: str, start: float) -> None:
        loop = asyncio.get_running_loop()
        noise = noise_body(index)
        async for tick, due in ticks(start):
            if loop.time() - due > PERIOD_S:
                totals["late"] += 1
            counter = tick + 1
            if not mode["on"]:
                continue
            size = int(mode["size"])
            packet = (
                bytes([counter & 0xFF])
                + HEADER.pack(time.time_ns(), index, counter)
                + noise[: size - HEADER.size]
            )
            try:
                await room.local_participant.publish_data(
                    packet, reliable=bool(mode["reliable"]), destination_identities=[to]
                )
                totals["sent"] += 1
            except Exception:
                totals["errors"] += 1

    async def connect(command: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        for spec in command["phones"]:
            room = rtc.Room()
            await asyncio.wait_for(
                room.connect(command["url"], spec["token"], rtc.RoomOptions(auto_subscribe=False)), 30
            )
            rooms.append(room)
        loop = asyncio.get_running_loop()
        base = loop.time() + 0.2
        n = len(rooms)
        for i, (room, spec) in enumerate(zip(rooms, command["phones"], strict=True)):
            # Spread over the period, as real phones (and bench.load's) are.
            tasks.append(loop.create_task(send(i, room, spec["to"], base + PERIOD_S * i / max(1, n))))
        return {"connected": n, "connect_s": time.monotonic() - started}

    async def set_mode(command: dict[str, Any]) -> dict[str, Any]:
        mode.update(
            on=command["on"], size=command.get("size", PCM_BYTES), reliable=command.get("reliable", False)
        )
        return dict(totals)

    async def count(_command: dict[str, Any]) -> dict[str, Any]:
        return dict(totals)

    async def quit_(_command: dict[str, Any]) -> dict[str, Any]:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.disconnect() for r in rooms), return_exceptions=True), 10
            )
        return {"ok": True}

    await _serve_commands({"connect": connect, "mode": set_mode, "count": count, "quit": quit_})


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------


def thread_names(pid: int) -> Counter[str]:
    names: Counter[str] = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{pid}/task/{tid}/comm", encoding="ascii", errors="replace") as f,
        ):
            names[f.read().strip()] += 1
    return names


async def _window(worker: Any, pid: int, seconds: float) -> tuple[dict[str, float], int, int, float]:
    """CPU seconds by group, packets and bytes the handlers got, over ``seconds`` (measured)."""
    g0, c0, t0 = cpu_by_group(pid), await worker.call({"cmd": "count"}, 10), time.monotonic()
    await asyncio.sleep(seconds)
    g1, c1, t1 = cpu_by_group(pid), await worker.call({"cmd": "count"}, 10), time.monotonic()
    cpu = {g: g1[g] - g0[g] for g in GROUPS}
    return cpu, c1["packets"] - c0["packets"], c1["bytes"] - c0["bytes"], t1 - t0


async def _profile(pid: int, seconds: float, out: Path, args: argparse.Namespace) -> None:
    """perf record (software cpu-clock, call graphs) and/or py-spy --native of the receiver."""
    if args.perf > 0:
        perf = shutil.which("perf")
        if perf is None:
            print("  perf: not found; skipped", flush=True)
        else:
            data = out / f"perf-{pid}.data"
            proc = await asyncio.create_subprocess_exec(
                perf, "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(pid), "-o", str(data),
                "--", "sleep", str(args.perf),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.wait_for(proc.wait(), args.perf + 30)
            print(f"  perf record: {data}", flush=True)
            for sort, limit in (("comm", 8), ("dso", 10), ("comm,dso,sym", 40)):
                report = await asyncio.create_subprocess_exec(
                    perf, "report", "-i", str(data), "--no-children", "-g", "none", "--sort", sort,
                    "--stdio", "--percent-limit", "0.7",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                text, _ = await asyncio.wait_for(report.communicate(), 300)
                lines = [
                    line
                    for line in text.decode(errors="replace").splitlines()
                    if line.strip() and not line.startswith("#")
                ]
                print(f"  perf report --sort {sort} (top {limit}):", flush=True)
                for line in lines[:limit]:
                    print("    " + line.rstrip()[:150], flush=True)
    if args.py_spy > 0:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.access(py_spy, os.X_OK):
            print("  py-spy: not found; skipped", flush=True)
            return
        flame = out / f"py-spy-{pid}.txt"
        proc = await asyncio.create_subprocess_exec(
            py_spy, "record", "--native", "--threads", "--format", "raw", "-r", "200",
            "-d", str(int(args.py_spy)), "-p", str(pid), "-o", str(flame),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(proc.wait(), args.py_spy + 60)
        print(f"  py-spy --native (collapsed stacks): {flame}", flush=True)


@dataclass
class Row:
    name: str
    sent: int
    received: int
    bytes: int
    seconds: float
    cpu: dict[str, float]
    idle_cpu_pct: float
    tokio_threads: int
    load: str
    narrowed: int = 0
    census: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.cpu.values())

    def per_packet_us(self, seconds: float) -> float:
        return 1e6 * seconds / self.received if self.received else float("nan")

    @property
    def net_us(self) -> float:
        """CPU per packet once the idle rooms' own cost over the window is taken out."""
        idle = self.idle_cpu_pct / 100 * self.seconds
        return self.per_packet_us(self.total - idle)


HEAD = (
    f"{'try':<22} {'sent':>6} {'recv':>6} {'µs/pkt':>7} {'net':>6} {'netw_th':>7} {'tokio':>6} {'main':>6}"
    f" {'other':>6} {'idle%':>6} {'tokio#':>6} {'ratio':>6}  load"
)


def format_row(row: Row, baseline: Row | None) -> str:
    total = row.per_packet_us(row.total)
    ratio = total / baseline.per_packet_us(baseline.total) if baseline and baseline.received else float("nan")
    groups = " ".join(
        f"{row.per_packet_us(row.cpu[g]):>{w}.0f}" for g, w in zip(GROUPS, (7, 6, 6, 6), strict=True)
    )
    return (
        f"{row.name:<22} {row.sent:>6} {row.received:>6} {total:>7.0f} {row.net_us:>6.0f} {groups}"
        f" {row.idle_cpu_pct:>6.2f} {row.tokio_threads:>6} {ratio:>6.2f}  {row.load}"
    )


async def run_try(
    t: Try,
    args: argparse.Namespace,
    lk: Any,
    children: Children,
    phones: Any,
    cores: Any,
    out: Path,
    rooms: list[str],
    show: Any,
) -> Row:
    from bench.lib import load_average, module_argv
    from bench.load.driver import Worker

    env = {**os.environ, **t.env}
    if t.sink_warning:
        library = sink_warning_library()
        if library is None:
            raise RuntimeError(
                "the installed livekit native library is not the one the patch was written for"
            )
        env["LIVEKIT_LIB_PATH"] = str(library)
    log = out / f"receiver-{t.name}.log"
    proc = await children.spawn(
        module_argv(MODULE, "receiver"), cores=cores[0] if cores else None, env=env, log_path=log, pipes=True
    )
    worker = Worker(f"receiver {t.name}", proc, log)
    try:
        await phones.call({"cmd": "mode", "on": False}, 10)
        loop = (await worker.call({"cmd": "hello"}, 60))["loop"]
        if not loop.startswith("asyncio."):
            raise RuntimeError(f"the receiver runs on {loop}, not plain asyncio")
        tokens = [lk.token(f"floor-{i}", room) for i, room in enumerate(rooms)]
        connect = {
            "cmd": "connect", "url": lk.url, "tokens": tokens, "rtc": t.rtc, "single_pc": t.single_pc,
            "auto_subscribe": t.auto_subscribe, "ffi_filter": t.ffi_filter,
        }  # fmt: skip
        connected = await worker.call(connect, 30 + 5 * len(rooms))
        if connected["trio_asyncio"]:
            raise RuntimeError("trio_asyncio was imported into the receiver")
        if t.ffi_filter and connected["narrowed"] != len(rooms):
            raise RuntimeError(
                f"narrow_to_own_events applied to {connected['narrowed']} of {len(rooms)} rooms"
            )
        await asyncio.sleep(args.settle)
        idle_cpu, _, _, idle_s = await _window(worker, proc.pid, args.idle)
        idle_pct = 100 * sum(idle_cpu.values()) / idle_s
        load = load_average().split()[0]
        await phones.call({"cmd": "mode", "on": True, "size": t.size, "reliable": t.reliable}, 10)
        await asyncio.sleep(args.warmup)
        sent_w0 = (await phones.call({"cmd": "count"}, 10))["sent"]
        cpu, packets, nbytes, seconds = await _window(worker, proc.pid, args.seconds)
        sent_w1 = (await phones.call({"cmd": "count"}, 10))["sent"]
        tokio = sum(n for name, n in thread_names(proc.pid).items() if name.startswith("tokio-rt-worker"))
        row = Row(
            t.name,
            sent_w1 - sent_w0,
            packets,
            nbytes,
            seconds,
            cpu,
            idle_pct,
            tokio,
            load,
            connected["narrowed"],
        )
        show(row)
        if t.name == args.profile_try and (args.perf > 0 or args.py_spy > 0):
            await _profile(proc.pid, args.perf, out, args)
        if t.diagnostic:
            row.census = (await worker.call({"cmd": "census"}, 10))["census"]
        await phones.call({"cmd": "mode", "on": False}, 10)
        with contextlib.suppress(TimeoutError):
            await worker.call({"cmd": "quit"}, 20)
    finally:
        await children.stop(proc, grace_s=5)
    return row


def print_medians(rows: list[Row]) -> None:
    """One row per try: each figure the median of its rounds; ratio = median total ÷ baseline's."""
    import statistics

    print(f"\n== medians over the rounds (µs per packet) ==\n{HEAD}")
    base_total: float | None = None
    for name in dict.fromkeys(row.name for row in rows):
        mine = [row for row in rows if row.name == name and row.received]
        if not mine:
            continue
        per = {g: statistics.median(r.per_packet_us(r.cpu[g]) for r in mine) for g in GROUPS}
        total = statistics.median(r.per_packet_us(r.total) for r in mine)
        if name == "baseline":
            base_total = total
        ratio = total / base_total if base_total else float("nan")
        net = statistics.median(r.net_us for r in mine)
        groups = " ".join(f"{per[g]:>{w}.0f}" for g, w in zip(GROUPS, (7, 6, 6, 6), strict=True))
        sent = int(statistics.median(r.sent for r in mine))
        received = int(statistics.median(r.received for r in mine))
        idle = statistics.median(r.idle_cpu_pct for r in mine)
        print(
            f"{name:<22} {sent:>6} {received:>6} {total:>7.0f} {net:>6.0f} {groups}"
            f" {idle:>6.2f} {mine[0].tokio_threads:>6} {ratio:>6.2f}  {len(mine)} rounds"
        )


def print_census(row: Row, packets_total: int) -> None:
    census = row.census
    print(f"\n  census ({row.name}), over the receiver's whole life, {packets_total} packets received:")
    events = sorted(
        ((k, v) for k, v in census.items() if k.startswith(("event:", "room_event:"))), key=lambda kv: -kv[1]
    )
    for key, value in events[:8]:
        print(f"    {key:<44} {value:>8}  ({value / max(1, packets_total):.2f} per packet)")
    logs = census.get("logs_total", 0)
    print(f"    log records crossing into Python: {logs} ({logs / max(1, packets_total):.2f} per packet)")
    top = sorted(((k, v) for k, v in census.items() if k.startswith("log:")), key=lambda kv: -kv[1])
    for key, value in top[:10]:
        text = census.get("logbytes:" + key[4:], 0)
        print(f"      {value:>7} records, {text / max(1, value):>6.0f} B of text each  {key[4:]}")


async def run(args: argparse.Namespace, lk: Any, children: Children) -> int:
    from bench.lib import load_average, module_argv, place_on_load_core
    from bench.load.driver import Worker

    out = Path(args.out) / f"native-floor-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    cores = place_on_load_core(lk, "receiver (phones: the load core)")
    print(f"load average at start: {load_average()}", flush=True)
    tries = [BY_NAME[name] for name in args.tries.split(",") if name]
    if any(t.sink_warning for t in tries) and sink_warning_library() is None:
        print("NOTE: the installed livekit native library is not livekit 1.2.1's: sink-warning tries skipped")
        tries = [t for t in tries if not t.sink_warning]
    run_id = uuid.uuid4().hex[:6]
    rooms = [f"floor-{run_id}-{i}" for i in range(args.n)]
    assert lk.process is not None
    watchdog = await children.watch(lk.process.pid, str(lk.log_path.parent))
    rows: list[Row] = []
    try:
        log = out / "phones.log"
        proc = await children.spawn(
            module_argv(MODULE, "phones"), cores=cores[1] if cores else None, log_path=log, pipes=True
        )
        phones = Worker("phones", proc, log)
        specs = [{"token": lk.token(f"phone-{i}", room), "to": f"floor-{i}"} for i, room in enumerate(rooms)]
        connected = await phones.call({"cmd": "connect", "url": lk.url, "phones": specs}, 30 + 5 * args.n)
        print(
            f"{args.n} phones connected in {connected['connect_s']:.1f} s; "
            f"{len(tries)} tries, {args.seconds:g} s windows"
        )
        print(
            f"CPU per received packet in µs, by thread group; idle% = the receiver with {args.n} silent rooms"
        )
        print(HEAD, flush=True)
        baseline: Row | None = None
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"-- round {round_ + 1} of {args.rounds}", flush=True)
            for t in tries:

                def show(row: Row, t: Try = t) -> None:
                    nonlocal baseline
                    if t.name == "baseline":
                        baseline = row
                    print(format_row(row, baseline) + ("   (diagnostic)" if t.diagnostic else ""), flush=True)

                row = await run_try(t, args, lk, children, phones, cores, out, rooms, show)
                rows.append(row)
                if row.census:
                    print_census(row, row.census.get("room_event:data_packet_received", row.received))
        with contextlib.suppress(Exception):
            await phones.call({"cmd": "quit"}, 20)
    finally:
        await children.close()
        await children.disarm(watchdog)
    if args.rounds > 1:
        print_medians(rows)
    print(f"\nload average at end: {load_average()}")
    print("\n  " + "\n  ".join(f"{t.name:<22} {t.what}" for t in tries))
    print(f"logs: {out}")
    return 0


def main() -> int:
    if len(sys.argv) == 2 and sys.argv[1] in ("receiver", "phones"):
        asyncio.run(_receiver_main() if sys.argv[1] == "receiver" else _phones_main())
        return 0
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="rooms (phones, and rooms of the receiver)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per try")
    parser.add_argument("--idle", type=float, default=3.0, help="idle window per try (phones silent)")
    parser.add_argument("--warmup", type=float, default=2.0, help="traffic before each window")
    parser.add_argument("--settle", type=float, default=1.0, help="after the rooms connected, before idle")
    parser.add_argument("--rounds", type=int, default=1, help="run the list of tries this many times")
    parser.add_argument(
        "--tries", default=",".join(t.name for t in TRIES), help="comma-separated (see --list)"
    )
    parser.add_argument(
        "--perf", type=float, default=0.0, help="perf record the --profile-try try for this many s"
    )
    parser.add_argument(
        "--py-spy", type=float, default=0.0, help="py-spy --native the --profile-try try for this many s"
    )
    parser.add_argument("--profile-try", default="baseline", help="the try --perf / --py-spy profile")
    parser.add_argument("--list", action="store_true", help="print the tries and exit")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    if args.list:
        for t in TRIES:
            print(f"{t.name:<22} {t.what}")
        return 0
    unknown = [name for name in args.tries.split(",") if name and name not in BY_NAME]
    if unknown:
        parser.error(f"unknown tries {unknown}; see --list")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be in [1, 10]")
    if not 1 <= args.n <= 60:
        parser.error("--n must be in [1, 60]")
    if not 0 < args.seconds <= 600 or not 0 < args.idle <= 60:
        parser.error("--seconds must be in (0, 600], --idle in (0, 60]")
    from bench.lib import run_with_local_livekit

    return run_with_local_livekit(lambda lk, children: run(args, lk, children))


if __name__ == "__main__":
    sys.exit(main())
