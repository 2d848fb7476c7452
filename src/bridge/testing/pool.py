"""A pool of bridges behind HAProxy, with real phones and the TypeScript client as the cloud.

Shared by tests/pool (``nox -s pool``) and ``python -m bench.handover``. Everything is a real
process on 127.0.0.1:

- a LiveKit server (``LocalLiveKitServer``);
- N bridges (``python -m bridge``), each with its metrics port (``/readyz`` for the proxy's checks);
- HAProxy running ``deploy/haproxy/haproxy.cfg`` as shipped, with only its server lines replaced by
  the loopback bridges (``render_haproxy_config``);
- phones: one process (``python -m bridge.testing.pool phones CONFIG``) driving one room per user,
  each sending a numbered mic packet every ``PACKET_INTERVAL_S`` on a fixed schedule;
- the cloud: ``node clients/typescript/dist/test/pool/cloud.js CONFIG`` (build the client first),
  one ``LiveKitGrpcClient`` per user through the proxy, recording which packets arrive.

A "mic gap" is measured at the cloud from the packets' counters: the longest run of consecutive
packets a user's phone sent that never reached the cloud (``mic_gaps``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .devserver import LocalLiveKitServer, ensure_server_binary
from .ports import free_port

__all__ = [
    "PACKET_INTERVAL_S",
    "Bridge",
    "Gap",
    "Haproxy",
    "JsonLineProcess",
    "Pool",
    "balance_bound",
    "find_repo",
    "mic_gaps",
    "render_haproxy_config",
]

PACKET_INTERVAL_S = 0.1
PACKET_BYTES = 3200  # 100 ms of 16 kHz mono s16le; the first 8 bytes are phone index and counter
BRIDGE_READY_TIMEOUT_S = 30.0
SERVERS_BEGIN = "# servers:begin"
SERVERS_END = "# servers:end"
HASH_BALANCE_FACTOR_RE = re.compile(r"^\s*hash-balance-factor\s+(\d+)", re.MULTILINE)


def find_repo() -> Path:
    """The checkout (deploy/haproxy and clients/typescript live there); $BRIDGE_REPO wins."""
    env = os.environ.get("BRIDGE_REPO")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deploy" / "haproxy" / "haproxy.cfg").exists():
            return parent
    return Path.cwd()


def _http_status(url: str, timeout_s: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return None


def _wait(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


# ------------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------------


class _Tail:
    """The last lines of a process's output, read by a thread (for failure messages)."""

    def __init__(self, stream: IO[bytes], keep: int = 200) -> None:
        self.lines: list[str] = []
        self._keep = keep
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip())
            if len(self.lines) > self._keep:
                del self.lines[0]

    def text(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass(eq=False)
class Bridge:
    """One ``python -m bridge`` on fixed loopback ports, restartable on the same ports."""

    name: str
    livekit_url: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tail: _Tail | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True, **extra_env: str) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PORT": str(self.port),
            "BRIDGE_HOST": "127.0.0.1",
            "BRIDGE_METRICS_PORT": str(self.metrics_port),
            "LIVEKIT_URL": self.livekit_url,
            "BRIDGE_LOG_LEVEL": "WARNING",
            **self.env,
            **extra_env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        self.tail = _Tail(self.proc.stdout)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = BRIDGE_READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"bridge {self.name} exited:\n{self.describe()}")
            return self.readyz() == 200

        _wait(ready, timeout_s, f"bridge {self.name} /readyz")

    def readyz(self) -> int | None:
        return _http_status(f"http://127.0.0.1:{self.metrics_port}/readyz")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by its name with labels (``name{a="b"}``)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def sessions(self) -> int:
        return int(self.metrics().get("livekit_bridge_sessions", 0))

    def kill(self) -> None:
        """SIGKILL: a crash; nothing is handed over."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 60.0) -> float:
        """SIGTERM (drain, then shutdown); returns how long the process took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout_s)
        return time.monotonic() - started

    def close(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 5)

    def describe(self) -> str:
        return self.tail.text() if self.tail is not None else "not started"


def render_haproxy_config(template: str, bridges: Sequence[Bridge]) -> str:
    """``template`` (deploy/haproxy/haproxy.cfg) with its server lines replaced by ``bridges``; the
    rest is used as shipped."""
    begin, end = template.index(SERVERS_BEGIN), template.index(SERVERS_END)
    begin = template.rindex("\n", 0, begin) + 1
    end = template.index("\n", end) + 1
    servers = "".join(f"    server {b.name} {b.address} check port {b.metrics_port}\n" for b in bridges)
    return template[:begin] + servers + template[end:]


