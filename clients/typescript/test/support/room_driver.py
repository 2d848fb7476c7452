"""Room driver for the TypeScript client's integration tests: a real LiveKit server and real participants.

Spawned by test/support/room-driver.ts as ``$BRIDGE_PYTHON test/support/room_driver.py``. It starts a
loopback LiveKit server (bridge.testing.devserver), prints one JSON line ``{"event": "ready", ...}`` on stdout,
then answers JSON-line commands from stdin, one JSON line each on stdout:

    {"id": 1, "cmd": "token", "identity": "bridge-u1", "room": "r1"}
    ->  {"id": 1, "ok": true, "token": "..."}

Commands (every one bounded in time; see COMMAND_TIMEOUT_S):

    token            identity, room                       -> token
    connect          name, identity, room                 a participant, kept under ``name``
    wait_participant name, identity, timeout_s            until ``identity`` is in the room
    send_packets     name, first_seq, count, payload_bytes, interval_ms
                     the phone's microphone: lossy data packets, each one sequence byte + payload(n)
    listen           name, from_identity                  record every audio track of that participant
    heard            name, track, threshold               what was recorded on ``track`` (see _heard)
    forget           name                                 drop the recordings so far
    serve_dir        dir                                  a loopback HTTP server for files -> base_url
    disconnect       name
    server_log       lines                                the LiveKit server's last log lines, tokens
                     redacted -> log (a test adds them to an unexpected failure: the server's side)
    shutdown                                              everything stops; the process exits

EOF on stdin is a shutdown too, so a test runner that dies takes the driver (and the server) with it.
Everything stays on 127.0.0.1. Tokens go to stdout only (the test needs them); they are dev-key tokens
for this loopback server and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from bridge.redact import redact
from bridge.testing.analysis import dominant_frequency
from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

COMMAND_TIMEOUT_S = 60.0
SERVER_LOG_TAIL_BYTES = 256 * 1024  # server_log reads no more of the log than this
CONNECT_TIMEOUT_S = 10.0
LISTEN_RATE = 48000


def payload(n: int, size: int) -> bytes:
    """Packet ``n``'s PCM: distinct for each n (mod 256), reproduced by the TS test (room-driver.ts)."""
    k = np.arange(size, dtype=np.int64)
    return ((n * 31 + k * 7) & 0xFF).astype(np.uint8).tobytes()


