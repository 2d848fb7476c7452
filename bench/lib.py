"""The bench library: what bench.load, bench.soak and the other benchmarks share.

- processes: spawn children pinned to CPU cores that die with us (``prctl(PR_SET_PDEATHSIG)``), and
  kill every one of them on exit, Ctrl-C and errors included; the pinning itself (``pick_cores``);
  bench modules run as children with ``python -m`` from the checkout (``module_argv``);
- /proc readings: a process's CPU seconds (all threads), threads and RSS; the bridge's heap split
  and callback backlog from its /metrics;
- the bridge as a subprocess (``python -m bridge``) with a grpclib client and HealthCheck snapshots;
- small statistics: percentiles and a least-squares slope;
- ``MediaFiles``: a loopback HTTP server for PlayAudio (whole files, or trickled at a given rate).

Everything here is plain asyncio: grpclib and the livekit SDK speak asyncio natively, and a benchmark
driver has no reason to pay for trio-asyncio. Run it with ``run_on_asyncio``, not ``asyncio.run``:
importing the bridge imports trio-asyncio, after which ``asyncio.run`` runs on trio-asyncio's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from grpclib.client import Channel
from prometheus_client.parser import text_string_to_metric_families

from bridge._gen.mentra.livekit.bridge import HealthCheckRequest, HealthCheckResponse, LiveKitBridgeStub
from bridge.testing.ports import free_port

if TYPE_CHECKING:
    from bridge.testing.devserver import LocalLiveKitServer

__all__ = [
    "HEAP_KINDS",
    "REPO_ROOT",
    "BridgeProcess",
    "Children",
    "Health",
    "MediaFiles",
    "cpu_seconds",
    "free_port",
    "least_squares_slope",
    "load_average",
    "module_argv",
    "percentiles",
    "pick_cores",
    "place_on_load_core",
    "rss_mib",
    "run_on_asyncio",
    "run_with_local_livekit",
    "scrape_memory_and_backlog",
    "start_bridge",
    "tail",
    "thread_count",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout: children run from here, so ``python -m bench.…`` finds this package."""

# Runs in the child before exec: pin to the given cores, back to the default scheduling priority (a
# benchmark may raise its own), die with the parent (PR_SET_PDEATHSIG = 1), and give up if the parent
# already died between fork and prctl. Affinity, priority and the death signal all survive exec, and
# every thread the program starts later inherits them.
_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "cores = {int(c) for c in sys.argv[1].split(',') if c}\n"
    "if cores:\n"
    "    os.sched_setaffinity(0, cores)\n"
    "os.setpriority(os.PRIO_PROCESS, 0, 0)\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[2]):\n"
    "    os._exit(1)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


# Kills one process (SIGKILL) when the parent dies, however it dies: for a process we did not
# spawn ourselves (LocalLiveKitServer's server). It checks the victim's command line first, so a
# reused pid is never hit; stopping the watchdog with SIGKILL disarms it.
_WATCHDOG = (
    "import ctypes, os, signal, sys\n"
    "pid, parent, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()\n"
    "def fire(*_):\n"
    "    try:\n"
    "        with open(f'/proc/{pid}/cmdline', 'rb') as f:\n"
    "            if marker in f.read():\n"
    "                os.kill(pid, signal.SIGKILL)\n"
    "    except OSError:\n"
    "        pass\n"
    "    os._exit(0)\n"
    "signal.signal(signal.SIGTERM, fire)\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != parent:\n"
    "    fire()\n"
    "while True:\n"
    "    signal.pause()\n"
)


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[17])


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


HEAP_KINDS = ("python_blocks", "in_use", "free", "mmap")


