"""The server around the sessions: health, reflection, unix socket, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest
import trio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest as GrpcHealthCheckRequest
from grpclib.health.v1.health_pb2 import HealthCheckResponse as GrpcHealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, ResponseReceived, TrailersReceived
from trio_asyncio import aio_as_trio

from bridge import serve
from bridge._gen.mentra.livekit.bridge import (
    HealthCheckRequest,
    HealthCheckResponseServingStatus,
    JoinRoomRequest,
    LeaveRoomRequest,
)
from bridge.testing.cloud import CloudStream
from conftest import make_config
from support.bridge_process import BridgeProcess, bridge_process
from support.flows import join, new_room

pytestmark = pytest.mark.livekit

SERVICE = "mentra.livekit.bridge.LiveKitBridge"


async def _health(channel: Channel, service: str) -> int:
    reply = await HealthStub(channel).Check(GrpcHealthCheckRequest(service=service))
    return int(reply.status)


async def _reflect(channel: Channel) -> tuple[list[str], int]:
    """List services, and fetch the file that defines our service (what `grpcurl describe` does)."""
    stub = ServerReflectionStub(channel)
    async with stub.ServerReflectionInfo.open() as stream:
        await stream.send_message(ServerReflectionRequest(list_services=""))
        listed = await stream.recv_message()
        await stream.send_message(ServerReflectionRequest(file_containing_symbol=SERVICE))
        described = await stream.recv_message()
        await stream.end()
    assert listed is not None and described is not None
    names = [s.name for s in listed.list_services_response.service]
    return names, len(described.file_descriptor_response.file_descriptor_proto)


async def test_health_reflection_and_healthcheck_counters(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        assert await aio_as_trio(_health)(bridge.channel, SERVICE) == GrpcHealthCheckResponse.SERVING
        assert await aio_as_trio(_health)(bridge.channel, "") == GrpcHealthCheckResponse.SERVING
        names, files = await aio_as_trio(_reflect)(bridge.channel)
        assert SERVICE in names and "grpc.health.v1.Health" in names
        assert files >= 1  # the descriptor is really there, so `grpcurl describe` works

        user, room = "health-user", new_room()
        assert (await join(bridge, user, room)).success
        health = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest())
        with trio.fail_after(5):  # the uptime counts in whole seconds: poll until it reaches 1
            while health.uptime_seconds < 1:
                await trio.sleep(0.05)
                health = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest())
        assert health.status is HealthCheckResponseServingStatus.SERVING
        assert health.active_sessions == 1 and health.uptime_seconds >= 1
        assert int(health.metadata["trio_tasks"]) > 0 and int(health.metadata["asyncio_tasks"]) > 0
        await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))


async def _unix_health(path: str) -> int:
    channel = Channel(path=path)
    try:
        return await _health(channel, SERVICE)
    finally:
        channel.close()


async def test_the_bridge_listens_on_a_private_unix_socket_replacing_a_stale_one(
    aio_loop, livekit_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bridge.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file left behind by a crashed bridge
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(serve, make_config(livekit_server, grpc_socket=str(path)))
            assert state.address == f"unix:{path}"
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert await aio_as_trio(_unix_health)(str(path)) == GrpcHealthCheckResponse.SERVING
            state.request_shutdown()
    assert not path.exists()


async def test_sigterm_drains_live_sessions_with_unavailable_and_exits_zero(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server, tmp_path: Path
) -> None:
    log_path = tmp_path / "bridge.log"
    with trio.fail_after(40):
        async with bridge_process(
            livekit_server, log_path, kind=BridgeProcess, BRIDGE_SHUTDOWN_TIMEOUT_S="5"
        ) as bridge:
            stub, process = bridge.stub, bridge.process

            class Remote:  # what support.flows.join needs from a bridge
                def __init__(self) -> None:
                    self.stub = stub

                def token(self, identity: str, room: str) -> str:
                    return livekit_server.token(identity, room)

            # A token LiveKit rejects (bad signature) is quoted back by the server and logged by the
            # SDK's native core: the bridge's log must not contain it.
            forged = livekit_server.token("bridge-forged", "r")[:-6] + "AAAAAA"
            rejected = await aio_as_trio(stub.join_room)(JoinRoomRequest(user_id="forged", token=forged))
            assert not rejected.success

            user = "sigterm-user"
            assert (await join(Remote(), user, new_room())).success
            cloud = CloudStream(bridge.channel, user)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(cloud.run))
                await cloud.opened.wait()
                with trio.fail_after(5):  # the stream attached at the bridge, not merely sent
                    while (await aio_as_trio(stub.health_check)(HealthCheckRequest())).active_streams < 1:
                        await trio.sleep(0.02)
                sent_at = trio.current_time()
                process.send_signal(signal.SIGTERM)
                await cloud.ended.wait()
            # A session without playbacks is handed over at once: the client is told to re-join.
            assert cloud.status is Status.UNAVAILABLE and "draining" in cloud.message, cloud.message
            exit_code = await trio.to_thread.run_sync(process.wait, 15)
            elapsed = trio.current_time() - sent_at
    assert exit_code == 0, log_path.read_text()
    log_text = log_path.read_text()
    assert "SIGTERM: draining" in log_text and "shutting down" in log_text and "401" in log_text
    assert forged.split(".")[2] not in log_text and forged.split(".")[1] not in log_text
    assert elapsed < 5 + 3  # nothing to wait for in the drain; within BRIDGE_SHUTDOWN_TIMEOUT_S + slack


async def test_shutdown_flips_health_to_not_serving_before_sessions_close(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    from conftest import start_bridge

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            bridge = await start_bridge(nursery, livekit_server)
            for i in range(3):  # closing these takes a moment: the window to observe
                assert (await join(bridge, f"health-{i}", new_room())).success
            bridge.state.request_shutdown()
            await trio.lowlevel.checkpoint()
            seen: list[int] = []
            with trio.move_on_after(5):
                while GrpcHealthCheckResponse.NOT_SERVING not in seen:
                    seen.append(await aio_as_trio(_health)(bridge.channel, SERVICE))
            bridge.channel.close()
        assert seen == [GrpcHealthCheckResponse.NOT_SERVING], seen  # at once, while sessions close


async def _streams_before_the_settings_ack(address: str, count: int) -> tuple[list[str], bool]:
    """A raw HTTP/2 client that opens ``count`` StreamAudio calls (each closed at once, with no message)
    before it acknowledges the server's SETTINGS, as any client may; returns each call's grpc-status and
    whether the server ended the connection."""
    host, port = address.rsplit(":", 1)
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"),
        (":authority", address),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    for _ in range(count):
        client.send_headers(client.get_next_available_stream_id(), headers, end_stream=True)
    statuses: list[str] = []
    terminated = False
    async with await trio.open_tcp_stream(host, int(port)) as connection:
        await connection.send_all(client.data_to_send())  # every HEADERS frame before our SETTINGS ACK
        while len(statuses) < count and not terminated:
            data = await connection.receive_some()
            if not data:
                terminated = True
                break
            for event in client.receive_data(data):
                if isinstance(event, TrailersReceived | ResponseReceived):
                    statuses.extend(value.decode() for name, value in event.headers if name == b"grpc-status")
                terminated |= isinstance(event, ConnectionTerminated)
            await connection.send_all(client.data_to_send())
    return statuses, terminated


async def test_streams_opened_before_the_client_acknowledges_the_settings_are_served(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server
) -> None:
    """h2 enforces its default of 100 streams until the client acknowledges the raised limit, and ends
    the whole connection (every user's calls on it) when a stream exceeds it. A client that opens its
    calls on a fresh connection without waiting for the server's SETTINGS, as HTTP/2 allows, hit that."""
    from conftest import running_bridge

    with trio.fail_after(30):
        async with running_bridge(livekit_server) as bridge:
            statuses, terminated = await _streams_before_the_settings_ack(bridge.state.address, 150)
    assert not terminated
    assert statuses == ["0"] * 150, statuses


async def _silent_streams(channel: Channel, count: int, opened: trio.Event, statuses: list[object]) -> None:
    """asyncio side: ``count`` StreamAudio calls on one connection that never send a message."""
    import asyncio

    import grpclib.const

    from bridge._gen.mentra.livekit.bridge import AudioChunk
    from bridge.testing.cloud import STREAM_AUDIO

    async def one() -> None:
        try:
            async with channel.request(
                STREAM_AUDIO, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
            ) as stream:
                await stream.send_request()
                while await stream.recv_message() is not None:
                    pass
            statuses.append(Status.OK)
        except GRPCError as err:
            statuses.append(err.status)

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]

    def served() -> int:  # the server's handler tasks for these calls (grpclib's request_handler)
        return sum(
            1 for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "request_handler"
        )

    while served() < count:  # every call open at the server, not merely sent by the client
        await asyncio.sleep(0.01)
    opened.set()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_connection_carries_more_than_100_streams_and_silent_ones_are_ended(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server
) -> None:
    from conftest import running_bridge

    with trio.fail_after(30):
        async with running_bridge(livekit_server, stream_first_message_timeout_s=2.0) as bridge:
            opened, statuses = trio.Event(), list[object]()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(_silent_streams), bridge.channel, 150, opened, statuses)
                with trio.fail_after(10):  # all 150 open at the server (a cap of 100 never gets there)
                    await opened.wait()
                # 150 open calls on this connection, and it still answers (h2's default limit is 100).
                with trio.fail_after(1.5):
                    health = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest())
                assert health.status is HealthCheckResponseServingStatus.SERVING
            # The silent calls did not hold their slots forever.
            assert statuses == [Status.INVALID_ARGUMENT] * 150, set(map(str, statuses))