@dataclass(eq=False)
class Recorder:
    """Records every audio track ``from_identity`` publishes, by track name (mono, LISTEN_RATE)."""

    room: rtc.Room
    from_identity: str
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self) -> None:
        self.room.on("track_subscribed", self._subscribed)
        for participant in self.room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None:
                    self._subscribed(publication.track, publication, participant)

    def _subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if participant.identity != self.from_identity or track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        if publication.sid not in self.tasks:
            self.tasks[publication.sid] = asyncio.get_running_loop().create_task(
                self._record(publication.name, track)
            )

    async def _record(self, name: str, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=LISTEN_RATE, num_channels=1)
        try:
            async for event in stream:
                self.frames.setdefault(name, []).append(
                    np.frombuffer(event.frame.data, dtype=np.int16).copy()
                )
        finally:
            await stream.aclose()

    def samples(self, name: str) -> np.ndarray:
        frames = self.frames.get(name, [])
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    async def stop(self) -> None:
        self.room.off("track_subscribed", self._subscribed)
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Driver:
    def __init__(self, server: LocalLiveKitServer) -> None:
        self.server = server
        self.rooms: dict[str, rtc.Room] = {}
        self.recorders: dict[str, Recorder] = {}
        self.http_servers: list[http.server.ThreadingHTTPServer] = []

    # -- commands ------------------------------------------------------------------------------

    async def token(self, identity: str, room: str) -> dict[str, Any]:
        return {"token": self.server.token(identity, room)}

    async def connect(self, name: str, identity: str, room: str) -> dict[str, Any]:
        if name in self.rooms:
            raise ValueError(f"participant {name!r} exists")
        lk_room = rtc.Room()
        await asyncio.wait_for(
            lk_room.connect(self.server.url, self.server.token(identity, room)), CONNECT_TIMEOUT_S
        )
        self.rooms[name] = lk_room
        return {}

    async def wait_participant(self, name: str, identity: str, timeout_s: float = 10.0) -> dict[str, Any]:
        room = self.rooms[name]

        async def present() -> None:
            # Polling with a deadline on purpose, as the repository's tests do (ruff ignores this there).
            while not any(p.identity == identity for p in room.remote_participants.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        await asyncio.wait_for(present(), timeout_s)
        return {}

    async def send_packets(
        self, name: str, first_seq: int, count: int, payload_bytes: int, interval_ms: float
    ) -> dict[str, Any]:
        room = self.rooms[name]
        for i in range(count):
            n = first_seq + i
            await room.local_participant.publish_data(
                bytes([n % 256]) + payload(n, payload_bytes), reliable=False
            )
            await asyncio.sleep(interval_ms / 1000)
        return {"sent": count}

    async def listen(self, name: str, from_identity: str) -> dict[str, Any]:
        recorder = Recorder(self.rooms[name], from_identity)
        recorder.start()
        self.recorders[name] = recorder
        return {}

    async def heard(self, name: str, track: str, threshold: int = 1000) -> dict[str, Any]:
        """Of the recording on ``track``: how much is loud, and the loud stretch's frequency and RMS.

        ``loud_ms`` counts 10 ms frames whose peak exceeds ``threshold``; frequency and RMS are of the
        contiguous stretch from the first to the last loud sample (silence around it trimmed).
        """
        samples = self.recorders[name].samples(track)
        frames = samples[: len(samples) // 480 * 480].reshape(-1, 480)
        loud_ms = 10 * int((np.abs(frames.astype(np.int32)).max(axis=1, initial=0) > threshold).sum())
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
        result: dict[str, Any] = {
            "samples": len(samples),
            "loud_ms": loud_ms,
            "rms": 0.0,
            "dominant_hz": 0.0,
        }
        if loud.size >= 480:
            segment = samples[loud[0] : loud[-1] + 1]
            result["rms"] = float(np.sqrt(np.mean(segment.astype(np.float64) ** 2)))
            result["dominant_hz"] = dominant_frequency(segment, LISTEN_RATE)
        return result

    async def forget(self, name: str) -> dict[str, Any]:
        self.recorders[name].frames.clear()
        return {}

    async def serve_dir(self, dir: str) -> dict[str, Any]:
        handler = functools.partial(_QuietHandler, directory=dir)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, name="serve_dir", daemon=True).start()
        self.http_servers.append(httpd)
        return {"base_url": f"http://127.0.0.1:{httpd.server_address[1]}"}

    async def disconnect(self, name: str) -> dict[str, Any]:
        recorder = self.recorders.pop(name, None)
        if recorder is not None:
            await recorder.stop()
        room = self.rooms.pop(name)
        await asyncio.wait_for(room.disconnect(), CONNECT_TIMEOUT_S)
        return {}

    async def server_log(self, lines: int = 40) -> dict[str, Any]:
        text = self.server.log_tail(SERVER_LOG_TAIL_BYTES)
        tail = "\n".join(text.splitlines()[-max(1, min(lines, 500)) :])
        return {"log": redact(tail)}  # the server quotes a rejected token back

    async def close(self) -> None:
        for name in list(self.rooms):
            with contextlib.suppress(Exception):
                await self.disconnect(name)
        for httpd in self.http_servers:
            httpd.shutdown()
            httpd.server_close()


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run_command(driver: Driver, request: dict[str, Any]) -> None:
    ident = request.pop("id", None)
    cmd = request.pop("cmd", "")
    handler = getattr(driver, cmd, None) if cmd in COMMANDS else None
    try:
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        result = await asyncio.wait_for(handler(**request), COMMAND_TIMEOUT_S)
        emit({"id": ident, "ok": True, **result})
    except Exception as err:  # reported to the test, which fails with it
        emit({"id": ident, "ok": False, "error": f"{type(err).__name__}: {err}"})


COMMANDS = {
    "token",
    "connect",
    "wait_participant",
    "send_packets",
    "listen",
    "heard",
    "forget",
    "serve_dir",
    "disconnect",
    "server_log",
}


async def serve(driver: Driver) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if request.get("cmd") == "shutdown":
                emit({"id": request.get("id"), "ok": True})
                break
            task = loop.create_task(run_command(driver, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await driver.close()


def main() -> int:
    ensure_server_binary()
    server = LocalLiveKitServer()
    server.start()
    try:
        assert server.process is not None
        emit({"event": "ready", "url": server.url, "server_pid": server.process.pid})
        asyncio.run(serve(Driver(server)))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
