"""Safe to expose, through the real bridge and a real LiveKit server: bounded messages and health
watches, a room-server allow-list, a cap on playbacks per session, the idle TTL respecting playback,
and a session that survives a track it cannot publish."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import grpclib.const
import numpy as np
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_pb2 import HealthCheckRequest as GrpcHealthCheckRequest
from grpclib.health.v1.health_pb2 import HealthCheckResponse as GrpcHealthCheckResponse
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    HealthCheckRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
    PlayAudioRequest,
)
from bridge.testing.cloud import CloudStream
from bridge.testing.synth import encode_wav, tone
from conftest import RunningBridge, running_bridge
from support import participants
from support.flows import join, new_room, wait_until
from support.leaks import assert_back_to
from support.media_server import MediaServer
from support.playback import EventType, PlaybackCall

pytestmark = pytest.mark.livekit

TOKEN = "limits-test-bearer-token-0123456789"
WATCH = "/grpc.health.v1.Health/Watch"


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    server = MediaServer()
    yield server
    server.close()


def _payload(index: int) -> bytes:
    return np.random.default_rng(index).integers(-20000, 20000, 1600, dtype=np.int16).tobytes()


async def _call_status(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        await aio_as_trio(call)(*args, **kwargs)
    except GRPCError as err:
        return err.status, err.message or ""
    return Status.OK, ""


async def test_a_message_over_the_size_limit_ends_its_call_and_nothing_else(bridge: RunningBridge) -> None:
    with trio.fail_after(30):
        user, room = "big-message-user", new_room()
        assert (await join(bridge, user, room)).success
        limit = bridge.config.max_message_bytes
        oversized = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(oversized.run))
            await oversized.opened.wait()
            chunk = AudioChunk(pcm_data=b"\x00\x00" * (limit // 2 + 1000), sample_rate=16000, user_id=user)
            with trio.move_on_after(10):
                await aio_as_trio(oversized.send)(chunk)
            await oversized.ended.wait()
        assert oversized.status is Status.RESOURCE_EXHAUSTED, (oversized.status, oversized.message)
        assert f"larger than the limit of {limit} bytes" in oversized.message
        # The same connection still serves calls, and the session is untouched.
        reply = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest())
        assert reply.status == 1 and reply.active_sessions == 1
        status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
        assert status.connected


async def _watch(channel, metadata, opened: trio.Event, outcome: list[object]) -> None:  # type: ignore[no-untyped-def]
    try:
        async with channel.request(
            WATCH,
            grpclib.const.Cardinality.UNARY_STREAM,
            GrpcHealthCheckRequest,
            GrpcHealthCheckResponse,
            metadata=metadata,
        ) as stream:
            await stream.send_message(GrpcHealthCheckRequest(service=""), end=True)
            first = await stream.recv_message()
            outcome.append(first.status if first is not None else None)
            opened.set()
            await asyncio.Event().wait()  # hold the watch open until cancelled
    except GRPCError as err:
        outcome.append(err.status)
        opened.set()


async def test_unauthenticated_health_watches_are_bounded(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with running_bridge(livekit_server, auth_token=TOKEN, max_health_watches=3) as bridge:
            outcomes: list[list[object]] = []
            async with trio.open_nursery() as nursery:
                for _ in range(5):  # no token: health is open, but only 3 watches at once
                    opened, outcome = trio.Event(), list[object]()
                    outcomes.append(outcome)
                    nursery.start_soon(aio_as_trio(_watch), bridge.channel, None, opened, outcome)
                    await opened.wait()
                serving = GrpcHealthCheckResponse.SERVING
                assert [o[0] for o in outcomes] == [serving] * 3 + [Status.RESOURCE_EXHAUSTED] * 2
                # The bridge's own calls are not affected by the watches.
                metadata = {"authorization": f"Bearer {TOKEN}"}
                reply = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest(), metadata=metadata)
                assert reply.status == 1
                nursery.cancel_scope.cancel()
            # Watches that ended free their places.
            health = bridge.state.health_service
            assert health is not None
            await wait_until(lambda: health.watches == 0, what="watches to end")
            opened, outcome = trio.Event(), []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(_watch), bridge.channel, None, opened, outcome)
                await opened.wait()
                assert outcome == [GrpcHealthCheckResponse.SERVING]
                nursery.cancel_scope.cancel()


async def test_room_servers_can_be_restricted_and_the_default_stays_open(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with running_bridge(livekit_server, livekit_url_allow="lk.example.test") as bridge:
            room = new_room()
            request = JoinRoomRequest(
                user_id="u-allow", room_name=room, token=bridge.token("bridge-u-allow", room)
            )
            elsewhere = dataclasses.replace(request, livekit_url="ws://127.0.0.2:7880")
            status, message = await _call_status(bridge.stub.join_room, elsewhere)
            assert status is Status.PERMISSION_DENIED
            assert "ws://127.0.0.2:7880" in message and "BRIDGE_LIVEKIT_URL_ALLOW" in message
            # No livekit_url: the bridge's own LIVEKIT_URL, always allowed; so is naming it.
            assert (await aio_as_trio(bridge.stub.join_room)(request)).success
            named = dataclasses.replace(request, livekit_url=bridge.livekit.url)
            assert (await aio_as_trio(bridge.stub.join_room)(named)).success


async def test_oversized_ids_are_refused_with_the_field_named(bridge: RunningBridge) -> None:
    room = new_room()
    request = JoinRoomRequest(user_id="u" * 300, room_name=room, token=bridge.token("x", room))
    status, message = await _call_status(bridge.stub.join_room, request)
    assert status is Status.INVALID_ARGUMENT and "user_id is 300 characters long" in message
    status, message = await _call_status(bridge.stub.get_status, BridgeStatusRequest(user_id="u" * 300))
    assert status is Status.INVALID_ARGUMENT


def _wav(seconds: float, freq: float = 440.0) -> bytes:
    return encode_wav(tone(freq, seconds, 16000), 16000)


def _play(
    bridge: RunningBridge, nursery: trio.Nursery, user: str, url: str, track: int, rid: str
) -> PlaybackCall:
    call = PlaybackCall(
        bridge.stub, PlayAudioRequest(user_id=user, request_id=rid, audio_url=url, track_id=track)
    )
    nursery.start_soon(aio_as_trio(call.run))
    return call


async def test_playbacks_in_flight_per_session_are_capped(aio_loop, livekit_server, media) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(40):
        overrides = {"fetch_allow_hosts": "127.0.0.1", "max_playbacks_per_session": 2}
        async with running_bridge(livekit_server, **overrides) as bridge:
            user = "capped-user"
            assert (await join(bridge, user, new_room())).success
            url = media.add("/cap-3s.wav", _wav(3.0))
            async with trio.open_nursery() as nursery:
                first = _play(bridge, nursery, user, url, 0, "p0")
                second = _play(bridge, nursery, user, url, 1, "p1")
                await first.started.wait()
                await second.started.wait()
                third = _play(bridge, nursery, user, url, 2, "p2")
                await third.done.wait()
                assert third.types == [EventType.FAILED] and third.code == "too_many_playbacks"
                assert "2 playbacks are already in flight" in third.terminal.error
                # Replacing the playback on a busy track is not "one more": it is allowed.
                replacing = _play(bridge, nursery, user, url, 1, "p1b")
                await replacing.started.wait()
                await second.done.wait()
                assert second.code == "interrupted"
                await first.done.wait()
                await replacing.done.wait()
            assert (
                first.terminal.type is EventType.COMPLETED and replacing.terminal.type is EventType.COMPLETED
            )
            stats = bridge.state.registry.playback.stats
            assert (
                stats.failed == 1
                and bridge.state.metrics.playback_failed.labels("too_many_playbacks")._value.get() == 1
            )


async def test_the_idle_ttl_never_closes_a_session_while_it_plays(aio_loop, livekit_server, media) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(40):
        overrides = {"fetch_allow_hosts": "127.0.0.1", "session_idle_ttl_s": 1.0}
        async with running_bridge(livekit_server, **overrides) as bridge:
            user = "playing-idle-user"
            assert (await join(bridge, user, new_room())).success
            url = media.add("/idle-3s.wav", _wav(3.0))
            session = bridge.state.registry.get(user, touch=False)
            async with trio.open_nursery() as nursery:
                call = _play(bridge, nursery, user, url, 0, "long")
                await call.done.wait()
            ended_at = trio.current_time()
            assert call.terminal.type is EventType.COMPLETED, call.terminal
            assert session.close_reason is None  # 3 s of playback with a 1 s TTL and no other call
            await session.closed.wait()
            quiet_for = trio.current_time() - ended_at
            assert session.close_reason is not None and session.close_reason.value == "idle"
            assert 0.8 <= quiet_for <= 2.5, quiet_for  # the TTL counts from the playback's end


async def test_a_track_that_cannot_be_published_fails_what_needed_it_and_the_mic_path_goes_on(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server, media
) -> None:
    with trio.fail_after(60):
        # LiveKit never answers a publish without the grant: the bridge's timeout is what ends it.
        overrides = {"fetch_allow_hosts": "127.0.0.1", "track_publish_timeout_s": 2.0}
        async with running_bridge(livekit_server, **overrides) as bridge:
            user, room = "listen-only-user", new_room()
            phone = await aio_as_trio(participants.connect)(livekit_server.url, bridge.token(user, room))
            baseline = await bridge.census()
            request = JoinRoomRequest(
                user_id=user,
                room_name=room,
                token=livekit_server.token(f"bridge-{user}", room, can_publish=False),
                target_identity=user,
            )
            assert (await aio_as_trio(bridge.stub.join_room)(request)).success
            session = bridge.state.registry.get(user, touch=False)
            url = media.add("/no-publish.wav", _wav(1.0))
            async with trio.open_nursery() as nursery:
                call = _play(bridge, nursery, user, url, 0, "cannot-publish")
                await call.done.wait()
            assert call.types == [EventType.FAILED] and call.code == "publish_failed", call.events
            assert "track 0 (speaker) could not be published: not published within 2 s" in call.terminal.error

            # Cloud PCM for a track that cannot be published ends that StreamAudio call, clearly...
            cloud = CloudStream(bridge.channel, user)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(cloud.run))
                await cloud.opened.wait()
                await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")
                await aio_as_trio(participants.send_packets)(
                    phone, [bytes([i]) + _payload(i) for i in range(5)], 0.01
                )
                await wait_until(lambda: len(cloud.pcm) >= 5 * 3200, what="mic audio before the failure")
                pcm = AudioChunk(pcm_data=b"\x10\x00" * 1600, sample_rate=16000, channels=1, track_id=2)
                await aio_as_trio(cloud.send)(pcm)
                await cloud.ended.wait()
            assert cloud.status is Status.FAILED_PRECONDITION, (cloud.status, cloud.message)
            assert "track 2 (tts) could not be published" in cloud.message

            # ...and the session, its room and its microphone path go on: audio sent meanwhile is
            # queued and reaches the next StreamAudio call byte-exact.
            assert not session.closing and session.tracks.publish_failures == 2
            await aio_as_trio(participants.send_packets)(
                phone, [bytes([i]) + _payload(i) for i in range(5, 10)], 0.01
            )
            again = CloudStream(bridge.channel, user)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(again.run))
                expected = b"".join(_payload(i) for i in range(5, 10))
                await wait_until(lambda: expected in again.pcm, what="mic audio on a new stream")
                nursery.cancel_scope.cancel()
            status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
            assert status.connected
            assert (await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))).success
            await assert_back_to(baseline)
            await aio_as_trio(participants.disconnect)(phone)