def balance_bound(template: str, users: int, servers: int) -> int:
    """The most sessions one server may get from HAProxy's bounded-load hashing: ``factor`` % of the
    average, rounded up (HAProxy's ``chash_server_is_eligible``)."""
    match = HASH_BALANCE_FACTOR_RE.search(template)
    factor = int(match.group(1)) if match else 0
    if not factor:
        return users
    return math.ceil(users * factor / 100 / servers)


class Haproxy:
    """HAProxy on ``deploy/haproxy/haproxy.cfg`` in front of ``bridges``."""

    def __init__(self, bridges: Sequence[Bridge], workdir: Path, template: Path | None = None) -> None:
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.template_path = template or find_repo() / "deploy" / "haproxy" / "haproxy.cfg"
        self.template = self.template_path.read_text()
        self.port = free_port()
        self.stats_socket = workdir / "haproxy.sock"
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(render_haproxy_config(self.template, bridges))
        self.bridges = list(bridges)
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail: _Tail | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BRIDGE_PROXY_BIND": self.address,
            "BRIDGE_PROXY_STATS": str(self.stats_socket),
            "BRIDGE_POOL_SRV": "unused.invalid",
        }

    def check(self) -> None:
        subprocess.run([self.binary, "-c", "-q", "-f", str(self.config_path)], env=self.env(), check=True)

    def start(self) -> None:
        self.check()
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config_path)],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        self.tail = _Tail(self.proc.stdout)
        _wait(lambda: self.stats_socket.exists(), 10, "the HAProxy stats socket")
        self.wait_servers({b.name for b in self.bridges if b.running})

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers_up(self) -> set[str]:
        """Names of the servers HAProxy's checks see UP (in the JoinRoom ring)."""
        up = set()
        for line in self.command("show servers state bridges").splitlines()[2:]:
            words = line.split()
            # be_id be_name srv_id srv_name srv_addr srv_op_state (2 = running) ...
            if len(words) > 5 and words[5] == "2":
                up.add(words[3])
        return up

    def wait_servers(self, names: set[str], timeout_s: float = 10.0) -> None:
        try:
            _wait(lambda: self.servers_up() == names, timeout_s, f"HAProxy to see exactly {sorted(names)} up")
        except TimeoutError as err:
            raise TimeoutError(f"{err}; up: {sorted(self.servers_up())}\n{self.describe()}") from None

    def describe(self) -> str:
        return self.tail.text() if self.tail is not None else "not started"

    def stop_checks(self) -> None:
        """Stops the health checks (each one is a short-lived task in a bridge's metrics server, which
        a task count taken at the same moment would include)."""
        for bridge in self.bridges:
            self.command(f"disable health bridges/{bridge.name}")

    def start_checks(self) -> None:
        for bridge in self.bridges:
            self.command(f"enable health bridges/{bridge.name}")

    def sticky(self) -> dict[str, str]:
        """The stick table: user id -> server name."""
        by_id = {}
        for line in self.command("show servers state bridges").splitlines()[2:]:
            words = line.split()
            if len(words) > 3:
                by_id[words[2]] = words[3]
        out = {}
        for line in self.command("show table bridges").splitlines():
            match = re.search(r"key=(\S+) .*server_id=(\d+)", line)
            if match:
                out[match.group(1)] = by_id.get(match.group(2), match.group(2))
        return out

    def close(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 5)


class JsonLineProcess:
    """A child answering JSON-line commands (``{"id", "cmd", ...}`` -> ``{"id", "ok", ...}``)."""

    def __init__(self, argv: Sequence[str], cwd: Path | None = None, ready_timeout_s: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            list(argv), cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stderr is not None
        self.stderr = _Tail(self.proc.stderr)
        self._next = 1
        self._replies: dict[int, dict[str, Any]] = {}
        self._ready = threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(ready_timeout_s):
            self.close()
            raise RuntimeError(f"{argv[0]} {argv[1:3]} did not start:\n{self.stderr.text()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if message.get("event") == "ready":
                self._ready.set()
            elif "id" in message:
                with self._cond:
                    self._replies[message["id"]] = message
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def request(self, cmd: str, timeout_s: float = 60.0, **args: Any) -> dict[str, Any]:
        ident, self._next = self._next, self._next + 1
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **args}) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"no answer to {cmd} (exit {self.proc.poll()}):\n{self.stderr.text()}")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(ident)
        if not reply.get("ok"):
            raise RuntimeError(f"{cmd} failed: {reply.get('error')}")
        return reply

    def close(self, grace_s: float = 15.0) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: both children stop on it
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """One user's mic audio in a window: packets sent, missing at the cloud, the longest run of
    consecutive missing ones (as ms of audio), duplicates received."""

    sent: int
    missing: int
    longest_ms: float
    duplicates: int


