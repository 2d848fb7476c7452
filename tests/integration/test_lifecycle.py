"""Every way a session ends leaves nothing behind: replace, leave, stream cancel, lost room, idle TTL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import numpy as np
import pytest
import trio
from grpclib.const import Status
from trio_asyncio import aio_as_trio

from audio_checks import sine
from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    JoinRoomRequest,
    LeaveRoomRequest,
)
from bridge.livekit_io.room import RoomLink
from bridge.session import CloseReason
from bridge.testing.cloud import CloudStream
from bridge.testing.devserver import LOST_LEAVE_TIMEOUT_S
from conftest import running_bridge
from support import participants
from support.flows import join, new_room, wait_until
from support.latency import measured_phase
from support.leaks import TaskCensus, assert_back_to

pytestmark = pytest.mark.livekit


def mic_packets(first_seq: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(first_seq)
    return [
        bytes([(first_seq + i) % 256]) + rng.integers(-9000, 9000, 320, dtype=np.int16).tobytes()
        for i in range(count)
    ]


async def test_join_room_twice_tears_the_old_session_down_first_then_replaces_it(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        user, room = "replace-user", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        old = bridge.state.registry.get(user)
        first = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(first.run))
            await first.opened.wait()
            await wait_until(lambda: old.stream.attached, what="first stream attached")

            second_join = await join(bridge, user, room)
            assert second_join.success and second_join.metadata["replaced"] == "true"
            assert old.closed.is_set() and old.close_reason is CloseReason.REPLACED
            new = bridge.state.registry.get(user)
            assert new is not old
            await first.ended.wait()
            assert first.status is Status.OK and "replaced" in first.message

            second = CloudStream(bridge.channel, user)
            nursery.start_soon(aio_as_trio(second.run))
            await second.opened.wait()
            await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")
            packets = mic_packets(0, 10)
            # Reliable: the count below is exact, and a lossy packet may be lost on a loaded machine.
            await aio_as_trio(participants.send_packets)(phone, packets, 0.01, True)
            await wait_until(
                lambda: len(second.pcm) == sum(len(p) - 1 for p in packets), what="audio on new stream"
            )
            assert first.pcm == b""  # nothing of the new session went to the replaced stream

            assert (await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))).success
            await second.ended.wait()
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(phone)


async def test_a_stream_cancelled_by_the_cloud_ends_its_tasks_and_the_session_stays(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        user, room = "cancel-user", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
        assert (await join(bridge, user, room)).success
        session = bridge.state.registry.get(user)
        with_session = await bridge.census()

        cloud = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await wait_until(lambda: session.stream.attached, what="stream attached")
            nursery.cancel_scope.cancel()  # the cloud cancels the call (HTTP/2 RST_STREAM)
        await wait_until(lambda: not session.stream.attached, what="stream detached")
        await assert_back_to(with_session)  # the stream's tasks are gone, the session's remain

        status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
        assert status.connected

        again = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(again.run))
            await again.opened.wait()
            await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")
            packets = mic_packets(7, 5)
            await aio_as_trio(participants.send_packets)(phone, packets, 0.01, True)  # exact count
            await wait_until(
                lambda: len(again.pcm) == sum(len(p) - 1 for p in packets), what="audio after reopen"
            )
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
        assert again.status is Status.OK
        await aio_as_trio(participants.disconnect)(phone)


async def test_a_session_without_stream_or_calls_is_reaped_after_the_idle_ttl(
    aio_loop, livekit_server
) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        async with running_bridge(livekit_server, session_idle_ttl_s=1.0) as bridge:
            user, room = "idle-user", new_room()
            baseline = await bridge.census()
            assert (await join(bridge, user, room)).success

            # A cloud that opened its stream and then vanished (its connection dropped) ...
            cloud = CloudStream(bridge.channel, user)
            async with trio.open_nursery() as stream_nursery:
                stream_nursery.start_soon(aio_as_trio(cloud.run))
                await cloud.opened.wait()
                await wait_until(
                    lambda: bridge.state.registry.get(user).stream.attached, what="stream attached"
                )
                bridge.channel.close()  # abrupt: the TCP connection goes away
            # ... leaves a session that is reaped once the TTL has passed without calls.
            await wait_until(lambda: len(bridge.state.registry) == 0, timeout_s=5, what="idle session reaped")
            tombstone = bridge.state.registry.tombstone(user)
            assert tombstone is not None and "no stream, playback or call" in tombstone.reason
            await bridge.reconnect()
            await bridge.census()
            await assert_back_to(baseline)


async def test_the_livekit_server_stopped_under_a_live_session_is_reported_and_survived(  # type: ignore[no-untyped-def]
    aio_loop, private_livekit_server
) -> None:
    lk = private_livekit_server
    with trio.fail_after(60):
        async with running_bridge(lk) as bridge:
            user, room = "outage-user", new_room()
            baseline = await bridge.census()
            assert (await join(bridge, user, room)).success
            cloud = CloudStream(bridge.channel, user)
            async with trio.open_nursery() as stream_nursery:
                stream_nursery.start_soon(aio_as_trio(cloud.run))
                await cloud.opened.wait()

                before_kill = trio.current_time()
                await trio.to_thread.run_sync(lk.kill)
                status = None
                with trio.move_on_after(10):
                    while True:
                        status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
                        if not status.connected:
                            break
                        await trio.sleep(0.05)
                assert status is not None and not status.connected, "GetStatus never reported the outage"
                assert status.last_disconnect_at > 0 and status.last_disconnect_reason
                reported = trio.current_time() - before_kill
                print(f"outage reported {reported:.2f} s after the kill")
                # A 1 s outage: the SDK gives up resuming and reconnects in full (a new participant).
                await trio.sleep(1.0)
                restarting = trio.current_time()
                await trio.to_thread.run_sync(lk.restart)
                print(f"server restart took {trio.current_time() - restarting:.2f} s")
                restarted = trio.current_time()
                with trio.move_on_after(30):
                    while not (
                        await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
                    ).connected:
                        await trio.sleep(0.1)
                status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
                took = trio.current_time() - restarted
                print(f"reconnected {took:.2f} s after the restart")
                assert status.connected, "the session did not reconnect after the server came back"
                # Measured ~0.1 s and ~0.0-0.2 s (the SDK retries during the restart); 10 s each is the
                # budget on a loaded machine: a session stuck in backoff fails it.
                assert reported <= 10 and took <= 10, (reported, took)

                # Connected for real: a phone joining the restarted server reaches the cloud stream,
                # every packet of it, its first seconds included (the server names it to the bridge
                # up to 3 s late: session/unnamed.py). Reliable, so a loss is the bridge's.
                phone = await aio_as_trio(participants.connect)(lk.url, lk.token(user, room))
                await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}", 20)
                packets = mic_packets(100, 40)
                await aio_as_trio(participants.send_packets)(phone, packets, 0.05, True)
                expected = b"".join(p[1:] for p in packets)
                await wait_until(lambda: len(cloud.pcm) >= len(expected), what="audio after the outage")
                assert cloud.pcm == expected
                await aio_as_trio(participants.disconnect)(phone)
                assert (await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))).success
            await assert_back_to(baseline)


async def test_tasks_per_session_are_few_counted_and_all_end(bridge) -> None:  # type: ignore[no-untyped-def]
    """The task budget of a session, printed (see docs/design/architecture.md) and bounded."""
    with trio.fail_after(45):
        user, room = "budget-user", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        joined = await bridge.census()
        cloud = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await wait_until(lambda: bridge.state.registry.get(user).stream.attached, what="stream attached")
            streaming = await bridge.census()
            await aio_as_trio(cloud.send)(AudioChunk(pcm_data=b"\x00" * 3200, sample_rate=16000, channels=1))
            await wait_until(lambda: bool(bridge.state.registry.get(user).tracks.published), what="track")
            publishing = await bridge.census()
            # The census includes the test's own CloudStream task: count the bridge's side only.
            rows = {
                "joined (room, events, idle reaper)": (joined, baseline),
                "+ StreamAudio attached": (streaming, joined),
                "+ one published track": (publishing, streaming),
            }
            for label, (now, before) in rows.items():
                print(
                    f"{label}: trio +{now.trio_tasks - before.trio_tasks}, "
                    f"asyncio +{now.asyncio_total - before.asyncio_total}"
                )
            assert joined.trio_tasks - baseline.trio_tasks <= 4
            assert joined.asyncio_total - baseline.asyncio_total <= 2
            assert publishing.trio_tasks - baseline.trio_tasks <= 12
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(phone)


@pytest.mark.parametrize("how", ["server API RemoveParticipant", "duplicate identity"])
async def test_a_kicked_session_ends_its_stream_with_unavailable_and_leaves_nothing(bridge, how: str) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        user, room = "kicked-user", new_room()
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        session = bridge.state.registry.get(user)
        cloud = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await wait_until(lambda: session.stream.attached, what="stream attached")
            lk = bridge.livekit
            intruder = None
            if how == "duplicate identity":  # another participant joins as the bridge: LiveKit kicks ours
                intruder = await aio_as_trio(participants.connect)(lk.url, lk.token(f"bridge-{user}", room))
            else:
                await aio_as_trio(participants.remove_participant)(
                    lk.http_url, lk.api_key, lk.api_secret, room, f"bridge-{user}"
                )
            await cloud.ended.wait()
        assert cloud.status is Status.UNAVAILABLE and "room disconnected" in cloud.message, cloud.message
        assert session.close_reason is CloseReason.ROOM_DISCONNECTED
        status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
        assert not status.connected and "room disconnected" in status.last_disconnect_reason
        if intruder is not None:
            await aio_as_trio(participants.disconnect)(intruder)
        await assert_back_to(baseline)


class _WatchedRoomLink(RoomLink):
    """The real room link, noting whether a cancel reached it while its native connect was running."""

    cancelled_mid_connect: bool | None = None
    """None: never cancelled in connect; True: cancelled while the connect was pending."""

    async def connect(self, url: str, token: str, *, timeout_s: float) -> None:
        try:
            await super().connect(url, token, timeout_s=timeout_s)
        except asyncio.CancelledError:
            self.cancelled_mid_connect = self.connect_pending
            raise


async def test_a_join_cancelled_mid_connect_leaves_no_participant_behind(bridge) -> None:  # type: ignore[no-untyped-def]
    """The cloud gives up on a JoinRoom while the bridge is connecting: the native connect would
    complete anyway; the bridge must wait for it and disconnect, not leave a ghost in the room.

    Each attempt cancels its JoinRoom once the bridge's room connect has started (then a little
    later), and the room link records whether the cancel reached it while the connect was still
    pending: at least one must have, or this test proved nothing. A cancel that arrives after the
    join completed leaves a normal session (the cloud's retry replaces it, or the idle TTL reaps
    it); what must never exist is a participant without one.
    """
    lk = bridge.livekit
    links: list[_WatchedRoomLink] = []

    def watched_room(on_data, events):  # type: ignore[no-untyped-def]
        links.append(_WatchedRoomLink(on_data=on_data, events=events))
        return links[-1]

    bridge.state.registry._room_factory = watched_room
    with trio.fail_after(60):
        room = new_room()
        witness = await aio_as_trio(participants.connect)(lk.url, lk.token("witness", room))
        baseline = await bridge.census()
        for attempt, delay in enumerate((0.0, 0.0, 0.01, 0.02, 0.04, 0.06, 0.1)):
            made = len(links)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(join, bridge, f"ghost-{attempt}", room)
                await wait_until(
                    lambda: len(links) > made and links[-1]._connecting is not None,  # noqa: B023
                    what="the room connect started",
                )
                await trio.sleep(delay)  # how far into the connect the cancel lands: the variable
                nursery.cancel_scope.cancel()

        async def identities() -> list[str]:
            return sorted(
                await aio_as_trio(participants.list_identities)(lk.http_url, lk.api_key, lk.api_secret, room)
            )

        def expected() -> list[str]:
            return sorted(["witness"] + [f"bridge-{s.user_id}" for s in bridge.state.registry.sessions()])

        outcomes = [link.cancelled_mid_connect for link in links]
        print(f"cancel landed mid-connect: {outcomes}; sessions kept: {len(bridge.state.registry)}")
        assert any(outcomes), "no cancel landed while a connect was pending: nothing was tested"
        seen: list[str] = []
        with trio.move_on_after(10):  # a connect in flight finishes, then disconnects
            while (seen := await identities()) != expected():
                await trio.sleep(0.2)
        assert seen == expected(), "a participant without a session (a ghost)"
        for session in bridge.state.registry.sessions():
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=session.user_id))
        await assert_back_to(baseline)
        assert await _ours_in(lk, room) == []
        await aio_as_trio(participants.disconnect)(witness)


async def test_a_livekit_url_that_never_answers_fails_the_join_within_its_timeout(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server
) -> None:
    """A server that accepts the connection and then says nothing: JoinRoom answers success=false
    after about BRIDGE_JOIN_TIMEOUT_S (plus the wait for the native connect to end), leaves no task."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        with contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some():  # say nothing, until the client hangs up
                pass

    with trio.fail_after(30):
        async with running_bridge(livekit_server, join_timeout_s=1.0) as bridge:
            baseline = await bridge.census()
            async with trio.open_nursery() as silent_server:
                await silent_server.start(trio.serve_listeners, hold, listeners)
                started = trio.current_time()
                request = JoinRoomRequest(
                    user_id="silent",
                    room_name="r",
                    token=bridge.token("bridge-silent", "r"),
                    livekit_url=f"ws://127.0.0.1:{port}",
                )
                reply = await aio_as_trio(bridge.stub.join_room)(request)
                elapsed = trio.current_time() - started
                print(f"join against a silent server answered after {elapsed:.2f} s: {reply.error}")
                assert not reply.success and "could not connect" in reply.error
                assert held, "the bridge never connected to the silent server"
                assert 0.9 <= elapsed <= 2.5
                # The abandoned connect is finished by a task of the app, within 2 x timeout + 2 s.
                sessions_nursery = bridge.state.registry._nursery
                await wait_until(
                    lambda: not sessions_nursery.child_tasks, timeout_s=6, what="abandoned connect"
                )
                silent_server.cancel_scope.cancel()
            await assert_back_to(baseline)


