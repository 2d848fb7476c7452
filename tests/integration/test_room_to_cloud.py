"""Room -> cloud through a real LiveKit server: phone data packets and phone audio tracks."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.lowlevel
from trio_asyncio import aio_as_trio

from audio_checks import dominant_frequency, loud_segment, rms, sine
from bridge._gen.mentra.livekit.bridge import (
    BridgeStatusRequest,
    HealthCheckRequest,
    LeaveRoomRequest,
)
from bridge.livekit_io import ffi_filter
from bridge.session import BridgeSession
from bridge.testing.cloud import CloudStream
from support import participants
from support.flows import join, new_room, wait_until
from support.leaks import assert_back_to

pytestmark = pytest.mark.livekit


def packet_payload(index: int) -> bytes:
    """3200 bytes (100 ms of 16 kHz mono s16le) unique to ``index``."""
    return np.random.default_rng(index).integers(-20000, 20000, 1600, dtype=np.int16).tobytes()


async def test_phone_data_packets_arrive_byte_exact_in_order_and_skipped_sequence_numbers_are_counted(
    bridge,
) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        user, room = "phone-user-1", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
        baseline = await bridge.census()

        response = await join(bridge, user, room)
        assert response.success, response.error
        assert response.participant_id.startswith("PA_")
        assert response.participant_count == 2

        cloud = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await cloud.opened.wait()
            await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")

            # Sequence numbers 240..279 wrap past 255; the phone "loses" two of them on the way.
            skipped = {250, 260}
            indices = [i for i in range(240, 280) if i not in skipped]
            packets = [bytes([i % 256]) + packet_payload(i) for i in indices]
            expected = b"".join(packet_payload(i) for i in indices)
            await aio_as_trio(participants.send_packets)(phone, packets, 0.01)

            await wait_until(lambda: len(cloud.pcm) >= len(expected), what="all PCM at the cloud")
            assert cloud.pcm == expected
            assert all(chunk.sample_rate == 16000 and chunk.channels == 1 for chunk in cloud.received)
            assert all(chunk.user_id == user for chunk in cloud.received)

            session: BridgeSession = bridge.state.registry.get(user)
            totals = session.mic.sequence_totals()
            assert totals["lost"] == len(skipped)
            assert totals["reordered"] == 0
            health = await aio_as_trio(bridge.stub.health_check)(HealthCheckRequest())
            assert health.metadata["packets_lost"] == str(len(skipped))
            assert health.active_sessions == 1 and health.active_streams == 1

            left = await aio_as_trio(bridge.stub.leave_room)(
                LeaveRoomRequest(user_id=user, reason="test done")
            )
            assert left.success
            await cloud.ended.wait()
        assert cloud.status is not None and cloud.status.name == "OK"
        status = await aio_as_trio(bridge.stub.get_status)(BridgeStatusRequest(user_id=user))
        assert not status.connected and status.last_disconnect_at > 0
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(phone)


@pytest.mark.parametrize("direct_data", [True, False], ids=["direct", "through-the-sdk"])
async def test_a_phone_joining_after_the_bridge_loses_none_of_its_first_seconds(  # type: ignore[no-untyped-def]
    bridge, monkeypatch, direct_data
) -> None:
    """livekit-server announces a data-only phone to the bridge only in its next 3 s batch, and until
    then the SDK delivers the phone's packets without a sender: they were dropped (52 of the first
    100 at 50 ms, i.e. 2.8 s, on every such join). Now they are held and released in order, whether
    they pass the SDK's room listener or are taken straight from its events (ffi_filter.py)."""
    monkeypatch.setattr(ffi_filter, "DIRECT_DATA", direct_data)
    with trio.fail_after(45):
        user, room = f"late-phone-user-{direct_data}", new_room()
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success  # the bridge first: the phone comes later
        cloud = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await cloud.opened.wait()
            phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
            await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")
            session: BridgeSession = bridge.state.registry.get(user)
            assert not session.room.has_participant(user)  # announced in the server's next batch
            # 4 s at 50 ms: longer than the server's 3 s announcement interval. Reliable, so that
            # any packet missing at the cloud is the bridge's loss, not the lossy channel's.
            indices = list(range(80))
            packets = [bytes([i]) + packet_payload(1000 + i) for i in indices]
            await aio_as_trio(participants.send_packets)(phone, packets, 0.05, True)
            expected = b"".join(packet_payload(1000 + i) for i in indices)
            await wait_until(
                lambda: len(cloud.pcm) >= len(expected),
                what="every packet at the cloud",
                detail=lambda: f"{len(cloud.pcm)} of {len(expected)} bytes; {session.mic.snapshot()}",
            )
            assert cloud.pcm == expected
            assert session.mic.unnamed.expired == 0
            assert session.mic.sequence_totals()["lost"] == 0
            assert session.mic.unnamed.released > 0  # the phone really was nameless at first
            direct = session.room.direct_data_packets
            if direct_data:
                # Most skip the listener (a packet behind a queued room event goes through it).
                assert direct >= len(packets) // 2
            else:
                assert direct == 0
            print(
                f"{direct} of {len(packets)} packets straight from the SDK's events, "
                f"{session.mic.unnamed.released} held until the phone was named"
            )
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
        await aio_as_trio(participants.disconnect)(phone)
        await assert_back_to(baseline)