def mic_gaps(received: dict[str, Any], sent: dict[str, Any]) -> dict[str, Gap]:
    """Per user, over the packets its phone sent in a window (``sent``: the phones' answer to
    ``{"cmd": "sent", "window": [t0, t1]}``, the first and last counter sent in it)."""
    out = {}
    for user, span in sent.items():
        first, last = int(span["first"]), int(span["last"])
        counters = [int(c) for c, _ in received[user]["received"]]
        seen = set(counters)
        duplicates = len(counters) - len(seen)
        run = longest = missing = 0
        for n in range(first, last + 1):
            if n in seen:
                run = 0
            else:
                missing += 1
                run += 1
                longest = max(longest, run)
        out[user] = Gap(max(0, last - first + 1), missing, longest * PACKET_INTERVAL_S * 1000, duplicates)
    return out


# ------------------------------------------------------------------------------------------------
# the pool
# ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Pool:
    """LiveKit, ``bridges`` bridges behind HAProxy, ``users`` phones and the TS cloud. Use as a
    context manager; ``connect()`` joins every user."""

    bridges_n: int = 3
    users_n: int = 30
    spare_n: int = 0
    """Bridges in the proxy's config but not started (scale-up: ``bridges[i].start()`` later)."""
    bridge_env: dict[str, str] = field(default_factory=dict)
    per_bridge_env: dict[int, dict[str, str]] = field(default_factory=dict)
    node: str = "node"
    livekit: LocalLiveKitServer = field(init=False)
    bridges: list[Bridge] = field(init=False, default_factory=list)
    proxy: Haproxy = field(init=False)
    phones: JsonLineProcess = field(init=False)
    cloud: JsonLineProcess = field(init=False)
    users: list[str] = field(init=False, default_factory=list)
    _stack: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    def __enter__(self) -> Pool:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        repo = find_repo()
        cloud_js = repo / "clients" / "typescript" / "dist" / "test" / "pool" / "cloud.js"
        if not cloud_js.exists():
            raise RuntimeError(f"{cloud_js} is missing: build the TypeScript client (npm run build)")
        workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bridge-pool-")))
        ensure_server_binary()
        self.livekit = self._stack.enter_context(LocalLiveKitServer())
        for i in range(self.bridges_n + self.spare_n):
            env = {**self.bridge_env, **self.per_bridge_env.get(i, {})}
            bridge = Bridge(f"b{i}", self.livekit.url, env)
            self.bridges.append(bridge)
            self._stack.callback(bridge.close)
            if i < self.bridges_n:
                bridge.start(wait=False)
        for bridge in self.bridges[: self.bridges_n]:
            bridge.wait_ready()
        self.proxy = Haproxy(self.bridges, workdir)
        self._stack.callback(self.proxy.close)
        self.proxy.start()

        self.users = [f"user-{i:02d}" for i in range(self.users_n)]
        rooms = {user: f"room-{user}" for user in self.users}
        phones_config = workdir / "phones.json"
        phones_config.write_text(
            json.dumps(
                {
                    "url": self.livekit.url,
                    "phones": [{"identity": u, "token": self.livekit.token(u, rooms[u])} for u in self.users],
                }
            )
        )
        self.phones = JsonLineProcess(
            [sys.executable, "-m", "bridge.testing.pool", "phones", str(phones_config)]
        )
        self._stack.callback(self.phones.close)
        cloud_config = workdir / "cloud.json"
        cloud_config.write_text(
            json.dumps(
                {
                    "address": self.proxy.address,
                    "users": [
                        {
                            "userId": u,
                            "roomName": rooms[u],
                            "token": self.livekit.token(f"bridge-{u}", rooms[u]),
                            "url": self.livekit.url,
                        }
                        for u in self.users
                    ],
                }
            )
        )
        self.cloud = JsonLineProcess([self.node, str(cloud_js), str(cloud_config)], cwd=cloud_js.parent)
        self._stack.callback(self.cloud.close)

    def connect(self) -> dict[str, Any]:
        return self.cloud.request("connect", timeout_s=120)

    def running(self) -> set[str]:
        return {b.name for b in self.bridges if b.running}

    def sessions(self) -> dict[str, int]:
        return {b.name: b.sessions() for b in self.bridges if b.running}

    def holders(self) -> dict[str, list[str]]:
        """Which bridges hold each user's session (asked directly, bypassing the proxy)."""
        return asyncio.run(_holders(self.bridges, self.users))

    def gaps(self, window: tuple[float, float]) -> dict[str, Gap]:
        """Mic gaps of the packets sent in ``window`` (epoch seconds, as the phones sent them); leave
        a second after its end for the packets still in flight."""
        sent = self.phones.request("sent", window=list(window))["phones"]
        received = self.cloud.request("received")["users"]
        return mic_gaps(received, sent)

    def participants(self) -> dict[str, list[str]]:
        """Room -> identities of the participants in it, from the LiveKit server's API."""
        return asyncio.run(_participants(self.livekit))


