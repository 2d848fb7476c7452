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
            await trio.sleep(0.7)  # let the tails play out
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
