"""PlayAudio / StopAudio against a real LiveKit server, with audio served from loopback.

A listener participant records what the bridge publishes; events are checked against what it hears
and against wall-clock time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import trio
from trio_asyncio import aio_as_trio

from audio_checks import dominant_frequency, loud_segment, rms
from bridge._gen.mentra.livekit.bridge import LeaveRoomRequest, PlayAudioRequest, StopAudioRequest
from bridge.testing.synth import encode_mp3, encode_wav, tone
from conftest import RunningBridge, running_bridge
from support import participants
from support.flows import join, new_room, wait_until
from support.leaks import TaskCensus, assert_back_to
from support.media_server import MediaServer
from support.playback import EventType, PlaybackCall

pytestmark = pytest.mark.livekit

RATE = 48000


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    server = MediaServer()
    yield server
    server.close()


@dataclass(eq=False)
class Stage:
    bridge: RunningBridge
    media: MediaServer
    user: str
    listener: participants.Listener
    baseline: TaskCensus
    """Before the session and the listener existed."""
    nursery: trio.Nursery
    listener_scope: trio.CancelScope

    def play(self, path: str, *, track_id: int = 0, request_id: str = "", **fields: object) -> PlaybackCall:
        request = PlayAudioRequest(
            user_id=self.user,
            request_id=request_id or path.strip("/"),
            audio_url=path if path.startswith("http") else self.media.base_url + path,
            track_id=track_id,
            **fields,  # type: ignore[arg-type]
        )
        call = PlaybackCall(self.bridge.stub, request)
        self.nursery.start_soon(aio_as_trio(call.run))
        return call

    async def stop(self, **fields: object):  # type: ignore[no-untyped-def]
        return await aio_as_trio(self.bridge.stub.stop_audio)(StopAudioRequest(user_id=self.user, **fields))  # type: ignore[arg-type]


@pytest.fixture
async def stage(aio_loop, livekit_server, media: MediaServer) -> AsyncIterator[Stage]:  # type: ignore[no-untyped-def]
    overrides = {
        "fetch_allow_hosts": "127.0.0.1",
        "fetch_read_timeout_s": 1.0,
        "fetch_max_bytes": 600_000,
        "playback_progress_ms": 200,
    }
    async with running_bridge(livekit_server, **overrides) as bridge:
        user, room = "playback-user", new_room()
        listener_room = await aio_as_trio(participants.connect)(
            livekit_server.url, livekit_server.token("listener", room)
        )
        baseline = await bridge.census()
        assert (await join(bridge, user, room)).success
        listener = participants.Listener(listener_room, f"bridge-{user}", rate=RATE)
        listener_scope = trio.CancelScope()

        async def listen() -> None:
            with listener_scope:
                await aio_as_trio(listener.run)()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            yield Stage(bridge, media, user, listener, baseline, nursery, listener_scope)
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
            nursery.cancel_scope.cancel()
        await aio_as_trio(participants.disconnect)(listener_room)


def wav(freq: float, seconds: float, rate: int = 16000, **kw: object) -> bytes:
    return encode_wav(tone(freq, seconds, rate), rate, **kw)  # type: ignore[arg-type]


async def test_a_wav_plays_in_real_time_and_completed_comes_after_it_has_played(stage: Stage) -> None:
    with trio.fail_after(30):
        stage.media.add("/a440.wav", wav(440, 2.0, 22050, sample_format="pcm16"))
        call = stage.play("/a440.wav", request_id="wav-1")
        await call.done.wait()
        assert call.types[0] is EventType.STARTED and call.types[-1] is EventType.COMPLETED, call.events
        assert EventType.PROGRESS in call.types
        positions = [e.position_ms for _, e in call.events if e.type is EventType.PROGRESS]
        assert positions == sorted(positions) and positions[-1] <= 2000
        # A WAV states its length: every event carries it (never "decoded so far").
        assert {e.duration_ms for _, e in call.events} == {2000}
        started, completed = call.times(EventType.STARTED)[0], call.times(EventType.COMPLETED)[0]
        assert completed - started >= 2.0 - 0.05, completed - started  # not before the audio has played
        assert completed - started < 2.0 + 0.6
        assert abs(call.terminal.duration_ms - 2000) <= 20
        await trio.sleep(0.3)
        heard = loud_segment(stage.listener.samples("speaker"))
        assert abs(dominant_frequency(heard, RATE) - 440) < 3
        assert 1.7 <= len(heard) / RATE <= 2.1  # the first frames may go while the listener subscribes
        stats = stage.bridge.state.registry.playback.stats
        assert stats.started == 1 and stats.completed == 1 and len(stats.first_frame_latencies_ms) == 1


async def test_an_mp3_starts_playing_before_its_download_has_finished(stage: Stage) -> None:
    with trio.fail_after(30):
        data = encode_mp3(tone(880, 3.0, 44100), 44100, bitrate=64000)  # 24 KB; served over ~1.5 s
        stage.media.add("/slow880.mp3", data, mode="trickle", trickle_bytes_per_s=16_000)
        call = stage.play("/slow880.mp3")
        await call.started.wait()
        resource = stage.media.resources["/slow880.mp3"]
        first_frame = call.times(EventType.STARTED)[0]
        await call.done.wait()
        assert call.terminal.type is EventType.COMPLETED, call.terminal
        assert resource.sent_all_at is not None and first_frame < resource.sent_all_at - 0.5
        heard = loud_segment(stage.listener.samples("speaker"))
        assert abs(dominant_frequency(heard, RATE) - 880) < 3
        # Gapless: the LAME tag's encoder delay and padding are trimmed, and its Info header states
        # the length, so every event from STARTED on carries it.
        assert abs(call.terminal.duration_ms - 3000) <= 1
        assert {e.duration_ms for _, e in call.events} == {3000}


async def test_volume_half_halves_the_level_and_explicit_zero_is_silent(stage: Stage) -> None:
    with trio.fail_after(40):
        stage.media.add("/v.wav", wav(440, 1.2))
        levels: dict[float, float] = {}
        for volume in (1.0, 0.5, 0.0):
            name = f"track_{3 + len(levels)}"  # a fresh track each, so recordings do not mix
            call = stage.play("/v.wav", request_id=f"vol-{volume}", track_id=3 + len(levels), volume=volume)
            await call.done.wait()
            assert call.terminal.type is EventType.COMPLETED
            await trio.sleep(0.3)
            samples = stage.listener.samples(name)
            middle = samples[len(samples) // 4 : 3 * len(samples) // 4] if volume else samples
            levels[volume] = rms(middle) if len(middle) else 0.0
        assert 0.45 <= levels[0.5] / levels[1.0] <= 0.55, levels
        assert levels[0.0] < 0.002 * levels[1.0], levels


async def test_stop_silences_the_track_promptly_and_reports_the_stopped_request(stage: Stage) -> None:
    with trio.fail_after(30):
        stage.media.add("/long.wav", wav(440, 5.0))
        call = stage.play("/long.wav", request_id="long-1")
        await call.started.wait()
        await trio.sleep(1.0)
        stop_sent = time.monotonic()
        reply = await stage.stop(request_id="long-1", reason="user barged in")
        assert reply.success and reply.stopped_request_id == "long-1"
        await call.done.wait()
        assert call.terminal.type is EventType.FAILED and call.code == "stopped"
        assert "user barged in" in call.terminal.error
        assert 800 <= call.terminal.position_ms <= 1300
        await trio.sleep(0.5)
        last_loud = max(stage.listener.loud_times("speaker"))
        print(f"last loud frame {1000 * (last_loud - stop_sent):.0f} ms after StopAudio was sent")
        assert last_loud - stop_sent < 0.100 + 0.060  # 100 ms at the bridge, + the WebRTC path on loopback
        assert stage.bridge.state.registry.playback.stats.cancelled == 1


async def test_two_tracks_play_at_once(stage: Stage) -> None:
    with trio.fail_after(30):
        stage.media.add("/t440.wav", wav(440, 1.5))
        stage.media.add("/t880.mp3", encode_mp3(tone(880, 1.5, 48000), 48000))
        low, high = stage.play("/t440.wav", track_id=0), stage.play("/t880.mp3", track_id=2)
        await low.done.wait()
        await high.done.wait()
        assert low.terminal.type is EventType.COMPLETED and high.terminal.type is EventType.COMPLETED
        overlap = min(low.times(EventType.COMPLETED)[0], high.times(EventType.COMPLETED)[0]) - max(
            low.times(EventType.STARTED)[0], high.times(EventType.STARTED)[0]
        )
        assert overlap > 1.2  # they really played at the same time
        await trio.sleep(0.3)
        for name, freq in (("speaker", 440), ("tts", 880)):
            assert abs(dominant_frequency(loud_segment(stage.listener.samples(name)), RATE) - freq) < 3, name


async def test_a_new_playback_interrupts_the_old_one_on_its_track_and_stop_other_stops_the_rest(
    stage: Stage,
) -> None:
    with trio.fail_after(30):
        stage.media.add("/i.wav", wav(440, 4.0))
        first = stage.play("/i.wav", request_id="first", track_id=0)
        other = stage.play("/i.wav", request_id="other-track", track_id=2)
        await first.started.wait()
        await other.started.wait()
        second = stage.play("/i.wav", request_id="second", track_id=0)
        await first.done.wait()
        assert first.code == "interrupted" and "second" in first.terminal.error
        await second.started.wait()
        assert other.done.is_set() is False  # another track is left alone
        third = stage.play("/i.wav", request_id="third", track_id=1, stop_other=True)
        await second.done.wait()
        await other.done.wait()
        assert second.code == "interrupted" and other.code == "interrupted"
        reply = await stage.stop()  # everything
        assert reply.success and reply.stopped_request_id == "third"
        await third.done.wait()
        assert third.code == "stopped"
        assert not stage.bridge.state.registry.get(stage.user).playbacks.playing


@pytest.mark.parametrize(
    ("name", "setup", "code"),
    [
        ("404", lambda m: m.base_url + "/missing.mp3", "http_status"),
        ("garbage", lambda m: m.add("/garbage.mp3", bytes(range(256)) * 40), "unsupported_format"),
        ("truncated", lambda m: m.add("/cut.wav", wav(440, 2.0), mode="truncate"), "fetch_failed"),
        (
            "stalls",
            lambda m: m.add("/stall.mp3", encode_mp3(tone(440, 2, 44100), 44100), mode="stall"),
            "timeout",
        ),
        ("over size", lambda m: m.add("/big.wav", wav(440, 20.0)), "too_large"),
        ("metadata host", lambda m: "http://169.254.169.254/latest/meta-data/x.mp3", "host_not_allowed"),
        ("private host", lambda m: "http://10.255.255.1/x.mp3", "host_not_allowed"),
        (
            "redirect to metadata",
            lambda m: m.redirect("/r.mp3", "http://169.254.169.254/x.mp3"),
            "host_not_allowed",
        ),
    ],
)
async def test_failures_end_in_failed_with_their_code_and_leave_no_task(
    stage: Stage, name: str, setup, code: str
) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        # A short playback first, so the track and the listener's reader for it already exist.
        warm = stage.play(stage.media.add("/warm.wav", wav(440, 0.2)), request_id=f"warm-{name}")
        await warm.done.wait()
        baseline = await stage.bridge.census()
        url = setup(stage.media)
        call = stage.play(url, request_id=f"bad-{name}")
        await call.done.wait()
        assert call.terminal.type is EventType.FAILED, call.events
        assert call.code == code and call.terminal.error.startswith(code + ": "), call.terminal.error
        assert sum(1 for _, e in call.events if e.type in (EventType.COMPLETED, EventType.FAILED)) == 1
        session = stage.bridge.state.registry.get(stage.user)
        await wait_until(lambda: not session.playbacks.playing, what="playback gone")
        assert stage.bridge.state.registry.playback.stats.failed == 1
        await assert_back_to(baseline)  # no task of the failed playback remains


async def test_audio_longer_than_the_maximum_plays_up_to_it_then_fails_too_long(
    aio_loop, livekit_server, media
) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with running_bridge(
            livekit_server, fetch_allow_hosts="127.0.0.1", speaker_max_duration_ms=800
        ) as bridge:
            user, room = "max-user", new_room()
            assert (await join(bridge, user, room)).success
            url = media.add("/too-long.wav", wav(440, 3.0))
            call = PlaybackCall(bridge.stub, PlayAudioRequest(user_id=user, request_id="long", audio_url=url))
            await aio_as_trio(call.run)()
            assert call.types[0] is EventType.STARTED and call.code == "too_long"
            started, ended = call.times(EventType.STARTED)[0], call.events[-1][0]
            assert 0.75 <= ended - started <= 1.3


async def test_leaving_the_session_ends_its_playbacks_and_every_task(stage: Stage) -> None:
    with trio.fail_after(30):
        stage.media.add("/leave.wav", wav(440, 5.0))
        calls = [stage.play("/leave.wav", request_id=f"leave-{i}", track_id=i) for i in (0, 2)]
        for call in calls:
            await call.started.wait()
        stage.listener_scope.cancel()  # the listener is the test's, not the bridge's: stop it first
        assert (await aio_as_trio(stage.bridge.stub.leave_room)(LeaveRoomRequest(user_id=stage.user))).success
        for call in calls:
            await call.done.wait()
            assert call.code == "session_closed"
        await assert_back_to(stage.baseline)


async def test_stop_requests_that_match_nothing_say_so(stage: Stage) -> None:
    reply = await stage.stop(request_id="never-played")
    assert not reply.success and "nothing playing" in reply.error
    reply = await stage.stop(track_id=5)
    assert not reply.success and "track 5" in reply.error
    reply = await stage.stop()
    assert reply.success and reply.stopped_request_id == ""
