"""Fuzzed requests through the real server: never a crash, always a clear answer.

The bridge runs as its own process; each example is one request over gRPC (plain asyncio client).
The only acceptable outcomes are a normal reply (``success=false`` included) or a deliberate status:
UNKNOWN or INTERNAL would mean a bug leaked out of a handler, and the process must outlive it all.
Generated URLs never reach another machine: they are fixed loopback/private-IP URLs (refused by the
fetch policy before any connection) or strings without "//", which name no host, so not even a DNS
query is made.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpclib.const
import hypothesis.strategies as st
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from hypothesis import HealthCheck, given, settings

from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    HealthCheckRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
    LiveKitBridgeStub,
    PlayAudioRequest,
    StopAudioRequest,
)
from bridge.testing.devserver import LocalLiveKitServer
from bridge.testing.ports import free_port

pytestmark = pytest.mark.livekit

EXPECTED = {Status.OK, Status.INVALID_ARGUMENT, Status.NOT_FOUND}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
INT32 = st.integers(-(2**31), 2**31 - 1)
KNOWN = "fuzz-known"


NO_HOST = st.text(max_size=40).filter(lambda s: "//" not in s)
ROOM_URLS = st.one_of(
    st.just(""), st.just(f"ws://127.0.0.1:{free_port()}"), st.just("ftp://127.0.0.1/"), NO_HOST
)
AUDIO_URLS = st.one_of(
    st.sampled_from(
        ["http://10.0.0.1/a.mp3", "http://169.254.169.254/", "https://[fd00::1]/x.wav", "file:///etc/x"]
    ),
    NO_HOST,
)
USERS = st.one_of(st.just(""), st.just(KNOWN), st.text(max_size=20))


class Bridge:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process

    def run(self, call: Any) -> Any:
        """Run ``call(stub)`` against the bridge in a fresh asyncio loop and client connection."""

        async def main() -> Any:
            channel = Channel("127.0.0.1", self.port)
            try:
                return await asyncio.wait_for(call(LiveKitBridgeStub(channel)), 15)
            finally:
                channel.close()

        return asyncio.run(main())

    def status_of(self, method: str, request: Any) -> Status:
        async def call(stub: LiveKitBridgeStub) -> Status:
            try:
                result = getattr(stub, method)(request)
                if hasattr(result, "__aiter__"):  # a server stream: read it to its end
                    async for _ in result:
                        pass
                else:
                    await result
            except GRPCError as err:
                return err.status
            return Status.OK

        status: Status = self.run(call)
        assert self.process.poll() is None, "the bridge process died"
        return status


@pytest.fixture(scope="module")
def fuzz_bridge(
    livekit_server: LocalLiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridge]:
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz") / "bridge.log"
    env = dict(os.environ, PORT=str(port), LIVEKIT_URL=livekit_server.url, BRIDGE_JOIN_TIMEOUT_S="3")
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "bridge"], env=env, stderr=out)
    bridge = Bridge(port, process)
    try:
        for _ in range(100):
            try:
                bridge.run(lambda stub: stub.health_check(HealthCheckRequest()))
                break
            except (OSError, StreamTerminatedError):
                asyncio.run(asyncio.sleep(0.1))
        token = livekit_server.token(f"bridge-{KNOWN}", "fuzz-room")
        joined = bridge.run(
            lambda stub: stub.join_room(JoinRoomRequest(user_id=KNOWN, room_name="fuzz-room", token=token))
        )
        assert joined.success, joined.error
        yield bridge
        # After everything: alive, the live session untouched, and no handler error in the log.
        status = bridge.run(lambda stub: stub.get_status(BridgeStatusRequest(user_id=KNOWN)))
        assert status.connected
        assert "Traceback" not in Path(log).read_text(), Path(log).read_text()[-3000:]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@FUZZ
@given(
    user=USERS,
    room=st.text(max_size=30),
    token=st.text(max_size=60),
    url=ROOM_URLS,
    target=st.text(max_size=20),
)
def test_join_room(fuzz_bridge: Bridge, user: str, room: str, token: str, url: str, target: str) -> None:
    user = "fuzz-other" if user == KNOWN else user  # keep the live session for the other tests
    request = JoinRoomRequest(
        user_id=user, room_name=room, token=token, livekit_url=url, target_identity=target
    )
    assert fuzz_bridge.status_of("join_room", request) in EXPECTED


@FUZZ
@given(
    user=USERS,
    request_id=st.text(max_size=20),
    url=AUDIO_URLS,
    volume=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
    track=INT32,
    by_track=st.booleans(),
)
def test_play_and_stop_audio(
    fuzz_bridge: Bridge,
    user: str,
    request_id: str,
    url: str,
    volume: float | None,
    track: int,
    by_track: bool,
) -> None:
    play = PlayAudioRequest(user_id=user, request_id=request_id, audio_url=url, volume=volume, track_id=track)
    assert fuzz_bridge.status_of("play_audio", play) in EXPECTED
    stop = StopAudioRequest(user_id=user, request_id=request_id, track_id=track if by_track else None)
    assert fuzz_bridge.status_of("stop_audio", stop) in EXPECTED


@FUZZ
@given(user=USERS)
def test_status_and_leave(fuzz_bridge: Bridge, user: str) -> None:
    user = "fuzz-other" if user == KNOWN else user
    assert fuzz_bridge.status_of("get_status", BridgeStatusRequest(user_id=user)) in EXPECTED
    assert fuzz_bridge.status_of("leave_room", LeaveRoomRequest(user_id=user)) in EXPECTED


@FUZZ
@given(
    first_user=USERS,
    chunks=st.lists(
        st.builds(
            AudioChunk,
            pcm_data=st.binary(max_size=4000),
            sample_rate=st.one_of(st.sampled_from([0, 8000, 16000, 44100, 48000]), INT32),
            channels=st.one_of(st.sampled_from([0, 1, 2]), INT32),
            track_id=st.one_of(st.sampled_from([0, 1, 2, 3]), INT32),
        ),
        max_size=5,
    ),
)
def test_stream_audio(fuzz_bridge: Bridge, first_user: str, chunks: list[AudioChunk]) -> None:
    async def call(stub: LiveKitBridgeStub) -> Status:
        path = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"
        try:
            async with stub.channel.request(
                path, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
            ) as stream:
                await stream.send_message(AudioChunk(user_id=first_user))
                for chunk in chunks:
                    await stream.send_message(chunk)
                await stream.end()
                # A stream the bridge keeps open (every chunk was fine) is ours to cancel.
                try:
                    async with asyncio.timeout(0.3):
                        while await stream.recv_message() is not None:
                            pass
                        await stream.recv_trailing_metadata()
                except TimeoutError:
                    await stream.cancel()
        except GRPCError as err:
            return err.status
        except StreamTerminatedError:
            return Status.OK  # our own cancel
        return Status.OK

    assert fuzz_bridge.run(call) in EXPECTED
    assert fuzz_bridge.process.poll() is None