async def _holders(bridges: Sequence[Bridge], users: Sequence[str]) -> dict[str, list[str]]:
    from grpclib.client import Channel
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    from .._gen.mentra.livekit.bridge import BridgeStatusRequest, LiveKitBridgeStub

    out: dict[str, list[str]] = {u: [] for u in users}
    for bridge in bridges:
        if not bridge.running:
            continue
        channel = Channel("127.0.0.1", bridge.port)
        try:
            stub = LiveKitBridgeStub(channel)
            for user in users:
                try:
                    status = await stub.get_status(BridgeStatusRequest(user_id=user), timeout=5)
                except GRPCError as err:
                    if err.status is not Status.NOT_FOUND:
                        raise
                    continue
                if status.connected:
                    out[user].append(bridge.name)
        finally:
            channel.close()
    return out


async def _participants(livekit: LocalLiveKitServer) -> dict[str, list[str]]:
    from livekit import api

    out: dict[str, list[str]] = {}
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lkapi:
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest())
        for room in rooms.rooms:
            members = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room.name))
            out[room.name] = sorted(p.identity for p in members.participants)
    return out


# ------------------------------------------------------------------------------------------------
# the phones process
# ------------------------------------------------------------------------------------------------


async def _run_phones(config: dict[str, Any]) -> None:
    from livekit import rtc

    def emit(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    phones = config["phones"]
    rooms: list[rtc.Room] = []
    times: dict[str, list[float]] = {}  # per phone: when each counter was sent (epoch s)
    sem = asyncio.Semaphore(8)

    async def join(phone: dict[str, str]) -> rtc.Room:
        async with sem:
            room = rtc.Room()
            await asyncio.wait_for(room.connect(config["url"], phone["token"]), 20)
            return room

    rooms = list(await asyncio.gather(*(join(p) for p in phones)))
    filler = bytes(PACKET_BYTES - 8)

    async def send(index: int, room: rtc.Room, identity: str) -> None:
        # Phones spread over the period, each on a fixed schedule: counter n is due at start + n * interval.
        start = time.time() + index * PACKET_INTERVAL_S / len(phones) + 0.5
        sent = times[identity] = []
        n = 0
        while True:
            delay = start + n * PACKET_INTERVAL_S - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            packet = bytes([n % 256]) + struct.pack("<II", index, n) + filler
            sent.append(time.time())
            with contextlib.suppress(Exception):
                await room.local_participant.publish_data(packet, reliable=True)
            n += 1

    senders = [
        asyncio.create_task(send(i, room, p["identity"]))
        for i, (room, p) in enumerate(zip(rooms, phones, strict=True))
    ]
    emit({"event": "ready"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if request.get("cmd") == "sent":
                t0, t1 = request["window"]
                spans = {}
                for identity, sent_at in times.items():
                    first, last = bisect.bisect_left(sent_at, t0), bisect.bisect_right(sent_at, t1) - 1
                    spans[identity] = {"first": first, "last": last}
                emit({"id": request.get("id"), "ok": True, "phones": spans})
            else:
                emit({"id": request.get("id"), "ok": False, "error": f"unknown command {request.get('cmd')}"})
    finally:
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        for room in rooms:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 5)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "phones":
        print("usage: python -m bridge.testing.pool phones CONFIG.json", file=sys.stderr)
        return 2
    config = json.loads(Path(args[1]).read_text())
    asyncio.run(_run_phones(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