def scrape_memory_and_backlog(metrics_port: int, timeout_s: float = 5.0) -> tuple[dict[str, float], int]:
    """From the bridge's /metrics: its heap split (bridge.memory; Python blocks as a count, C heap in
    MiB) and its callback backlog (every queue summed: work waiting to run)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    heap: dict[str, float] = {}
    backlog = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "livekit_bridge_python_allocated_blocks":
                heap["python_blocks"] = sample.value
            elif sample.name == "livekit_bridge_c_heap_bytes":
                heap[sample.labels["kind"]] = sample.value / 2**20
            elif sample.name == "livekit_bridge_callback_backlog":
                backlog += int(sample.value)
    return heap, backlog


def pick_cores() -> tuple[set[int], set[int]] | None:
    """Two disjoint single-core sets (bridge side, load side), or None with fewer than 2 cores."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return {allowed[0]}, {allowed[1]}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max and the count (None when there are no values)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        "n": len(values),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(array.max()),
    }


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Slope of the least-squares line through (xs, ys); None with fewer than 2 distinct xs."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    slope, _ = np.polyfit(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), 1)
    return float(slope)


def module_argv(module: str, *args: str) -> list[str]:
    """The command line of a bench module run as a child process (``Children.spawn`` runs it from
    REPO_ROOT, where ``-m`` finds the ``bench`` package)."""
    return [sys.executable, "-m", module, *args]


# --------------------------------------------------------------------------------------------
# child processes
# --------------------------------------------------------------------------------------------


class Children:
    """Every process a benchmark spawns; ``close()`` ends them all (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self._procs: list[asyncio.subprocess.Process] = []

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cores: set[int] | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        pipes: bool = False,
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` pinned to ``cores`` (None: not pinned), dying with this process.

        stderr (and stdout unless ``pipes``) go to ``log_path``; with ``pipes`` stdin/stdout are
        pipes for a JSON-lines control protocol.
        """
        core_arg = ",".join(str(c) for c in sorted(cores)) if cores else ""
        full = [sys.executable, "-c", _TRAMPOLINE, core_arg, str(os.getpid()), *argv]
        log = open(log_path, "ab") if log_path is not None else None  # noqa: ASYNC230, SIM115
        try:
            proc = await asyncio.create_subprocess_exec(
                *full,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else (log or asyncio.subprocess.DEVNULL),
                stderr=log or asyncio.subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=REPO_ROOT,
                # Own process group: Ctrl-C reaches only us, and we stop the children in order.
                start_new_session=True,
                limit=1 << 24,
            )
        finally:
            if log is not None:
                log.close()
        self._procs.append(proc)
        return proc

    async def stop(
        self, proc: asyncio.subprocess.Process, grace_s: float = 5.0, sig: int = signal.SIGTERM
    ) -> int:
        """Signal ``proc`` and wait ``grace_s``; SIGKILL after that. Returns the exit code."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode if proc.returncode is not None else -1

    async def close(self) -> None:
        """Stop every child still running (newest first); safe to call more than once."""
        for proc in reversed(list(self._procs)):
            with contextlib.suppress(Exception):
                await self.stop(proc, grace_s=3.0)
        self._procs.clear()

    async def watch(self, pid: int, marker: str) -> asyncio.subprocess.Process:
        """A watchdog that SIGKILLs ``pid`` (if its command line contains ``marker``) should this
        process die without cleaning up (SIGKILL, a crash). ``disarm`` it before stopping ``pid``."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WATCHDOG,
            str(pid),
            str(os.getpid()),
            marker,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )

    @staticmethod
    async def disarm(watchdog: asyncio.subprocess.Process) -> None:
        if watchdog.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                watchdog.kill()
        await watchdog.wait()

    def kill_all_now(self) -> None:
        """Synchronous last resort (e.g. from a ``finally`` after the loop is gone)."""
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)
        self._procs.clear()


