"""Cloud -> room through a real LiveKit server: PCM streamed by the cloud reaches a listener."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import trio
from trio_asyncio import aio_as_trio

from audio_checks import dominant_frequency, loud_segment, rms, sine
from bridge._gen.mentra.livekit.bridge import AudioChunk, LeaveRoomRequest
from bridge.testing.cloud import CloudStream
from support import participants
from support.flows import join, new_room, wait_until
from support.leaks import assert_back_to

pytestmark = pytest.mark.livekit

CHUNK_MS = 100


def chunks_of(samples: np.ndarray, rate: int, chunk_ms: int = CHUNK_MS) -> list[bytes]:
    step = rate * chunk_ms // 1000
    return [samples[i : i + step].tobytes() for i in range(0, len(samples), step)]


async def test_tones_streamed_on_tracks_0_and_2_reach_a_listener_on_two_tracks(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(45):
        user, room = "cloud-user-1", new_room()
        listener_room = await aio_as_trio(participants.connect)(
            bridge.livekit.url, bridge.token("listener", room)
        )
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        listener = participants.Listener(listener_room, f"bridge-{user}")
        cloud = CloudStream(bridge.channel, user)
        seconds = 2.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(listener.run))
            nursery.start_soon(aio_as_trio(cloud.run))
            await cloud.opened.wait()
            low = chunks_of(sine(440, seconds, 16000), 16000)
            high = chunks_of(sine(880, seconds, 16000), 16000)
            for a, b in zip(low, high, strict=True):
                await aio_as_trio(cloud.send)(
                    AudioChunk(pcm_data=a, sample_rate=16000, channels=1, track_id=0)
                )
                await aio_as_trio(cloud.send)(
                    AudioChunk(pcm_data=b, sample_rate=16000, channels=1, track_id=2)
                )
            await wait_until(
                lambda: (
                    len(listener.samples("speaker")) > 48000 * 1.5
                    and len(listener.samples("tts")) > 48000 * 1.5
                ),
                what="both tracks at the listener",
            )
            # The tails played out: the bridge has read every chunk and both tracks' queues are
            # empty; then the listener has received frames past that moment.
            session = bridge.state.registry.get(user)
            await wait_until(
                lambda: (
                    session.stream.counters.chunks_from_cloud == len(low) + len(high)
                    and all(p.queued_seconds == 0 for p in session.tracks.published.values())
                ),
                what="both tracks played out at the bridge",
            )
            played_out = time.monotonic()
            await wait_until(
                lambda: all(listener.heard_after(n, played_out + 0.2) for n in ("speaker", "tts")),
                what="the tails at the listener",
            )
            for name, freq in (("speaker", 440), ("tts", 880)):
                samples = listener.samples(name)
                audible = loud_segment(samples)
                assert abs(dominant_frequency(audible, 48000) - freq) < 5, name
                assert rms(audible) > 0.6 * rms(sine(freq, 1, 48000))
                # About the right duration: count samples of audible 10 ms frames.
                frames = samples[: len(samples) // 480 * 480].reshape(-1, 480)
                loud_ms = 10 * int((np.abs(frames).max(axis=1) > 3000).sum())
                # A new track skips as much audio as its publication took (no standing delay), and
                # the listener subscribes meanwhile: the start may be missing, nothing else.
                assert 1000 * seconds - 350 <= loud_ms <= 1000 * seconds + 150, (name, loud_ms)
            tracks = bridge.state.registry.get(user).tracks.published
            assert sorted(p.name for p in tracks.values()) == ["speaker", "tts"]
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            await cloud.ended.wait()
            nursery.cancel_scope.cancel()
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(listener_room)


async def test_real_time_cloud_audio_on_a_new_track_carries_no_standing_delay(bridge) -> None:  # type: ignore[no-untyped-def]
    """Chunks that arrive while a new track is being published are dropped, not queued: a real-time
    source never lets a backlog drain, so queuing them would delay that track for good."""
    with trio.fail_after(45):
        user, room = "onset-user", new_room()
        listener_room = await aio_as_trio(participants.connect)(
            bridge.livekit.url, bridge.token("listener", room)
        )
        assert (await join(bridge, user, room)).success
        listener = participants.Listener(listener_room, f"bridge-{user}")
        cloud = CloudStream(bridge.channel, user)
        silence = np.zeros(1600, dtype=np.int16).tobytes()
        burst = sine(440, 0.1, 16000).tobytes()
        delays = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_as_trio(listener.run))
            nursery.start_soon(aio_as_trio(cloud.run))
            await cloud.opened.wait()
            next_send = trio.current_time()
            for i in range(40):  # 4 s at real time: a tone burst every second, silence between
                chunk = burst if i % 10 == 9 else silence
                await aio_as_trio(cloud.send)(
                    AudioChunk(pcm_data=chunk, sample_rate=16000, channels=1, track_id=5)
                )
                if chunk is burst and i > 10:  # the first second is the track's publication
                    sent_at = time.monotonic()
                    await wait_until(
                        functools.partial(
                            lambda t: any(x > t for x in listener.loud_times("track_5")), sent_at
                        ),
                        timeout_s=3,
                        what="burst",
                    )
                    delays.append(
                        1000 * (min(x for x in listener.loud_times("track_5") if x > sent_at) - sent_at)
                    )
                next_send += 0.1
                await trio.sleep_until(next_send)
            print(f"cloud -> listener onset delays on a new track: {[round(d) for d in delays]} ms")
            assert max(delays) < 250, delays
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            await cloud.ended.wait()
            nursery.cancel_scope.cancel()
        await aio_as_trio(participants.disconnect)(listener_room)


async def test_prepublished_tracks_exist_before_any_audio(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    from conftest import running_bridge

    with trio.fail_after(30):
        async with running_bridge(livekit_server, prepublish_tracks="0,2") as bridge:
            user, room = "prepublish-user", new_room()
            listener_room = await aio_as_trio(participants.connect)(
                livekit_server.url, bridge.token("l", room)
            )
            assert (await join(bridge, user, room)).success
            session = bridge.state.registry.get(user)
            assert sorted(p.name for p in session.tracks.published.values()) == ["speaker", "tts"]
            await wait_until(
                lambda: (
                    {
                        p.name
                        for p in listener_room.remote_participants[
                            f"bridge-{user}"
                        ].track_publications.values()
                    }
                    == {"speaker", "tts"}
                    if f"bridge-{user}" in listener_room.remote_participants
                    else False
                ),
                what="both tracks visible to another participant",
            )
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            await aio_as_trio(participants.disconnect)(listener_room)


async def _send_until_slowed(bridge, user: str) -> tuple[int, list[float]]:  # type: ignore[no-untyped-def]
    """Send 1 s messages as fast as the call takes them, until six sends in a row waited for real
    time; return how many were taken before that, and every send's duration."""
    assert (await join(bridge, user, new_room())).success
    cloud = CloudStream(bridge.channel, user)
    second = sine(440, 1.0, 16000, amplitude=0.1).tobytes()  # 32 000 B = 1 s of audio per message
    chunk = AudioChunk(pcm_data=second, sample_rate=16000, channels=1, track_id=0)
    durations: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(aio_as_trio(cloud.run))
        await cloud.opened.wait()
        slowed = 0
        while slowed < 6:
            sent_at = time.monotonic()
            await aio_as_trio(cloud.send)(chunk)
            durations.append(time.monotonic() - sent_at)
            slowed = slowed + 1 if durations[-1] > 0.5 else 0
            assert len(durations) < 400, "the cloud was never slowed down"
        fast = len(durations) - slowed
        print(
            f"{fast} s of audio ({fast * len(second)} B) accepted in {sum(durations[:fast]):.2f} s, "
            f"then sends of 1 s each took {[round(d, 2) for d in durations[fast:]]} s"
        )
        await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
        await cloud.ended.wait()
        nursery.cancel_scope.cancel()
    return fast, durations


