"""The bridge as deployed: ``python -m bridge`` in a subprocess, and phones that talk to it.

Tests that measure the process itself (its descriptors, RSS and task counts, its exit on SIGTERM)
run it this way, so nothing of the test's own process is counted. Trio side, except the phone
helpers, which run on the asyncio side (call them through ``aio_as_trio``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import trio
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError
from livekit import rtc
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import HealthCheckRequest, LiveKitBridgeStub
from bridge.testing.devserver import LocalLiveKitServer
from bridge.testing.ports import free_port

__all__ = ["BridgeProcess", "bridge_process", "connect_phone", "free_port", "microphone"]


async def _open_channel(port: int) -> Channel:
    return Channel("127.0.0.1", port)


@dataclass(eq=False)
class BridgeProcess:
    process: subprocess.Popen[bytes]
    channel: Channel
    stub: LiveKitBridgeStub
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


B = TypeVar("B", bound=BridgeProcess)


@contextlib.asynccontextmanager
async def bridge_process(
    livekit: LocalLiveKitServer, log_path: Path, *, kind: type[B], **settings: str
) -> AsyncIterator[B]:
    """``python -m bridge`` on a free loopback port with ``settings`` in its environment, yielded once
    it answers HealthCheck; SIGTERM (then SIGKILL after 15 s) on exit if it is still running.

    ``kind``: BridgeProcess, or a subclass of it for tests that read more of the process.
    """
    port = free_port()
    env = {**os.environ, "PORT": str(port), "BRIDGE_HOST": "127.0.0.1", "LIVEKIT_URL": livekit.url}
    env.pop("LIVEKIT_GRPC_SOCKET", None)
    env.update(settings)
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bridge"], env=env, stderr=log)
    try:
        channel = await aio_as_trio(_open_channel)(port)
        bridge = kind(process, channel, LiveKitBridgeStub(channel), log_path)
        with trio.fail_after(30):
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"the bridge exited with {process.returncode}; see {log_path}")
                try:
                    await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest(), timeout=5)
                    break
                except (OSError, TimeoutError, StreamTerminatedError):
                    await trio.sleep(0.1)
        try:
            yield bridge
        finally:
            channel.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await trio.to_thread.run_sync(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def connect_phone(url: str, token: str) -> rtc.Room:
    """A phone that only sends (it subscribes to nothing). Asyncio side."""
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token, rtc.RoomOptions(auto_subscribe=False)), 15)
    return room


async def microphone(room: rtc.Room, index: int) -> None:
    """A phone's microphone: a lossy 1 + 3200 byte packet every 100 ms until cancelled. Asyncio side."""
    pcm = np.random.default_rng(index).integers(-3000, 3000, 1600, dtype=np.int16).tobytes()
    loop = asyncio.get_running_loop()
    start, seq = loop.time(), 0
    while True:
        with contextlib.suppress(Exception):  # lost before the data channel is up: it is lossy
            await room.local_participant.publish_data(bytes([seq & 0xFF]) + pcm, reliable=False)
        seq += 1
        await asyncio.sleep(max(0.0, start + seq * 0.1 - loop.time()))
