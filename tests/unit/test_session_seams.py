"""Session and registry logic through their seams, without Go or a LiveKit server: a fake room
link (``room_factory``), a fake StreamAudio call (``CloudLink``) and Trio's MockClock for the TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
import trio_asyncio

from bridge.cloud_queue import CloudAudioQueue, QueueClosed
from bridge.config import BridgeConfig
from bridge.errors import SessionNotFoundError
from bridge.metrics import BridgeMetrics
from bridge.playback import PlaybackStats
from bridge.registry import MOVE_GRACE_S, SessionRegistry
from bridge.session import CloseReason, JoinRequest, StreamCounters, StreamEndReason
from bridge.session.stream import STREAM_TASKS_END_TIMEOUT_S
from support.fake_room import FakeRooms

TTL_S = 120.0


@dataclass(eq=False)
class FakeCall:
    """A StreamAudio call as the session sees it: records room audio, sends nothing, ends on demand."""

    user_id: str
    received: list[bytes] = field(default_factory=list)
    hang_up: asyncio.Event | None = None
    notices: frozenset[str] = frozenset()
    notices_received: list[str] = field(default_factory=list)

    async def send_all(self, queue: CloudAudioQueue, counters: StreamCounters) -> None:
        while True:
            try:
                batch = await queue.get_batch()
            except QueueClosed:
                return
            self.received += [chunk.pcm for chunk in batch if not chunk.notice]
            self.notices_received += [chunk.notice for chunk in batch if chunk.notice]
            counters.chunks_to_cloud += len(batch)

    async def receive_all(self, publish: Any, counters: StreamCounters) -> None:
        self.hang_up = asyncio.Event()
        await self.hang_up.wait()  # the cloud keeps its call open until the test ends it


@dataclass(eq=False)
class World:
    registry: SessionRegistry
    rooms: FakeRooms
    nursery: trio.Nursery

    async def join(self, user: str, **request: str) -> Any:
        outcome = await self.registry.join(JoinRequest(user, "ws://fake.test", "token", **request))
        return outcome


@pytest.fixture
async def world(mock_clock: trio.testing.MockClock) -> AsyncIterator[World]:
    config = BridgeConfig(session_idle_ttl_s=TTL_S, max_sessions=2, join_timeout_s=5.0)
    rooms = FakeRooms()
    services: Any = SimpleNamespace(stats=PlaybackStats(), client=None, limits=None)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        registry = SessionRegistry(config, nursery, services, BridgeMetrics(), room_factory=rooms)
        yield World(registry, rooms, nursery)
        await registry.close_all(CloseReason.SHUTDOWN, 5.0)
        nursery.cancel_scope.cancel()


async def test_the_idle_ttl_closes_a_quiet_session_no_sooner_and_no_later(
    world: World, mock_clock: trio.testing.MockClock
) -> None:
    session = (await world.join("quiet")).session
    await trio.testing.wait_all_tasks_blocked()
    mock_clock.jump(TTL_S - 0.001)
    await trio.testing.wait_all_tasks_blocked()
    assert session.close_reason is None  # not a moment early
    mock_clock.jump(0.002)
    await session.closed.wait()
    assert session.close_reason is CloseReason.IDLE
    assert world.registry.tombstone("quiet") is not None and world.rooms.made[0].closed == 1


async def test_a_call_resets_the_idle_ttl_and_a_status_read_does_not(
    world: World, mock_clock: trio.testing.MockClock
) -> None:
    session = (await world.join("polled")).session
    await trio.testing.wait_all_tasks_blocked()
    mock_clock.jump(TTL_S * 0.75)
    world.registry.get("polled")  # a call for the session (touch)
    await trio.testing.wait_all_tasks_blocked()
    mock_clock.jump(TTL_S * 0.75)  # 1.5 TTL since the join, 0.75 since the call
    await trio.testing.wait_all_tasks_blocked()
    assert session.close_reason is None
    for _ in range(2):  # GetStatus polling: read-only, keeps nothing alive
        world.registry.get("polled", touch=False)
        mock_clock.jump(TTL_S * 0.1)
        await trio.testing.wait_all_tasks_blocked()
    assert session.close_reason is None  # 0.95 TTL since the call
    mock_clock.jump(TTL_S * 0.06)  # 1.01 TTL since the call, whatever the polling
    await session.closed.wait()
    assert session.close_reason is CloseReason.IDLE


async def test_an_attached_stream_keeps_a_session_alive_and_gets_its_mic_audio(
    world: World, mock_clock: trio.testing.MockClock
) -> None:
    session = (await world.join("talker", target_identity="phone")).session
    room = world.rooms.made[0]
    call = FakeCall("talker")
    ends: list[Any] = []

    async def serve() -> None:
        ends.append(await world.registry.serve_stream(call))

    world.nursery.start_soon(serve)
    await trio.testing.wait_all_tasks_blocked()
    for seq in (1, 2, 4):  # 3 is lost on the way
        room.packet(bytes([seq]) + bytes([seq]) * 320, "phone")
    room.packet(b"\x09" + b"\x00" * 320, "someone-else")  # not the target: ignored, counted
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == [bytes([s]) * 320 for s in (1, 2, 4)]
    assert session.mic.sequence_totals()["lost"] == 1 and session.mic.data_packets_ignored == 1
    mock_clock.jump(TTL_S * 3)  # streaming for three TTLs: not idle
    await trio.testing.wait_all_tasks_blocked()
    assert session.close_reason is None and session.stream.attached
    await world.registry.leave("talker", "done")
    await trio.testing.wait_all_tasks_blocked()
    assert ends and ends[0].reason is StreamEndReason.LEFT and ends[0].reason.clean


async def _streaming(world: World, user: str, **request: str) -> tuple[Any, Any, FakeCall]:
    session = (await world.join(user, **request)).session
    call = FakeCall(user)

    async def serve() -> None:
        await world.registry.serve_stream(call)

    world.nursery.start_soon(serve)
    await trio.testing.wait_all_tasks_blocked()
    return session, world.rooms.made[-1], call


def _mic(seq: int) -> bytes:
    return bytes([seq]) + bytes([seq]) * 320


async def test_a_phone_not_yet_named_loses_nothing_its_first_named_packet_releases_the_rest_first(
    world: World,
) -> None:
    """livekit-server names a data-only phone to the others up to 3 s after it starts sending: its
    packets come without a sender until then (session/unnamed.py)."""
    session, room, call = await _streaming(world, "early", target_identity="phone")
    for seq in (0, 1, 2):
        room.packet(_mic(seq), "")  # the SDK cannot name the sender yet
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == []  # held, not passed off as anyone's
    room.participants.add("phone")
    room.packet(_mic(3), "phone")
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == [bytes([s]) * 320 for s in range(4)]  # in order, the held ones first
    assert session.mic.sequence_totals() == {"received": 4, "lost": 0, "reordered": 0, "duplicates": 0}
    assert (session.mic.unnamed.released, session.mic.unnamed.expired) == (3, 0)


async def test_held_packets_go_to_the_target_when_it_is_announced_and_to_nobody_else(world: World) -> None:
    session, room, call = await _streaming(world, "announced", target_identity="phone")
    for seq in (0, 1):
        room.packet(_mic(seq), "")
    room.emit("participant_connected", identity="someone-else")  # not the target: keeps them held
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == []
    room.participants.add("phone")
    room.emit("participant_connected", identity="phone")  # the phone said nothing more since
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == [bytes([s]) * 320 for s in range(2)]
    assert session.mic.unnamed.released == 2


async def test_a_nameless_packet_is_not_the_targets_once_the_target_is_named(world: World) -> None:
    session, room, call = await _streaming(world, "named", target_identity="phone")
    room.participants.add("phone")
    room.packet(_mic(0), "phone")
    room.packet(_mic(7), "")  # someone not announced yet, or the server API
    room.packet(_mic(1), "phone")
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == [bytes([s]) * 320 for s in range(2)]
    assert session.mic.data_packets_ignored == 1 and not session.mic.unnamed


async def test_without_a_target_held_packets_go_with_the_next_named_sender(world: World) -> None:
    session, room, call = await _streaming(world, "everyone")
    room.packet(_mic(0), "")
    room.packet(_mic(1), "anyone")
    await trio.testing.wait_all_tasks_blocked()
    assert call.received == [bytes([s]) * 320 for s in range(2)]
    assert session.mic.unnamed.released == 1


async def _attach(world: World, call: FakeCall) -> list[Any]:
    ends: list[Any] = []

    async def serve() -> None:
        ends.append(await world.registry.serve_stream(call))

    world.nursery.start_soon(serve)
    await trio.testing.wait_all_tasks_blocked()
    return ends


async def test_a_drain_asks_a_client_that_understands_to_move_and_its_session_ends_when_it_has(
    world: World, mock_clock: trio.testing.MockClock
) -> None:
    """Make-before-break: the notice goes out while the session still delivers; the client's new
    session elsewhere replaces ours in the room (DUPLICATE_IDENTITY), which ends this one."""
    session = (await world.join("mover", target_identity="phone")).session
    room = world.rooms.made[0]
    call = FakeCall("mover", notices=frozenset({"draining"}))
    await _attach(world, call)
    world.nursery.start_soon(world.registry.drain, 30.0, trio.Event())
    await trio.testing.wait_all_tasks_blocked()
    assert call.notices_received == ["draining"]
    room.participants.add("phone")
    room.packet(b"\x01" + b"\x01" * 320, "phone")  # still delivering while the client re-joins
    mock_clock.jump(MOVE_GRACE_S - 0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert session.close_reason is None and call.received == [b"\x01" * 320]
    room.emit("disconnected", reason="DUPLICATE_IDENTITY")  # the client's new session took over
    await session.closed.wait()
    assert session.close_reason is CloseReason.DRAINED and session.close_detail == "moved to another bridge"


async def test_a_drain_hands_over_a_client_that_did_not_move_in_time_or_cannot(
    world: World, mock_clock: trio.testing.MockClock
) -> None:
    slow = (await world.join("slow")).session
    told = FakeCall("slow", notices=frozenset({"draining"}))
    await _attach(world, told)
    old = (await world.join("old-client")).session
    untold = FakeCall("old-client")  # asked for no notices: an older client
    await _attach(world, untold)
    world.nursery.start_soon(world.registry.drain, 30.0, trio.Event())
    await old.closed.wait()  # handed over at once, as before notices existed
    assert old.close_reason is CloseReason.DRAINED and untold.notices_received == []
    assert told.notices_received == ["draining"] and slow.close_reason is None
    mock_clock.jump(MOVE_GRACE_S + 0.1)
    await slow.closed.wait()
    assert slow.close_reason is CloseReason.DRAINED and slow.close_detail == "bridge draining"


async def test_a_lost_room_ends_the_session_and_its_stream_asks_for_a_rejoin(world: World) -> None:
    session = (await world.join("kicked")).session
    call = FakeCall("kicked")
    ends: list[Any] = []

    async def serve() -> None:
        ends.append(await world.registry.serve_stream(call))

    world.nursery.start_soon(serve)
    await trio.testing.wait_all_tasks_blocked()
    world.rooms.made[0].emit("disconnected", reason="PARTICIPANT_REMOVED")
    await session.closed.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert session.close_reason is CloseReason.ROOM_DISCONNECTED
    assert ends[0].reason is StreamEndReason.SESSION_ENDED and not ends[0].reason.clean
    assert "PARTICIPANT_REMOVED" in world.registry.tombstone("kicked").reason  # type: ignore[union-attr]


async def test_a_bug_in_a_session_task_ends_that_session_only(world: World) -> None:
    faulty = (await world.join("faulty")).session
    healthy = (await world.join("healthy")).session

    def broken(track_sid: str) -> None:
        raise RuntimeError("injected fault")

    faulty.mic.stop_reading = broken  # type: ignore[method-assign]
    world.rooms.made[0].emit("track_unsubscribed")
    await faulty.closed.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert faulty.close_reason is CloseReason.FAILED and "injected fault" in faulty.close_detail
    assert faulty.failures == 1 and faulty.trio_task_count() == 0
    assert healthy.close_reason is None and world.registry.get("healthy") is healthy


async def test_a_cleanup_longer_than_its_bound_is_logged_and_ends_the_session_anyway(
    world: World, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    session = (await world.join("slow")).session
    world.rooms.made[0].aclose_s = 60.0  # the room's disconnect would take a minute
    session.close(CloseReason.LEFT)
    await trio.testing.wait_all_tasks_blocked()
    assert not session.closed.is_set()
    mock_clock.jump(5.1)  # the bound: the registry is not held up longer
    await trio.testing.wait_all_tasks_blocked()
    assert session.closed.is_set()
    with pytest.raises(SessionNotFoundError):
        world.registry.get("slow")  # its place is free again
    assert "session cleanup took over 5 s" in caplog.text


async def test_a_join_that_cannot_connect_answers_and_takes_no_place(world: World) -> None:
    world.rooms.fail_connect = "could not connect to LiveKit at ws://fake.test: 401"
    outcome = await world.join("refused")
    assert outcome.session is None and "401" in outcome.error
    world.rooms.fail_connect = ""
    assert (await world.join("a")).session is not None
    assert (await world.join("b")).session is not None  # capacity 2: the failed join held no place


@dataclass(eq=False)
class StubbornCall(FakeCall):
    """A call whose asyncio half ignores its first cancel (a library bug) until the test releases it."""

    release: asyncio.Event | None = None

    async def receive_all(self, publish: Any, counters: StreamCounters) -> None:
        self.release = asyncio.Event()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.release.wait()


async def test_a_call_whose_tasks_ignore_their_cancel_still_returns_within_its_bound(
    world: World, mock_clock: trio.testing.MockClock
) -> None:
    await world.join("stubborn")
    call = StubbornCall("stubborn")
    client = trio.CancelScope()
    returned: list[float] = []

    async def serve() -> None:
        with client:  # grpclib cancels the handler when the client goes away
            try:
                await world.registry.serve_stream(call)
            finally:
                returned.append(trio.current_time())

    world.nursery.start_soon(serve)
    await trio.testing.wait_all_tasks_blocked()
    hung_up = trio.current_time()
    client.cancel()
    await trio.testing.wait_all_tasks_blocked()
    mock_clock.jump(STREAM_TASKS_END_TIMEOUT_S - 0.01)
    await trio.testing.wait_all_tasks_blocked()
    assert not returned  # still waiting, shielded, for the call's tasks
    mock_clock.jump(0.02)
    await trio.testing.wait_all_tasks_blocked()
    assert returned and returned[0] - hung_up == pytest.approx(STREAM_TASKS_END_TIMEOUT_S, abs=0.02)
    assert call.release is not None
    call.release.set()  # the stuck task ends; the session is whole again
    await trio.testing.wait_all_tasks_blocked()
    assert not world.registry.get("stubborn").stream.attached