async def test_a_cloud_sending_faster_than_real_time_is_slowed_to_real_time(bridge) -> None:  # type: ignore[no-untyped-def]
    """Backpressure reaches the cloud: the track's AudioSource paces the stream's receive loop to
    real time, the receive loop stops reading, HTTP/2 flow control stops acknowledging, and the
    cloud's sends block: once the buffers on the way are full, each send takes real time."""
    with trio.fail_after(60):
        fast, durations = await _send_until_slowed(bridge, "fast-cloud-user")
        # Fast while the buffers filled: nothing paces a cloud before they are full ...
        assert fast >= 1 and sum(durations[:fast]) < 0.25 * fast, durations[:fast]
        # ... and real time after: 5 s of audio took about 5 s to send.
        last = durations[-5:]
        assert 5 * 0.8 <= sum(last) <= 5 * 1.3, last


async def test_a_cloud_cannot_run_more_than_a_few_seconds_ahead_of_real_time(bridge) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(60):
        fast, _ = await _send_until_slowed(bridge, "ahead-cloud-user")
        assert fast <= 5, f"the cloud ran {fast} s of audio ahead of real time before it was slowed"


async def test_one_users_backlog_does_not_stall_another_users_sends_on_the_same_connection(bridge) -> None:  # type: ignore[no-untyped-def]
    """HTTP/2's connection window is shared by every stream of the cloud's one connection, and the
    bridge acknowledges data as its handlers read it: a user whose cloud runs ahead of real time (its
    stream backed up) must not hold up another user's real-time sends on the same connection."""
    with trio.fail_after(60):
        assert (await join(bridge, "backlog-user", new_room())).success
        assert (await join(bridge, "bystander-user", new_room())).success
        backlog = CloudStream(bridge.channel, "backlog-user")
        bystander = CloudStream(bridge.channel, "bystander-user")
        second = sine(440, 1.0, 16000, amplitude=0.1).tobytes()
        chunk = AudioChunk(pcm_data=second, sample_rate=16000, channels=1, track_id=0)
        backed_up = trio.Event()

        async def run_ahead() -> None:  # sends as fast as it may, for good
            while True:
                sent_at = time.monotonic()
                await aio_as_trio(backlog.send)(chunk)
                if time.monotonic() - sent_at > 0.5:
                    backed_up.set()

        async with trio.open_nursery() as nursery:
            for stream in (backlog, bystander):
                nursery.start_soon(aio_as_trio(stream.run))
                await stream.opened.wait()
            ahead = trio.CancelScope()

            async def running_ahead() -> None:
                with ahead:
                    await run_ahead()

            nursery.start_soon(running_ahead)
            await backed_up.wait()
            durations = []
            next_send = trio.current_time()
            for _ in range(30):  # the bystander: 3 s of audio at real time, 100 ms per message
                small = AudioChunk(pcm_data=second[:3200], sample_rate=16000, channels=1, track_id=0)
                sent_at = time.monotonic()
                await aio_as_trio(bystander.send)(small)
                durations.append(time.monotonic() - sent_at)
                next_send += 0.1
                await trio.sleep_until(next_send)  # real-time pacing of the bystander's sends
            ahead.cancel()
            print(f"bystander's sends while another stream was backed up: max {max(durations):.3f} s")
            for user in ("backlog-user", "bystander-user"):
                await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            nursery.cancel_scope.cancel()
        assert max(durations) < 0.1, durations