async def _ours_in(lk, room: str) -> list[str]:  # type: ignore[no-untyped-def]
    return await aio_as_trio(participants.bridge_identities)(lk.http_url, lk.api_key, lk.api_secret, room)


async def _wait_until_none_of_ours_in(lk, rooms: list[str], timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """The server's own view (its API), polled: a disconnect reaches it a moment after we return.

    A participant still there after ``timeout_s`` fails the test, unless the server's log shows that
    it never read the leave (``devserver.leave_lost_on_the_wire``: seen in two CI runs, never in 48
    local runs of the shutdown test): then it must be gone within the server's own timeout."""

    async def left_after(seconds: float) -> dict[str, list[str]]:
        left: dict[str, list[str]] = {}
        with trio.move_on_after(seconds):
            while True:
                left = {room: ours for room in rooms if (ours := await _ours_in(lk, room))}
                if not left:
                    return {}
                await trio.sleep(0.1)
        return left

    left = await left_after(timeout_s)
    if left and lk.leaves_lost_on_the_wire(left):
        print(f"the server never read the leave of {left}; waiting for its own timeout")
        left = await left_after(LOST_LEAVE_TIMEOUT_S)
    if left:
        raise AssertionError(
            f"participants of ours still in their rooms after the teardown: {left}\n"
            f"the LiveKit server's log of them:\n{lk.log_of_participants(left)}"
        )


async def test_a_fault_in_a_session_task_ends_that_session_only_and_leaves_nothing(bridge) -> None:  # type: ignore[no-untyped-def]
    """A bug in one session's task (injected: ``mic.stop_reading`` raises when the room reports a
    track) ends that session alone: the healthy session in the same room keeps its latency and its
    queue, and once both are gone no task and no participant of ours is left."""
    lk = bridge.livekit
    with trio.fail_after(60):
        room = new_room()
        faulty_phone = await aio_as_trio(participants.connect)(lk.url, lk.token("faulty-phone", room))
        healthy_phone = await aio_as_trio(participants.connect)(lk.url, lk.token("healthy-phone", room))
        baseline = await bridge.census()
        assert (await join(bridge, "faulty", room, target="faulty-phone")).success
        assert (await join(bridge, "healthy", room, target="healthy-phone")).success
        faulty, healthy = bridge.state.registry.get("faulty"), bridge.state.registry.get("healthy")
        cloud = CloudStream(bridge.channel, "healthy")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await wait_until(lambda: healthy.stream.attached, what="healthy stream attached")
            for identity in ("bridge-faulty", "bridge-healthy"):
                await aio_as_trio(participants.wait_for_participant)(healthy_phone, identity)
                await aio_as_trio(participants.wait_for_participant)(faulty_phone, identity)

            # Baseline phase: no fault.
            before, deepest_before = await measured_phase(
                healthy_phone, mic_packets(0, 50), 0.02, cloud, healthy
            )

            def broken(track_sid: str) -> None:
                raise RuntimeError("injected fault")

            faulty.mic.stop_reading = broken  # the room's track_subscribed event calls it

            failed_at: list[float] = []

            async def fault() -> None:
                # The faulty session's phone publishes a track: its session's event task raises.
                tone = sine(440, 0.2, 48000)  # short: only its publication matters
                await aio_as_trio(participants.publish_tone)(faulty_phone, tone, 48000)
                await faulty.closed.wait()
                failed_at.append(time.monotonic())

            sent_at: list[float] = []
            during, deepest_during = await measured_phase(
                healthy_phone, mic_packets(50, 150), 0.02, cloud, healthy, during=fault, sent_at=sent_at
            )
            # The fault happened while the healthy phone was sending: the phase measured it.
            assert failed_at and sent_at[0] < failed_at[0] < sent_at[-1] - 0.3, (failed_at, sent_at[::50])
            await faulty.closed.wait()
            assert faulty.close_reason is CloseReason.FAILED, faulty.close_reason
            assert "injected fault" in faulty.close_detail and faulty.failures == 1
            assert faulty.trio_task_count() == 0
            assert not healthy.closing and bridge.state.registry.get("healthy") is healthy
            print(
                f"healthy session, room->cloud: without the fault {before}, queue <= {deepest_before}; "
                f"during it {during}, queue <= {deepest_during}"
            )
            # The fault costs the other session no more than scheduling noise on a loaded machine
            # (the faulty phone's track publication runs in this same process: the tail moves).
            assert during.p50_ms <= before.p50_ms + 15, (before, during)
            assert during.p99_ms <= before.p99_ms + 150, (before, during)
            assert deepest_during <= max(deepest_before, 2) + 2, (deepest_before, deepest_during)
            assert await _ours_in(lk, room) == ["bridge-healthy"]

            assert (await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id="healthy"))).success
            await cloud.ended.wait()
        await assert_back_to(baseline)
        await _wait_until_none_of_ours_in(lk, [room])
        for phone in (faulty_phone, healthy_phone):
            await aio_as_trio(participants.disconnect)(phone)


