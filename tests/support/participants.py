"""Real LiveKit participants for the tests: the phone and a listener (asyncio side, SDK objects).

Every coroutine here runs on the asyncio side; tests call them through ``aio_as_trio``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from livekit import rtc


async def connect(url: str, token: str) -> rtc.Room:
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token), 10)
    return room


async def disconnect(room: rtc.Room) -> None:
    await room.disconnect()


async def wait_for_participant(room: rtc.Room, identity: str, timeout: float = 10) -> None:
    async def poll() -> None:
        while not any(p.identity == identity for p in room.remote_participants.values()):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def send_packets(
    room: rtc.Room,
    packets: list[bytes],
    interval_s: float,
    reliable: bool = False,
    sent_at: list[float] | None = None,
) -> None:
    """Publish each packet ``interval_s`` apart, lossy like the phone's microphone unless ``reliable``.

    ``sent_at`` (if given) receives the ``time.monotonic()`` at which each packet was handed to the SDK.
    """
    for packet in packets:
        if sent_at is not None:
            sent_at.append(time.monotonic())
        await room.local_participant.publish_data(packet, reliable=reliable)
        await asyncio.sleep(interval_s)


async def publish_tone(
    room: rtc.Room, samples: npt.NDArray[np.int16], rate: int, *, name: str = "mic"
) -> None:
    """Publish ``samples`` on a new audio track in real time, then unpublish it."""
    source = rtc.AudioSource(rate, 1, queue_size_ms=200)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    publication = await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    try:
        frame_samples = rate // 100
        for start in range(0, len(samples) - frame_samples + 1, frame_samples):
            chunk = samples[start : start + frame_samples]
            await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, frame_samples))
        await source.wait_for_playout()
    finally:
        await room.local_participant.unpublish_track(publication.sid)
        await source.aclose()


@dataclass(eq=False)
class Listener:
    """Records every audio track the given participant publishes, by track name, at ``rate``."""

    room: rtc.Room
    from_identity: str
    rate: int = 48000
    recordings: dict[str, list[npt.NDArray[np.int16]]] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    """``time.monotonic()`` at which each recorded frame arrived."""
    first_frame_at: dict[str, float] = field(default_factory=dict)

    def loud_times(self, name: str, threshold: int = 1000) -> list[float]:
        """Arrival times of the frames of ``name`` whose peak is above ``threshold``."""
        frames, times = self.recordings.get(name, []), self.arrivals.get(name, [])
        return [t for frame, t in zip(frames, times, strict=True) if np.abs(frame).max(initial=0) > threshold]

    def heard_after(self, name: str, at: float) -> bool:
        """Whether a frame of ``name`` (loud or not) arrived after ``at``: the listener was still
        listening then. A remote track keeps delivering frames (silence included) while subscribed."""
        times = self.arrivals.get(name, [])
        return bool(times) and times[-1] > at

    def loud_between(self, name: str, start: float, end: float, threshold: int = 1000) -> list[float]:
        """Arrival times of loud frames of ``name`` within [start, end]."""
        return [t for t in self.loud_times(name, threshold) if start <= t <= end]

    def samples_between(self, name: str, start: float, end: float) -> npt.NDArray[np.int16]:
        """The frames of ``name`` that arrived within [start, end], joined."""
        frames, times = self.recordings.get(name, []), self.arrivals.get(name, [])
        chosen = [frame for frame, t in zip(frames, times, strict=True) if start <= t <= end]
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int16)

    def samples(self, name: str) -> npt.NDArray[np.int16]:
        frames = self.recordings.get(name, [])
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    async def run(self) -> None:
        """Record until cancelled (asyncio side)."""
        readers: dict[str, asyncio.Task[None]] = {}

        def subscribed(
            track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
        ) -> None:
            if participant.identity == self.from_identity and track.kind == rtc.TrackKind.KIND_AUDIO:
                readers[publication.sid] = asyncio.get_running_loop().create_task(
                    self._record(publication.name, track)
                )

        self.room.on("track_subscribed", subscribed)
        try:
            for participant in self.room.remote_participants.values():
                if participant.identity != self.from_identity:
                    continue
                for publication in participant.track_publications.values():
                    if publication.track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                        subscribed(publication.track, publication, participant)  # type: ignore[arg-type]
            await asyncio.Event().wait()
        finally:
            self.room.off("track_subscribed", subscribed)
            for task in readers.values():
                task.cancel()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def _record(self, name: str, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=self.rate, num_channels=1)
        try:
            async for event in stream:
                now = time.monotonic()
                data = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                self.recordings.setdefault(name, []).append(data)
                self.arrivals.setdefault(name, []).append(now)
                if name not in self.first_frame_at and np.abs(data).max(initial=0) > 1000:
                    self.first_frame_at[name] = now
        finally:
            await stream.aclose()


async def remove_participant(http_url: str, api_key: str, api_secret: str, room: str, identity: str) -> None:
    """Kick ``identity`` out of ``room`` through the server API (what an operator or the cloud does)."""
    from livekit import api

    lkapi = api.LiveKitAPI(url=http_url, api_key=api_key, api_secret=api_secret)
    try:
        await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))
    finally:
        await lkapi.aclose()


async def list_identities(http_url: str, api_key: str, api_secret: str, room: str) -> list[str]:
    """Identities the server sees in ``room`` (through its API, not a participant's view)."""
    from livekit import api

    lkapi = api.LiveKitAPI(url=http_url, api_key=api_key, api_secret=api_secret)
    try:
        reply = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        return [p.identity for p in reply.participants]
    finally:
        await lkapi.aclose()


async def bridge_identities(http_url: str, api_key: str, api_secret: str, room: str) -> list[str]:
    """Participants of ours (``bridge-*``) the server still has in ``room``: [] after every teardown."""
    return [i for i in await list_identities(http_url, api_key, api_secret, room) if i.startswith("bridge-")]