async def test_a_phone_audio_track_arrives_as_16khz_mono_pcm_with_its_frequency(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        user, room = "phone-user-2", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        cloud = CloudStream(bridge.channel, user)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(cloud.run))
            await cloud.opened.wait()
            await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")
            tone = sine(1000, 2.0, 48000, amplitude=0.5)
            await aio_as_trio(participants.publish_tone)(phone, tone, 48000)
            await wait_until(lambda: len(cloud.pcm) >= 16000 * 2 * 1.5, what="1.5 s of track audio")
            received = np.frombuffer(cloud.pcm, dtype=np.int16)
            assert all(chunk.sample_rate == 16000 and chunk.channels == 1 for chunk in cloud.received)
            assert len(cloud.received[0].pcm_data) == 16000 * 2 * bridge.config.track_chunk_ms // 1000
            loud = loud_segment(received)
            assert abs(dominant_frequency(loud, 16000) - 1000) < 5
            assert 0.7 * rms(tone) < rms(loud) < 1.3 * rms(tone)
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            await cloud.ended.wait()
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(phone)


async def test_target_identity_selects_the_phone_and_an_empty_target_takes_everyone(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        room = new_room()
        phone_id, other_id = "target-phone", "someone-else"
        lk = bridge.livekit
        phone = await aio_as_trio(participants.connect)(lk.url, lk.token(phone_id, room))
        other = await aio_as_trio(participants.connect)(lk.url, lk.token(other_id, room))
        baseline = await bridge.census()
        assert (await join(bridge, phone_id, room)).success  # target_identity = the phone
        assert (await join(bridge, "listen-all", room, target="")).success  # everyone
        filtered = CloudStream(bridge.channel, phone_id)
        everyone = CloudStream(bridge.channel, "listen-all")
        async with trio.open_nursery() as nursery:
            for stream in (filtered, everyone):
                nursery.start_soon(aio_as_trio(stream.run))
                await stream.opened.wait()
            for room_ in (phone, other):
                for bridge_identity in (f"bridge-{phone_id}", "bridge-listen-all"):
                    await aio_as_trio(participants.wait_for_participant)(room_, bridge_identity)

            # The phone sends sequence numbers 0 1 3 2 4: one packet overtaken, none lost.
            phone_packets = [bytes([seq]) + packet_payload(seq) for seq in (0, 1, 3, 2, 4)]
            other_packets = [bytes([seq]) + packet_payload(100 + seq) for seq in range(3)]
            await aio_as_trio(participants.send_packets)(phone, phone_packets, 0.02)
            await aio_as_trio(participants.send_packets)(other, other_packets, 0.02)

            phone_pcm = b"".join(p[1:] for p in phone_packets)
            other_pcm = b"".join(p[1:] for p in other_packets)
            await wait_until(
                lambda: len(everyone.pcm) >= len(phone_pcm) + len(other_pcm), what="everyone's audio"
            )
            session = bridge.state.registry.get(phone_id)
            # The filtered session has seen the other participant's packets too (and ignored them):
            # anything it wrongly forwarded would be queued for its stream by now.
            await wait_until(
                lambda: session.mic.data_packets_ignored == len(other_packets), what="other's packets seen"
            )
            await wait_until(lambda: len(filtered.pcm) >= len(phone_pcm), what="the phone's audio")
            await wait_until(lambda: session.mic.queue.depth == 0, what="the filtered queue drained")
            assert filtered.pcm == phone_pcm  # in arrival order, the other participant filtered out
            assert everyone.pcm == phone_pcm + other_pcm

            assert session.mic.sequence_totals() == {
                "received": 5,
                "lost": 0,
                "reordered": 1,
                "duplicates": 0,
            }
            assert session.mic.data_packets_ignored == len(other_packets)
            for user in (phone_id, "listen-all"):
                await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
        await assert_back_to(baseline)
        for room_ in (phone, other):
            await aio_as_trio(participants.disconnect)(room_)


async def test_every_session_room_receives_only_its_own_room_events(bridge) -> None:  # type: ignore[no-untyped-def]
    """The effect of the per-room event filter (livekit_io/ffi_filter.py), not its flag: while a phone
    sends packets in room 0, the SDK hands room 1's queue none of room 0's events (without the
    filter, every event of every room in the process is put on every room's queue)."""
    with trio.fail_after(30):
        lk = bridge.livekit
        rooms = [new_room() for _ in range(2)]
        phone = await aio_as_trio(participants.connect)(lk.url, lk.token("filter-0", rooms[0]))
        for i, room in enumerate(rooms):
            assert (await join(bridge, f"filter-{i}", room)).success
        sender, other = bridge.state.registry.get("filter-0"), bridge.state.registry.get("filter-1")
        other_room = other.room.room
        own_handle = other_room._ffi_handle.handle
        queue = other_room._ffi_queue
        put_nowait = queue.put_nowait
        own, foreign = [0], [0]

        def counting_put(event):  # type: ignore[no-untyped-def]
            if event.WhichOneof("message") == "room_event":
                (own if event.room_event.room_handle == own_handle else foreign)[0] += 1
            return put_nowait(event)

        queue.put_nowait = counting_put  # the SDK looks it up for every event it delivers
        try:
            await aio_as_trio(participants.wait_for_participant)(phone, "bridge-filter-0")
            packets = [bytes([i]) + packet_payload(i) for i in range(20)]
            await aio_as_trio(participants.send_packets)(phone, packets, 0.01, True)
            # Room 0's session has handled every packet: whatever the SDK delivered to room 1 for
            # them was put on its queue before (one put, scheduled in order, per subscriber).
            await wait_until(lambda: sender.mic.data_packets == len(packets), what="room 0's packets")
            await trio.lowlevel.checkpoint()
        finally:
            del queue.put_nowait
        print(f"room 1's queue got {foreign[0]} events of other rooms and {own[0]} of its own")
        assert foreign[0] == 0, f"room 1 was woken by {foreign[0]} events of other rooms"
        assert other.mic.data_packets == 0
        for i in range(2):
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=f"filter-{i}"))
        await aio_as_trio(participants.disconnect)(phone)


