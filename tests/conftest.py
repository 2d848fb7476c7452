"""Shared fixtures: a real LiveKit server, a trio-asyncio loop, and a running bridge.

Every integration test talks to a real ``livekit-server`` (built from its Go module into a cache
folder, started on loopback with the config in src/bridge/testing/resources/livekit-dev.yaml) through real
``livekit`` SDK participants. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from trio_asyncio import aio_as_trio

from bridge import BridgeConfig, BridgeState, serve
from bridge._gen.mentra.livekit.bridge import HealthCheckRequest, LiveKitBridgeStub
from bridge.livekit_io.native_library import choose_native_library
from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary
from support import watchdog as watchdog_module
from support.leaks import TaskCensus
from support.watchdog import watchdog


def pytest_configure(config: pytest.Config) -> None:
    # The SDK's native library the bridge loads by default, before any test loads one: tests run
    # on what is deployed (livekit_io/native_library.py; the wheel's own when it is not the one
    # the quiet copy is made for). Bridges the tests start as processes inherit the choice.
    choose_native_library("warning")
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        watchdog_module.release_output = lambda: capture.suspend_global_capture(in_=False)


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """With the SDK's native runtime loaded, end the process here, with pytest's own status.

    At interpreter exit the SDK's atexit handler disposes its runtime while tokio workers still
    run, and once in a while one of them aborts the process ("panic in a function that cannot
    unwind", exit 134) after every test has passed and been reported (docs/design/lessons.md).
    Nothing is left to do by then but that teardown, so skip it.
    """
    from livekit.rtc._ffi_client import FfiClient

    if FfiClient._instance is None or not _exit_status:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LocalLiveKitServer]:
    """One real LiveKit server for the whole run (tests that kill a server get their own)."""
    ensure_server_binary()
    with LocalLiveKitServer() as server:
        yield server


@pytest.fixture
def private_livekit_server() -> Iterator[LocalLiveKitServer]:
    """A LiveKit server of this test's own, for tests that stop or kill it."""
    ensure_server_binary()
    with LocalLiveKitServer() as server:
        yield server


@pytest.fixture
async def aio_loop(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    # Every test on the loop is watched: a shielded wait that never returns ends the run with a
    # dump of the Trio tasks instead of hanging CI (see support/watchdog.py).
    with watchdog(request.node.nodeid):
        async with trio_asyncio.open_loop() as loop:
            yield loop


@dataclass(eq=False)
class RunningBridge:
    state: BridgeState
    channel: Channel
    stub: LiveKitBridgeStub
    livekit: LocalLiveKitServer
    config: BridgeConfig
    _rooms: list[str] = field(default_factory=list)

    def token(self, identity: str, room: str) -> str:
        return self.livekit.token(identity, room)

    async def reconnect(self) -> None:
        """A fresh client connection (after a test dropped the old one)."""
        self.channel.close()
        host, port = self.state.address.rsplit(":", 1)
        self.channel = await aio_as_trio(_open_channel)(host, int(port))
        self.stub = LiveKitBridgeStub(self.channel)

    async def census(self) -> TaskCensus:
        """Settle, then count every Trio and asyncio task in the process.

        One call first, so the client connection (whose socket watchers are Trio tasks under
        trio-asyncio) is part of every census.
        """
        await aio_as_trio(self.stub.health_check)(HealthCheckRequest())
        return await TaskCensus.settled()


def make_config(livekit: LocalLiveKitServer, **overrides: object) -> BridgeConfig:
    settings: dict[str, object] = {
        "port": 0,
        "livekit_url": livekit.url,
        "join_timeout_s": 5.0,
        # In-process bridges share the C heap with the test's own phones, which the native-memory
        # gate would count against the bridge's rooms; bridges run as subprocesses keep it on.
        "native_memory_headroom_mib": 0,
    }
    settings.update(overrides)
    return BridgeConfig(**settings)  # type: ignore[arg-type]


async def _open_channel(host: str, port: int) -> Channel:
    return Channel(host, port)


async def start_bridge(
    nursery: trio.Nursery, livekit: LocalLiveKitServer, **overrides: object
) -> RunningBridge:
    config = make_config(livekit, **overrides)
    state: BridgeState = await nursery.start(serve, config)
    host, port = state.address.rsplit(":", 1)
    channel = await aio_as_trio(_open_channel)(host, int(port))
    return RunningBridge(state, channel, LiveKitBridgeStub(channel), livekit, config)


@asynccontextmanager
async def running_bridge(livekit: LocalLiveKitServer, **overrides: object) -> AsyncIterator[RunningBridge]:
    """A bridge served in this test's Trio run, with a connected client; shut down on exit."""
    async with trio.open_nursery() as nursery:
        running = await start_bridge(nursery, livekit, **overrides)
        try:
            yield running
        finally:
            running.channel.close()
            running.state.request_shutdown(immediately=True)  # drain tests drain on their own


@pytest.fixture
async def bridge(aio_loop: object, livekit_server: LocalLiveKitServer) -> AsyncIterator[RunningBridge]:
    async with running_bridge(livekit_server) as running:
        yield running
