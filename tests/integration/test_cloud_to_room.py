"""Cloud -> room through a real LiveKit server: PCM streamed by the cloud reaches a listener."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from trio_asyncio import aio_as_trio

from audio_checks import dominant_frequency, loud_segment, rms, sine
from bridge._gen.mentra.livekit.bridge import AudioChunk, LeaveRoomRequest
from support import participants
from support.cloud import CloudStream
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
                assert 1000 * seconds - 250 <= loud_ms <= 1000 * seconds + 150, (name, loud_ms)
            tracks = bridge.state.registry.get(user).published_tracks
            assert sorted(p.name for p in tracks.values()) == ["speaker", "tts"]
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            await cloud.ended.wait()
            nursery.cancel_scope.cancel()
        await assert_back_to(baseline)
        await aio_as_trio(participants.disconnect)(listener_room)
