"""How domain outcomes become gRPC answers, through the real server with fake rooms (no LiveKit)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from trio_asyncio import aio_as_trio

from bridge import BridgeConfig, serve
from bridge._gen.mentra.livekit.bridge import (
    BridgeStatusRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
    LiveKitBridgeStub,
    StopAudioRequest,
)
from bridge.testing.cloud import CloudStream
from support.fake_room import FakeRooms
from support.flows import wait_until


async def _channel(address: str) -> Channel:
    host, port = address.rsplit(":", 1)
    return Channel(host, int(port))


@pytest.fixture
async def bridge() -> AsyncIterator[tuple[Any, LiveKitBridgeStub, Channel, FakeRooms]]:
    rooms = FakeRooms()
    config = BridgeConfig(port=0, livekit_url="ws://lk.test", livekit_url_allow="lk.test", max_sessions=2)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        state = await nursery.start(
            lambda task_status: serve(config, room_factory=rooms, task_status=task_status)
        )
        channel = await aio_as_trio(_channel)(state.address)
        yield state, LiveKitBridgeStub(channel), channel, rooms
        channel.close()
        state.request_shutdown(immediately=True)


async def _status(call: Any, request: Any) -> Status:
    try:
        await aio_as_trio(call)(request)
    except GRPCError as err:
        return err.status
    return Status.OK


async def test_requests_map_to_the_statuses_the_contract_names(bridge: Any) -> None:
    _, stub, _, rooms = bridge
    join = JoinRoomRequest(user_id="u1", token="t")
    assert (await aio_as_trio(stub.join_room)(join)).success
    assert rooms.made[0].connects == ["ws://lk.test"]
    # malformed -> INVALID_ARGUMENT; refused by configuration -> PERMISSION_DENIED
    assert await _status(stub.join_room, JoinRoomRequest(user_id="u2")) is Status.INVALID_ARGUMENT
    elsewhere = JoinRoomRequest(user_id="u2", token="t", livekit_url="ws://other.test")
    assert await _status(stub.join_room, elsewhere) is Status.PERMISSION_DENIED
    assert await _status(stub.get_status, BridgeStatusRequest(user_id="x" * 300)) is Status.INVALID_ARGUMENT
    # a room that refuses -> success=false with the reason (old clients show it)
    rooms.fail_connect = "could not connect to LiveKit at ws://lk.test: 401 invalid token"
    refused = await aio_as_trio(stub.join_room)(JoinRoomRequest(user_id="u2", token="t"))
    assert not refused.success and "401" in refused.error
    rooms.fail_connect = ""
    # full -> RESOURCE_EXHAUSTED
    assert (await aio_as_trio(stub.join_room)(JoinRoomRequest(user_id="u2", token="t"))).success
    assert (
        await _status(stub.join_room, JoinRoomRequest(user_id="u3", token="t")) is Status.RESOURCE_EXHAUSTED
    )
    # unknown users: success=false for LeaveRoom/StopAudio, NOT_FOUND for GetStatus
    left = await aio_as_trio(stub.leave_room)(LeaveRoomRequest(user_id="nobody"))
    assert not left.success and left.error == "session not found"
    stop = await aio_as_trio(stub.stop_audio)(StopAudioRequest(user_id="nobody"))
    assert not stop.success and stop.error == "session not found"
    assert await _status(stub.get_status, BridgeStatusRequest(user_id="nobody")) is Status.NOT_FOUND
    # nothing matches a request id -> success=false; "stop everything" is idempotent
    stop = await aio_as_trio(stub.stop_audio)(StopAudioRequest(user_id="u1", request_id="r9"))
    assert not stop.success and "nothing playing for request_id r9" in stop.error
    stop = await aio_as_trio(stub.stop_audio)(StopAudioRequest(user_id="u1"))
    assert stop.success and stop.stopped_request_id == ""


async def test_stream_ends_map_to_ok_with_a_reason_or_to_unavailable(bridge: Any) -> None:
    state, stub, channel, _ = bridge
    for user in ("leaver", "drained"):
        assert (await aio_as_trio(stub.join_room)(JoinRoomRequest(user_id=user, token="t"))).success
    left, drained = CloudStream(channel, "leaver"), CloudStream(channel, "drained")
    async with trio.open_nursery() as nursery:
        for call in (left, drained):
            nursery.start_soon(aio_as_trio(call.run))
            await call.opened.wait()
        for user in ("leaver", "drained"):
            session = state.registry.get(user, touch=False)
            await wait_until(functools.partial(lambda s: s.stream.attached, session), what=f"{user} attached")
        await aio_as_trio(stub.leave_room)(LeaveRoomRequest(user_id="leaver", reason="bye"))
        await left.ended.wait()
        state.request_shutdown()  # a drain: the session has no playback, so it goes at once
        await drained.ended.wait()
    assert (left.status, left.message) == (Status.OK, "session left: bye")
    assert drained.status is Status.UNAVAILABLE and "draining" in drained.message
