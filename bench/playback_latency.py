"""PlayAudio benchmark: first-frame latency and CPU per minute of playback.

Runs a real LiveKit server (loopback), the bridge in this process, and a loopback HTTP server with a
generated MP3 (128 kbit/s, 44.1 kHz stereo) and WAV (16-bit, 48 kHz mono) of ``--seconds`` each.

- First-frame latency: PlayAudio sent -> STARTED received by the client (request, fetch, sniff,
  decode, resample, first frame handed to the track), over ``--runs`` playbacks per format, each
  stopped right after STARTED; served at full loopback speed and throttled to 2x real time (a TTS
  server producing audio as it goes), where a whole-file decoder (pydub) would first wait for the
  whole download.
- CPU: process CPU seconds (all threads: ours and the SDK's native ones) while one whole file plays,
  minus the same process's idle CPU over as long, scaled to one minute of audio.

    python -m bench.playback_latency [--seconds 60] [--runs 20]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_asyncio
from grpclib.client import Channel
from trio_asyncio import aio_as_trio

from bench.lib import MediaFiles
from bridge import BridgeConfig, serve
from bridge._gen.mentra.livekit.bridge import (
    JoinRoomRequest,
    LiveKitBridgeStub,
    PlayAudioEvent,
    PlayAudioEventEventType,
    PlayAudioRequest,
    StopAudioRequest,
)
from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary
from bridge.testing.synth import encode_mp3, encode_wav, tone

EventType = PlayAudioEventEventType


@dataclass(eq=False)
class PlaybackCall:
    """One PlayAudio call: its events with their arrival times (``run`` is asyncio code)."""

    stub: Any
    request: PlayAudioRequest
    sent_at: float = 0.0
    events: list[tuple[float, PlayAudioEvent]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    started: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        try:
            async for event in self.stub.play_audio(self.request):
                self.events.append((time.monotonic(), event))
                if event.type is EventType.STARTED:
                    self.started.set()
        finally:
            self.started.set()
            self.done.set()

    def times(self, kind: PlayAudioEventEventType) -> list[float]:
        return [t for t, event in self.events if event.type is kind]

    @property
    def terminal(self) -> PlayAudioEvent:
        return self.events[-1][1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return (
        f"p50 {q[49]:6.1f}  p90 {q[89]:6.1f}  p99 {q[98]:6.1f}  max {ordered[-1]:6.1f} ms  (n={len(ordered)})"
    )


async def _channel(port: int) -> Channel:
    return Channel("127.0.0.1", port)


async def run(seconds: float, runs: int) -> None:
    ensure_server_binary(log=lambda message: print(message, file=sys.stderr))
    media = MediaFiles()
    mp3 = encode_mp3(tone(440, seconds, 44100, amplitude=0.4, channels=2), 44100, bitrate=128000)
    wav = encode_wav(tone(440, seconds, 48000, amplitude=0.4), 48000)
    files = {"mp3": mp3, "wav": wav}
    for name, data in files.items():
        media.add(f"/full.{name}", data)
        # 2x real time: the bytes of `seconds` of audio arrive over `seconds / 2`.
        media.add(f"/throttled.{name}", data, bytes_per_s=int(2 * len(data) / seconds))
    print(f"files: mp3 {len(mp3) / 1e6:.2f} MB, wav {len(wav) / 1e6:.2f} MB, {seconds:g} s each")

    with LocalLiveKitServer() as lk:
        config = BridgeConfig(
            port=0, livekit_url=lk.url, fetch_allow_hosts="127.0.0.1", fetch_max_bytes=64 << 20
        )
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            state = await nursery.start(serve, config)
            channel = await aio_as_trio(_channel)(int(state.address.rsplit(":", 1)[1]))
            stub = LiveKitBridgeStub(channel)
            joined = await aio_as_trio(stub.join_room)(
                JoinRoomRequest(user_id="bench", room_name="bench", token=lk.token("bridge-bench", "bench"))
            )
            assert joined.success, joined.error

            async def play(path: str, request_id: str, stop_after_start: bool) -> PlaybackCall:
                call = PlaybackCall(
                    stub,
                    PlayAudioRequest(user_id="bench", request_id=request_id, audio_url=media.base_url + path),
                )
                async with trio.open_nursery() as calls:
                    sent = time.monotonic()
                    calls.start_soon(aio_as_trio(call.run))
                    await call.started.wait()
                    call.sent_at = sent
                    if stop_after_start:
                        await aio_as_trio(stub.stop_audio)(
                            StopAudioRequest(user_id="bench", request_id=request_id)
                        )
                return call

            await play("/full.wav", "warm-up", True)  # publishes the track once
            print("\nfirst-frame latency (PlayAudio sent -> STARTED at the client)")
            for served in ("full", "throttled"):
                for name in files:
                    latencies = []
                    for i in range(runs):
                        call = await play(f"/{served}.{name}", f"{served}-{name}-{i}", True)
                        started = call.times(EventType.STARTED)
                        if started:
                            latencies.append(1000 * (started[0] - call.sent_at))
                    label = "loopback, full speed" if served == "full" else "served at 2x real time"
                    print(f"  {name} {label:24s} {percentiles(latencies)}")
                    if served == "throttled":
                        whole = 1000 * seconds / 2
                        print(f"      a whole-file decoder would start after the download: >= {whole:.0f} ms")

            print("\nCPU while one whole file plays (process, all threads; idle baseline subtracted)")
            idle_start = cpu_seconds()
            await trio.sleep(min(seconds, 10))
            idle_per_s = (cpu_seconds() - idle_start) / min(seconds, 10)
            for name in files:
                before, wall = cpu_seconds(), time.monotonic()
                call = await play(f"/full.{name}", f"cpu-{name}", False)
                await call.done.wait()
                used, elapsed = cpu_seconds() - before, time.monotonic() - wall
                assert call.terminal.type is EventType.COMPLETED, call.terminal
                per_minute = (used - idle_per_s * elapsed) * 60 / seconds
                print(
                    f"  {name}: {per_minute:5.2f} CPU s per minute of audio "
                    f"({100 * per_minute / 60:.1f} % of one core; idle process {100 * idle_per_s:.1f} %)"
                )
            stats = state.registry.playback.stats
            print(
                f"\nbridge-side first-frame latency (request accepted -> frame to track): "
                f"{percentiles(list(stats.first_frame_latencies_ms))}"
            )
            channel.close()
            state.request_shutdown()
    media.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.playback_latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the test files")
    parser.add_argument("--runs", type=int, default=20, help="playbacks per format and serving mode")
    args = parser.parse_args()
    trio.run(run, args.seconds, args.runs)


if __name__ == "__main__":
    main()