@pytest.mark.parametrize("how", ["shutdown requested", "serve cancelled"])
async def test_shutdown_leaves_no_task_and_no_participant(aio_loop, livekit_server, how: str) -> None:  # type: ignore[no-untyped-def]
    """The process's teardown path: sessions with streams, a published track and a playing track
    all end; every Trio and asyncio task is gone, and the server has none of our participants."""
    from conftest import start_bridge

    lk = livekit_server
    with trio.fail_after(45):
        rooms = [new_room() for _ in range(2)]
        phone = await aio_as_trio(participants.connect)(lk.url, lk.token("shutdown-phone-0", rooms[0]))
        baseline = await TaskCensus.settled()
        clouds: list[CloudStream] = []
        async with trio.open_nursery() as nursery:
            bridge = await start_bridge(nursery, lk)
            for i, room in enumerate(rooms):
                user = f"shutdown-phone-{i}"
                assert (await join(bridge, user, room)).success
                cloud = CloudStream(bridge.channel, user)
                clouds.append(cloud)
                nursery.start_soon(aio_as_trio(cloud.run))
                session = bridge.state.registry.get(user)
                await wait_until(functools.partial(lambda s: s.stream.attached, session), what="stream")
                pcm = AudioChunk(pcm_data=b"\x00\x10" * 1600, sample_rate=16000, channels=1, track_id=2)
                await aio_as_trio(cloud.send)(pcm)
                await wait_until(functools.partial(lambda s: bool(s.tracks.published), session), what="track")
            assert sorted(await _ours_in(lk, rooms[0]) + await _ours_in(lk, rooms[1])) == [
                "bridge-shutdown-phone-0",
                "bridge-shutdown-phone-1",
            ]
            if how == "shutdown requested":
                bridge.state.request_shutdown(immediately=True)
                for cloud in clouds:
                    await cloud.ended.wait()
                    assert cloud.status is Status.UNAVAILABLE, (cloud.status, cloud.message)
                bridge.channel.close()
            else:
                bridge.channel.close()
                nursery.cancel_scope.cancel()
        await assert_back_to(baseline)
        await _wait_until_none_of_ours_in(lk, rooms)
        await aio_as_trio(participants.disconnect)(phone)