def tail(path: Path, limit: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "<no log>"
    return data[-limit:].decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# the bridge as a subprocess
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What one HealthCheck says, as numbers."""

    trio_tasks: int
    asyncio_tasks: int
    active_sessions: int
    active_streams: int
    packets_lost: int
    queue_dropped_chunks: int
    sessions_started: int
    raw: dict[str, str]

    @classmethod
    def of(cls, response: HealthCheckResponse) -> Health:
        meta = dict(response.metadata)

        def number(key: str) -> int:
            try:
                return int(meta.get(key, "-1"))
            except ValueError:
                return -1

        return cls(
            trio_tasks=number("trio_tasks"),
            asyncio_tasks=number("asyncio_tasks"),
            active_sessions=response.active_sessions,
            active_streams=response.active_streams,
            packets_lost=number("packets_lost"),
            queue_dropped_chunks=number("queue_dropped_chunks"),
            sessions_started=number("sessions_started"),
            raw=meta,
        )

    @property
    def tasks(self) -> tuple[int, int]:
        return self.trio_tasks, self.asyncio_tasks


@dataclass(eq=False)
class BridgeProcess:
    proc: asyncio.subprocess.Process
    port: int
    """Its TCP port; 0 when it listens on a unix socket."""
    channel: Channel
    stub: LiveKitBridgeStub
    log_path: Path
    children: Children

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def health(self, timeout_s: float = 5.0) -> Health:
        return Health.of(await self.stub.health_check(HealthCheckRequest(), timeout=timeout_s))

    async def settled_health(self, timeout_s: float = 10.0) -> Health:
        """HealthCheck until task counts stop changing (three equal readings 0.2 s apart)."""
        deadline = time.monotonic() + timeout_s
        previous = await self.health()
        same = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            current = await self.health()
            same = same + 1 if current.tasks == previous.tasks else 0
            previous = current
            if same >= 2:
                break
        return previous

    async def wait_tasks(self, expected: tuple[int, int], timeout_s: float) -> Health:
        """Poll until the task counts equal ``expected`` (bounded); returns the last reading."""
        deadline = time.monotonic() + timeout_s
        current = await self.health()
        while current.tasks != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            current = await self.health()
        return current

    async def stop(self) -> int:
        """SIGTERM (graceful shutdown), SIGKILL after 15 s. Returns the exit code."""
        self.channel.close()
        return await self.children.stop(self.proc, grace_s=15.0)


def pin_all_threads(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` (threads it starts later inherit it): for the LiveKit server,
    which bridge.testing.devserver starts itself, so it stays off the measured core."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


def place_on_load_core(lk: LocalLiveKitServer, measured: str) -> tuple[set[int], set[int]] | None:
    """``pick_cores``, then this process and the LiveKit server on the load core, said on stdout;
    ``measured`` names what gets the other core. None (and a warning) with fewer than 2 cores."""
    cores = pick_cores()
    if cores is None:
        print("WARNING: fewer than 2 cores: nothing pinned")
        return None
    os.sched_setaffinity(0, cores[1])
    assert lk.process is not None
    pin_all_threads(lk.process.pid, cores[1])
    print(
        f"{measured} pinned to core {sorted(cores[0])}; "
        f"this driver and the LiveKit server to {sorted(cores[1])}"
    )
    return cores


def call_evenly(rate: float, seconds: float, call: Callable[[int], None]) -> threading.Thread:
    """A daemon thread calling ``call(i)`` for i = 0, 1, ... ``rate`` times a second for ``seconds``,
    evenly spaced on the schedule (a late call comes at once; the schedule does not shift): a
    stand-in for the SDK's thread delivering packets."""

    def run() -> None:
        period = 1.0 / rate
        start = time.monotonic()
        for i in range(round(rate * seconds)):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            call(i)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_on_asyncio(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on asyncio's own loop. Once trio-asyncio is imported (``bridge`` imports it),
    ``asyncio.new_event_loop()``, so ``asyncio.run``, gives its ``SyncTrioEventLoop``: a benchmark's
    cloud client and its bare-SDK references would pay trio-asyncio's cost per wakeup (about twice
    asyncio's, ``bench.wakeups``), and on the load core that was counted in the bridge's latency."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(main)


def run_with_local_livekit(run: Callable[[LocalLiveKitServer, Children], Awaitable[int]]) -> int:
    """A benchmark's ``main`` around ``run(livekit_server, children)``: the LiveKit server built if
    needed and started on loopback (before ``run`` pins this process, whose affinity the server's
    threads would otherwise inherit; ``run`` places them with ``pin_all_threads``), ``run`` on
    asyncio, and every process stopped at the end, on Ctrl-C and errors too."""
    from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

    ensure_server_binary(log=lambda message: print(message, file=sys.stderr))
    children = Children()
    lk = LocalLiveKitServer()
    try:
        lk.start()
        return run_on_asyncio(run(lk, children))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process", file=sys.stderr)
        return 130
    finally:
        children.kill_all_now()
        lk.close()


async def start_bridge(
    children: Children,
    *,
    livekit_url: str,
    log_path: Path,
    cores: set[int] | None = None,
    settings: Mapping[str, str] | None = None,
    ready_timeout_s: float = 30.0,
    unix_socket: Path | None = None,
) -> BridgeProcess:
    """``python -m bridge`` on a free loopback port, or on ``unix_socket`` (``LIVEKIT_GRPC_SOCKET``,
    as beside a cloud instance), pinned to ``cores``; returns once HealthCheck answers."""
    port = 0 if unix_socket else free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "BRIDGE_HOST": "127.0.0.1",
        "LIVEKIT_URL": livekit_url,
        "BRIDGE_LOG_LEVEL": "WARNING",
        **(settings or {}),
    }
    env.pop("LIVEKIT_GRPC_SOCKET", None)
    if unix_socket:
        env["LIVEKIT_GRPC_SOCKET"] = str(unix_socket)
    if os.environ.get("BENCH_BRIDGE_SRC"):  # another checkout's bridge, for before/after runs
        env["PYTHONPATH"] = os.environ["BENCH_BRIDGE_SRC"]
    proc = await children.spawn([sys.executable, "-m", "bridge"], cores=cores, env=env, log_path=log_path)
    channel = Channel(path=str(unix_socket)) if unix_socket else Channel("127.0.0.1", port)
    bridge = BridgeProcess(proc, port, channel, LiveKitBridgeStub(channel), log_path, children)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.returncode is not None:
            channel.close()
            raise RuntimeError(f"the bridge exited with {proc.returncode}; log tail:\n{tail(log_path)}")
        try:
            await bridge.health(timeout_s=1.0)
            return bridge
        except (TimeoutError, OSError):
            pass
        except Exception as err:  # grpclib raises its own errors while the port is not up yet
            if "Connection" not in type(err).__name__ and "StreamTerminated" not in type(err).__name__:
                raise
        if time.monotonic() > deadline:
            await bridge.stop()
            raise RuntimeError(
                f"the bridge did not answer within {ready_timeout_s} s; log:\n{tail(log_path)}"
            )
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------
# audio files for PlayAudio
# --------------------------------------------------------------------------------------------


class MediaFiles:
    """A loopback HTTP server (in a thread) serving fixed files for PlayAudio: whole, or trickled at
    ``bytes_per_s`` in 1/20 s pieces (a server producing audio as it goes). No keep-alive: every
    fetch has its own connection, as the bridge makes them."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int | None]] = {}
        self._closing = threading.Event()
        files, closing = self.files, self._closing

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                entry = files.get(self.path)
                if entry is None:
                    self.send_error(404, "Not Found")
                    return
                data, rate = entry
                self.send_response(200)
                self.send_header("Connection", "close")
                self.close_connection = True
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if rate is None:
                        self.wfile.write(data)
                        return
                    piece = max(1, rate // 20)
                    for start in range(0, len(data), piece):
                        self.wfile.write(data[start : start + piece])
                        self.wfile.flush()
                        if closing.wait(0.05):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bridge hung up (a stop): expected

        class QuietServer(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, path: str, data: bytes, bytes_per_s: int | None = None) -> str:
        self.files[path] = (data, bytes_per_s)
        return self.base_url + path

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
