"""Bad input gets a clear answer, is counted, and costs a healthy session nothing.

One healthy session streams phone audio through the bridge for the whole test while every kind of
bad request is thrown at the same process; at the end it must have received every packet, in order.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import numpy as np
import pytest
import trio
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
    PlayAudioRequest,
    StopAudioRequest,
)
from bridge.testing.cloud import CloudStream
from support import participants
from support.flows import join, new_room, wait_until

pytestmark = pytest.mark.livekit

PACKETS = 120
INTERVAL_S = 0.05


def healthy_packets() -> list[bytes]:
    rng = np.random.default_rng(42)
    return [
        bytes([i % 256]) + rng.integers(-9000, 9000, 800, dtype=np.int16).tobytes() for i in range(PACKETS)
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def expect_status(call, request, status: Status, *words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GRPCError) as caught:
        await aio_as_trio(call)(request)
    assert caught.value.status is status, caught.value
    for word in words:
        assert word in (caught.value.message or ""), caught.value.message


async def open_stream_expecting(bridge, user_id: str, status: Status, first_chunks=()) -> CloudStream:  # type: ignore[no-untyped-def]
    cloud = CloudStream(bridge.channel, user_id)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(aio_as_trio(cloud.run))
        await cloud.opened.wait()
        for chunk in first_chunks:
            await aio_as_trio(cloud.send)(chunk)
        await cloud.ended.wait()
    assert cloud.status is status, (cloud.status, cloud.message)
    return cloud


async def test_bad_requests_get_clear_answers_while_a_healthy_session_loses_nothing(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(60):
        healthy, room = "healthy-user", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(healthy, room))
        assert (await join(bridge, healthy, room)).success
        cloud = CloudStream(bridge.channel, healthy)
        packets = healthy_packets()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await cloud.opened.wait()
            await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{healthy}")
            nursery.start_soon(aio_as_trio(participants.send_packets), phone, packets, INTERVAL_S)

            stub = bridge.stub
            # Malformed requests: gRPC statuses.
            await expect_status(
                stub.join_room, JoinRoomRequest(room_name=room, token="t"), Status.INVALID_ARGUMENT, "user_id"
            )
            await expect_status(
                stub.join_room, JoinRoomRequest(user_id="u"), Status.INVALID_ARGUMENT, "token"
            )
            await expect_status(
                stub.join_room,
                JoinRoomRequest(user_id="u", token="t", livekit_url="ftp://x"),
                Status.INVALID_ARGUMENT,
                "livekit_url",
            )
            await expect_status(stub.get_status, BridgeStatusRequest(), Status.INVALID_ARGUMENT, "user_id")
            await expect_status(
                stub.get_status, BridgeStatusRequest(user_id="nobody"), Status.NOT_FOUND, "nobody"
            )
            await expect_status(
                _first_play_event(stub),
                PlayAudioRequest(user_id="nobody", audio_url="http://127.0.0.1/x.mp3"),
                Status.NOT_FOUND,
                "session not found for user nobody",
            )

            # Unknown users on LeaveRoom/StopAudio: in-band answers, as the older bridge gave.
            left = await aio_as_trio(stub.leave_room)(LeaveRoomRequest(user_id="nobody"))
            assert not left.success and left.error == "session not found"
            stopped = await aio_as_trio(stub.stop_audio)(StopAudioRequest(user_id="nobody"))
            assert not stopped.success and stopped.error == "session not found"

            # Join failures: success=false with a readable error, not a gRPC error.
            bad_token = await aio_as_trio(stub.join_room)(
                JoinRoomRequest(user_id="bad-token", room_name=room, token="not-a-jwt", target_identity="x")
            )
            assert not bad_token.success and "could not connect" in bad_token.error
            assert "not-a-jwt" not in bad_token.error  # tokens are never echoed or logged
            # A well-formed token with a bad signature: LiveKit quotes it back; we must not.
            forged = bridge.token("bridge-forged", room)[:-6] + "AAAAAA"
            forged_join = await aio_as_trio(stub.join_room)(
                JoinRoomRequest(user_id="forged", room_name=room, token=forged, target_identity="x")
            )
            assert not forged_join.success and "401" in forged_join.error
            assert forged not in forged_join.error and forged.split(".")[1] not in forged_join.error
            unreachable = await aio_as_trio(stub.join_room)(
                JoinRoomRequest(
                    user_id="unreachable",
                    room_name=room,
                    token=bridge.token("bridge-unreachable", room),
                    livekit_url=f"ws://127.0.0.1:{closed_port()}",
                )
            )
            assert not unreachable.success and "could not connect" in unreachable.error
            assert bridge.state.registry.sessions_failed_to_join == 3

            # StreamAudio for a user without a session, or without a user at all.
            await open_stream_expecting(bridge, "nobody", Status.NOT_FOUND)
            await open_stream_expecting(bridge, "", Status.INVALID_ARGUMENT)

            # Malformed chunks end that stream with INVALID_ARGUMENT; the session stays.
            victim, victim_room = "victim-user", new_room()
            assert (await join(bridge, victim, victim_room)).success
            for bad, words in (
                (AudioChunk(pcm_data=b"\x01\x02\x03", sample_rate=16000, channels=1), "3 bytes"),
                (AudioChunk(pcm_data=b"\x00" * 320, sample_rate=1234, channels=1), "sample_rate=1234"),
                (AudioChunk(pcm_data=b"\x00" * 320, sample_rate=16000, channels=3), "channels=3"),
                (
                    AudioChunk(pcm_data=b"\x00" * 320, sample_rate=16000, channels=1, track_id=99),
                    "track_id 99",
                ),
            ):
                ended = await open_stream_expecting(bridge, victim, Status.INVALID_ARGUMENT, [bad])
                assert all(w in ended.message for w in words), ended.message
                status = await aio_as_trio(stub.get_status)(BridgeStatusRequest(user_id=victim))
                assert status.connected
            assert bridge.state.registry.get(victim).stream.counters.rejected_chunks == 4
            # Bytes that are not an AudioChunk at all (a truncated field): INVALID_ARGUMENT, the
            # session stays. (The first message opens the call for the victim.)
            truncated = b"\x0a\x05ab"
            status, message = await aio_as_trio(raw_stream_status)(
                bridge, [bytes(AudioChunk(user_id=victim)), truncated]
            )
            assert status is Status.INVALID_ARGUMENT and "not a valid AudioChunk" in message, (
                status,
                message,
            )
            assert (await aio_as_trio(stub.get_status)(BridgeStatusRequest(user_id=victim))).connected
            await aio_as_trio(stub.leave_room)(LeaveRoomRequest(user_id=victim))

            # The healthy session received every packet, in order, throughout.
            expected = b"".join(p[1:] for p in packets)
            await wait_until(lambda: len(cloud.pcm) >= len(expected), timeout_s=20, what="all healthy audio")
            assert cloud.pcm == expected
            session = bridge.state.registry.get(healthy)
            assert session.mic.sequence_totals()["lost"] == 0
            assert session.mic.queue.dropped_chunks == 0
            await aio_as_trio(stub.leave_room)(LeaveRoomRequest(user_id=healthy))
        await aio_as_trio(participants.disconnect)(phone)


class _RawCodec(CodecBase):
    """Sends and reads message bytes as they are: for bytes no protobuf library would produce."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


async def raw_stream_status(bridge: Any, messages: list[bytes]) -> tuple[Status, str]:
    """A StreamAudio call sending ``messages`` as raw bytes; the status it ends with (asyncio side)."""
    host, port = bridge.state.address.rsplit(":", 1)
    channel = Channel(host, int(port), codec=_RawCodec())
    try:
        path = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"
        async with channel.request(path, Cardinality.STREAM_STREAM, bytes, bytes) as call:
            for message in messages:
                await call.send_message(message)
            # The server resets the call after its trailers: their status is raised on the way out.
            with contextlib.suppress(StreamTerminatedError):
                while await call.recv_message() is not None:
                    pass
    except GRPCError as err:
        return err.status, err.message or ""
    else:
        return Status.OK, ""
    finally:
        channel.close()


def _first_play_event(stub):  # type: ignore[no-untyped-def]
    async def call(request):  # type: ignore[no-untyped-def]
        async for event in stub.play_audio(request):
            return event
        return None

    return call