async def test_room_audio_is_buffered_while_no_stream_is_attached_and_delivered_to_the_next(bridge) -> None:  # type: ignore[no-untyped-def]
    """Packets that arrive while the session has no StreamAudio call (before the first one, and
    between a call the cloud dropped and the next) are queued and delivered, byte-exact, to the next."""
    with trio.fail_after(45):
        user, room = "buffer-user", new_room()
        phone = await aio_as_trio(participants.connect)(bridge.livekit.url, bridge.token(user, room))
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        session: BridgeSession = bridge.state.registry.get(user)
        await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")

        for round_, first in enumerate((0, 10)):
            packets = [bytes([i]) + packet_payload(i) for i in range(first, first + 10)]
            assert not session.stream.attached
            await aio_as_trio(participants.send_packets)(phone, packets, 0.01, True)
            await wait_until(lambda: session.mic.data_packets == first + 10, what="packets at the bridge")  # noqa: B023
            assert session.mic.queue.depth == 10, session.mic.queue.depth  # held for the next stream
            cloud = CloudStream(bridge.channel, user)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio_as_trio(cloud.run))
                expected = b"".join(p[1:] for p in packets)
                await wait_until(lambda: len(cloud.pcm) >= len(expected), what=f"round {round_}'s audio")  # noqa: B023
                assert cloud.pcm == expected
                nursery.cancel_scope.cancel()  # the cloud drops the call: the session stays
            await wait_until(lambda: not session.stream.attached, what="stream detached")
        assert session.mic.queue.dropped_chunks == 0
        assert (await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))).success
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(phone)