async def test_room_events_after_the_session_stopped_listening_are_counted_not_raised(bridge) -> None:  # type: ignore[no-untyped-def]
    """Between closing its event channel and unregistering its SDK handlers a closing session can
    still get room events from the SDK: they are counted (``RoomLink.late_events``), never raised into
    the SDK. The window is held open here (the link's close waits) while a participant joins the room."""
    lk = bridge.livekit
    with trio.fail_after(45):
        user, room = "late-user", new_room()
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        session = bridge.state.registry.get(user)
        link = session.room
        disconnect = link.aclose
        closing = trio.Event()
        trio_token = trio.lowlevel.current_trio_token()

        async def aclose_after_a_late_event() -> None:  # asyncio side, called by the session's cleanup
            trio_token.run_sync_soon(closing.set)
            for _ in range(250):  # at most 5 s, within the session's cleanup bound
                if link.late_events:
                    break
                await asyncio.sleep(0.02)
            await disconnect()

        link.aclose = aclose_after_a_late_event
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(bridge.stub.leave_room), LeaveRoomRequest(user_id=user))
            await closing.wait()  # the event channel is closed, the SDK handlers still registered
            newcomer = await aio_as_trio(participants.connect)(lk.url, lk.token("newcomer", room))
            await wait_until(lambda: link.late_events > 0, what="a late room event counted")
        await session.closed.wait()
        print(f"late room events counted: {link.late_events}")
        assert session.close_reason is CloseReason.LEFT and session.failures == 0
        await aio_as_trio(participants.disconnect)(newcomer)
        await assert_back_to(baseline)
        assert await _ours_in(lk, room) == []


async def test_get_status_during_a_sessions_cleanup_does_not_report_an_older_sessions_end(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        user, room = "stale-status-user", new_room()
        assert (await join(bridge, user, room)).success
        assert (
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user, reason="first"))
        ).success
        assert (await join(bridge, user, room)).success
        session = bridge.state.registry.get(user)
        link, disconnect = session.room, session.room.aclose
        closing, release = trio.Event(), trio.Event()
        trio_token = trio.lowlevel.current_trio_token()

        async def held_aclose() -> None:  # asyncio side: the room disconnect, held for a moment
            trio_token.run_sync_soon(closing.set)
            for _ in range(100):
                if release.is_set():
                    break
                await asyncio.sleep(0.02)
            await disconnect()

        link.aclose = held_aclose
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                aio_as_trio(bridge.stub.leave_room), LeaveRoomRequest(user_id=user, reason="second")
            )
            await closing.wait()
            try:
                status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
            finally:
                release.set()
        assert "first" not in status.last_disconnect_reason, status
