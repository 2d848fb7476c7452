"""The local LiveKit dev server: lifecycle (start, kill, restart, stop) and a real SDK join.

Plain synchronous tests (the SDK test runs its own ``asyncio.run``), every wait bounded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.testing.devserver import (
    SERVER_BIN_ENV,
    DevServerError,
    LocalLiveKitServer,
    ensure_server_binary,
    render_config,
    server_binary_path,
)

pytestmark = pytest.mark.livekit

# Proxies are bypassed so the checks stay on loopback whatever the environment says.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SDK_TIMEOUT_S = 15.0


def _get_status(url: str) -> int:
    with _HTTP.open(url + "/", timeout=2.0) as resp:
        status: int = resp.status
        return status


@pytest.fixture
def server() -> Iterator[LocalLiveKitServer]:
    with LocalLiveKitServer() as srv:
        yield srv


def test_config_template_renders_loopback_only() -> None:
    text = render_config(port=1, tcp_port=2, udp_port=3, api_key="k", api_secret="s" * 32)
    assert "{" not in text and "}" not in text
    assert "port: 1\n" in text
    assert "node_ip: 127.0.0.1" in text
    assert "use_external_ip: false" in text
    assert "enable_loopback_candidate: true" in text


def test_start_serves_http_on_loopback(server: LocalLiveKitServer) -> None:
    assert server.is_running
    assert server.url == f"ws://127.0.0.1:{server.port}"
    assert server.http_url == f"http://127.0.0.1:{server.port}"
    assert server.port != server.tcp_port
    assert _get_status(server.http_url) == 200
    assert server_binary_path().is_file()


def test_kill_then_restart_on_same_port(server: LocalLiveKitServer) -> None:
    port = server.port
    server.kill()
    assert not server.is_running
    with pytest.raises((urllib.error.URLError, OSError)):
        _get_status(server.http_url)

    server.restart()
    assert server.port == port
    assert server.is_running
    assert _get_status(server.http_url) == 200


def test_stop_is_graceful_and_leaves_no_process() -> None:
    srv = LocalLiveKitServer()
    srv.start()
    proc = srv.process
    assert proc is not None
    started = time.monotonic()
    srv.stop(grace=5.0)
    # Exit code 0 = it honoured SIGTERM (no SIGKILL was needed) with nobody connected.
    assert proc.poll() == 0
    assert time.monotonic() - started < 5.0
    srv.stop()  # idempotent
    srv.kill()  # and harmless once stopped
    srv.close()


def test_start_failure_reports_log_tail() -> None:
    # Occupy the signal port so the server cannot bind it and exits during start-up.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        srv = LocalLiveKitServer(port=blocker.getsockname()[1])
        with pytest.raises(DevServerError, match="last log lines"):
            srv.start(timeout=10)
        assert not srv.is_running
        proc = srv.process
        assert isinstance(proc, subprocess.Popen) and proc.poll() is not None
        srv.close()


def test_secret_is_validated_and_never_in_repr() -> None:
    with pytest.raises(ValueError):
        LocalLiveKitServer(api_secret="too-short")
    srv = LocalLiveKitServer()
    assert srv.api_secret not in repr(srv)
    srv.close()


def test_sdk_rooms_join_and_exchange_data_over_loopback(server: LocalLiveKitServer) -> None:
    """Two real rtc.Rooms join with tokens from token() and pass a reliable data packet:
    that needs signalling AND an ICE/DTLS path through the SFU, all on 127.0.0.1."""
    from livekit import rtc

    room_name = "devserver-smoke"
    token_a = server.token("alice", room_name, name="Alice")
    token_b = server.token("bob", room_name, can_publish=False)

    async def scenario() -> bytes:
        a, b = rtc.Room(), rtc.Room()
        received: asyncio.Queue[bytes] = asyncio.Queue()
        b.on("data_received", lambda packet: received.put_nowait(packet.data))
        try:
            await asyncio.wait_for(a.connect(server.url, token_a), _SDK_TIMEOUT_S)
            await asyncio.wait_for(b.connect(server.url, token_b), _SDK_TIMEOUT_S)
            assert a.isconnected() and b.isconnected()
            assert a.local_participant.identity == "alice"

            async def send_until_received() -> bytes:
                # Resend until one arrives: b's subscriber transport may still be connecting.
                while True:
                    await a.local_participant.publish_data(b"ping", reliable=True, topic="smoke")
                    try:
                        return await asyncio.wait_for(received.get(), 0.5)
                    except TimeoutError:
                        continue

            return await asyncio.wait_for(send_until_received(), _SDK_TIMEOUT_S)
        finally:
            for room in (a, b):
                await asyncio.wait_for(room.disconnect(), _SDK_TIMEOUT_S)

    assert asyncio.run(scenario()) == b"ping"


def test_stop_does_not_wait_for_connected_participants() -> None:
    """On a lone SIGTERM the server would wait (in 5 s steps) for this participant to leave;
    stop() must force it instead, well inside its grace period and without SIGKILL."""
    from livekit import rtc

    srv = LocalLiveKitServer()
    srv.start()
    proc = srv.process
    assert proc is not None

    async def scenario() -> float:
        room = rtc.Room()
        try:
            await asyncio.wait_for(room.connect(srv.url, srv.token("carol", "stop-test")), _SDK_TIMEOUT_S)
            started = time.monotonic()
            # In a thread: the SDK's event loop must keep running while the server goes away.
            await asyncio.wait_for(asyncio.to_thread(srv.stop, 4.0), _SDK_TIMEOUT_S)
            return time.monotonic() - started
        finally:
            await asyncio.wait_for(room.disconnect(), _SDK_TIMEOUT_S)

    try:
        elapsed = asyncio.run(scenario())
    finally:
        srv.kill()
        srv.close()
    assert proc.returncode == 0, "expected a clean forced shutdown, not SIGKILL"
    assert elapsed < 4.0


def test_a_livekit_server_on_path_at_the_pinned_version_runs_instead_of_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ensure_server_binary()
    on_path = tmp_path / "bin" / "livekit-server"
    on_path.parent.mkdir()
    on_path.symlink_to(real)
    monkeypatch.delenv(SERVER_BIN_ENV, raising=False)
    monkeypatch.setenv("LIVEKIT_BRIDGE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}{os.environ['PATH']}")
    built = subprocess.run(
        [sys.executable, "-m", "bridge.testing.devserver", "build"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0 and built.stdout.strip() == str(on_path), built
    with LocalLiveKitServer() as srv:
        assert srv.process is not None and srv.process.args[0] == str(on_path)  # type: ignore[index]
        assert _get_status(srv.http_url) == 200
    assert not (tmp_path / "empty-cache").exists()
