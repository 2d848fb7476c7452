"""Drain: SIGTERM's path. No new sessions, playbacks finish, then each session is handed over with
its queued room audio flushed and a stream end that tells the client to re-join elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_pb2 import HealthCheckResponse as GrpcHealthCheckResponse
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import HealthCheckRequest, PlayAudioRequest
from bridge.testing.cloud import CloudStream
from bridge.testing.synth import encode_wav, tone
from conftest import start_bridge
from support import participants
from support.flows import join, new_room, wait_until
from support.leaks import TaskCensus, assert_back_to
from support.media_server import MediaServer
from support.playback import EventType, PlaybackCall

pytestmark = pytest.mark.livekit


def _payload(index: int) -> bytes:
    return np.random.default_rng(1000 + index).integers(-20000, 20000, 1600, dtype=np.int16).tobytes()


async def _grpc_health(channel) -> int:  # type: ignore[no-untyped-def]
    from grpclib.health.v1.health_grpc import HealthStub
    from grpclib.health.v1.health_pb2 import HealthCheckRequest as GrpcHealthCheckRequest

    return int((await HealthStub(channel).Check(GrpcHealthCheckRequest())).status)


async def test_a_drain_lets_playbacks_finish_flushes_audio_and_sends_clients_elsewhere(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server
) -> None:
    media = MediaServer()
    room = new_room()
    phone = await aio_as_trio(participants.connect)(
        livekit_server.url, livekit_server.token("mic-user", room)
    )
    baseline = await TaskCensus.settled()
    try:
        with trio.fail_after(45):
            async with trio.open_nursery() as nursery:
                bridge = await start_bridge(
                    nursery, livekit_server, fetch_allow_hosts="127.0.0.1", drain_timeout_s=20.0
                )
                assert (await join(bridge, "mic-user", room)).success
                assert (await join(bridge, "tts-user", new_room())).success
                mic = CloudStream(bridge.channel, "mic-user")
                nursery.start_soon(aio_as_trio(mic.run))
                await mic.opened.wait()
                await aio_as_trio(participants.wait_for_participant)(phone, "bridge-mic-user")
                url = media.add("/drain-2s.wav", encode_wav(tone(440, 2.0, 16000), 16000))
                playback = PlaybackCall(
                    bridge.stub, PlayAudioRequest(user_id="tts-user", request_id="tts", audio_url=url)
                )
                nursery.start_soon(aio_as_trio(playback.run))
                await playback.started.wait()

                # The cloud is slow to read for a moment: audio is queued when the drain begins.
                packets = [bytes([i]) + _payload(i) for i in range(20)]
                expected = b"".join(_payload(i) for i in range(20))
                await aio_as_trio(participants.send_packets)(phone, packets, 0.005, True)
                session = bridge.state.registry.get("mic-user", touch=False)
                await wait_until(lambda: session.mic.data_packets == 20, what="all packets at the bridge")
                drain_began = trio.current_time()
                bridge.state.request_shutdown()
                await wait_until(lambda: bridge.state.registry.draining, what="the drain")

                # New users are sent elsewhere; health says so.
                with pytest.raises(GRPCError) as refused:
                    await join(bridge, "late-user", new_room())
                assert refused.value.status is Status.UNAVAILABLE
                assert "draining" in str(refused.value.message)
                assert await aio_as_trio(_grpc_health)(bridge.channel) == GrpcHealthCheckResponse.NOT_SERVING
                reply = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest())
                assert reply.status == 2  # NOT_SERVING

                # The idle session is handed over at once, with every queued byte delivered first.
                await mic.ended.wait()
                assert mic.status is Status.UNAVAILABLE and "draining" in mic.message, mic.message
                assert mic.pcm == expected
                assert trio.current_time() - drain_began < 2.0

                # The playing one plays to its end, then goes.
                await playback.done.wait()
                assert playback.terminal.type is EventType.COMPLETED, playback.terminal
                bridge.channel.close()
            # serve() returned: every session handed over, nothing of ours left in the room.
            identities = await aio_as_trio(participants.list_identities)(
                livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret, room
            )
            assert identities == ["mic-user"]
            await assert_back_to(baseline)
    finally:
        media.close()
        await aio_as_trio(participants.disconnect)(phone)


async def test_the_drain_deadline_and_a_second_signal_cut_playbacks_short(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    media = MediaServer()
    url = media.add("/long-10s.wav", encode_wav(tone(330, 10.0, 16000), 16000))
    try:
        for second_signal in (False, True):
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    bridge = await start_bridge(
                        nursery, livekit_server, fetch_allow_hosts="127.0.0.1", drain_timeout_s=1.5
                    )
                    assert (await join(bridge, "long-user", new_room())).success
                    call = PlaybackCall(
                        bridge.stub, PlayAudioRequest(user_id="long-user", request_id="long", audio_url=url)
                    )
                    nursery.start_soon(aio_as_trio(call.run))
                    await call.started.wait()
                    began = trio.current_time()
                    bridge.state.request_shutdown()
                    if second_signal:
                        registry = bridge.state.registry
                        await wait_until(lambda: registry.draining, what="the drain")  # noqa: B023
                        bridge.state.request_shutdown()
                    await call.done.wait()
                    took = trio.current_time() - began
                    bridge.channel.close()
                assert call.code == "session_closed", call.terminal
                if second_signal:
                    assert took < 1.0, took
                else:
                    assert 1.4 <= took < 3.0, took
    finally:
        media.close()
