"""What a JoinRoom waits for: the bridge's join beside the bare SDK's room connect, on the same server.

    python -m bench.joins [--rounds 20] [--burst 10]

One LiveKit server on loopback and one bridge process (``python -m bridge``, as deployed). For each
round a phone (a real participant, in this process) joins a new room and sends a lossy mic packet
every 20 ms; then, one after another:

- **bare**: this process connects an ``rtc.Room`` to that room exactly as the bridge does (its
  ``RoomOptions``: auto-subscribe, ICE gathered once) and disconnects: the SDK's own floor, which
  returns once the room's peer connection is up (signal join, ICE, DTLS, data channels);
- **JoinRoom**: the cloud's JoinRoom for the same room through the bridge, timed at the client;
- **usable**: right after the answer, the cloud opens StreamAudio; the time from the answer to the
  first microphone chunk at the cloud says whether the session was usable when it answered (a
  packet every 20 ms: ~10-20 ms means at once).

Then ``--burst`` JoinRooms at once (a failover), beside the same number of bare connects at once.
Prints p50/p99/max for each, the bridge's added time and ratio. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpclib.const
import numpy as np
from livekit import rtc

from bench.lib import BridgeProcess, Children, load_average, run_on_asyncio, start_bridge
from bridge._gen.mentra.livekit.bridge import AudioChunk, JoinRoomRequest, LeaveRoomRequest
from bridge.livekit_io.room import rtc_configuration
from bridge.testing.cloud import STREAM_AUDIO
from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

_PACKET = bytes(1 + 640)  # a sequence byte + 20 ms of 16 kHz silence
_TIMEOUT_S = 15.0


async def _phone(url: str, token: str) -> tuple[rtc.Room, asyncio.Task[None]]:
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token, rtc.RoomOptions(auto_subscribe=False)), _TIMEOUT_S)

    async def talk() -> None:
        while True:
            with contextlib.suppress(Exception):  # lossy, and the room may be going away
                await room.local_participant.publish_data(_PACKET, reliable=False)
            await asyncio.sleep(0.02)

    return room, asyncio.ensure_future(talk())


async def _bare_connect_ms(url: str, token: str) -> float:
    room = rtc.Room()
    options = rtc.RoomOptions(auto_subscribe=True, rtc_config=rtc_configuration())
    started = time.perf_counter()
    await asyncio.wait_for(room.connect(url, token, options), _TIMEOUT_S)
    took = (time.perf_counter() - started) * 1000
    await room.disconnect()
    return took


async def _first_chunk_ms(bridge: BridgeProcess, user: str) -> float:
    """Open StreamAudio right away; ms from now to the first room audio at the cloud."""
    started = time.perf_counter()
    async with bridge.channel.request(
        STREAM_AUDIO, grpclib.const.Cardinality.STREAM_STREAM, AudioChunk, AudioChunk
    ) as stream:
        await stream.send_message(AudioChunk(user_id=user, sample_rate=16000, channels=1))
        await asyncio.wait_for(stream.recv_message(), _TIMEOUT_S)
        took = (time.perf_counter() - started) * 1000
        await stream.cancel()
    return took


async def _join_ms(bridge: BridgeProcess, lk: LocalLiveKitServer, user: str, room: str) -> float:
    request = JoinRoomRequest(
        user_id=user, room_name=room, token=lk.token(f"bridge-{user}", room), target_identity=user
    )
    started = time.perf_counter()
    response = await bridge.stub.join_room(request, timeout=_TIMEOUT_S)
    took = (time.perf_counter() - started) * 1000
    if not response.success:
        raise RuntimeError(f"JoinRoom failed: {response.error}")
    return took


def _p50(values: Sequence[float]) -> float:
    return float(np.percentile(values, 50))


def _row(label: str, values: Sequence[float]) -> str:
    p50, p99 = np.percentile(values, [50, 99])
    return f"{label:<34} {p50:>8.1f} {p99:>8.1f} {max(values):>8.1f}   (n={len(values)})"


async def run(rounds: int, burst: int, out: Path) -> None:
    ensure_server_binary()
    print(f"load average at start: {load_average()}")
    children = Children()
    with LocalLiveKitServer() as lk:
        bridge = await start_bridge(children, livekit_url=lk.url, log_path=out / "joins-bridge.log")
        try:
            bare: list[float] = []
            joins: list[float] = []
            usable: list[float] = []
            for index in range(rounds):
                user, room = f"join-{index}", f"joins-{uuid.uuid4().hex[:8]}"
                phone, talking = await _phone(lk.url, lk.token(user, room))
                try:
                    bare.append(await _bare_connect_ms(lk.url, lk.token(f"bare-{user}", room)))
                    joins.append(await _join_ms(bridge, lk, user, room))
                    usable.append(await _first_chunk_ms(bridge, user))
                    await bridge.stub.leave_room(LeaveRoomRequest(user_id=user))
                finally:
                    talking.cancel()
                    await phone.disconnect()

            rooms = [f"burst-{uuid.uuid4().hex[:8]}" for _ in range(burst)]
            started = time.perf_counter()
            bare_burst = await asyncio.gather(
                *(_bare_connect_ms(lk.url, lk.token(f"bare-burst-{i}", r)) for i, r in enumerate(rooms))
            )
            bare_burst_all = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            join_burst = await asyncio.gather(
                *(_join_ms(bridge, lk, f"burst-{i}", r) for i, r in enumerate(rooms))
            )
            join_burst_all = (time.perf_counter() - started) * 1000
            for i in range(burst):
                await bridge.stub.leave_room(LeaveRoomRequest(user_id=f"burst-{i}"))
        finally:
            await bridge.stop()
            await children.close()

    print(f"\n{'ms':<34} {'p50':>8} {'p99':>8} {'max':>8}")
    print(_row("bare SDK connect (floor)", bare))
    print(_row("JoinRoom through the bridge", joins))
    print(_row("  added by the bridge (per round)", [j - b for j, b in zip(joins, bare, strict=True)]))
    print(_row("answer -> first mic chunk at cloud", usable))
    print(_row(f"bare connects, {burst} at once", bare_burst))
    print(_row(f"JoinRooms, {burst} at once", join_burst))
    ratio = _p50(joins) / _p50(bare)
    print(
        f"\nJoinRoom / bare connect at p50: {ratio:.2f}x; a burst of {burst}: all answered in "
        f"{join_burst_all:.0f} ms (bare: {bare_burst_all:.0f} ms)"
    )
    print(f"load average at end: {load_average()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.joins", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="sequential joins (default 20)")
    parser.add_argument("--burst", type=int, default=10, help="JoinRooms at once (default 10)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where the bridge log goes")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 200 or not 1 <= args.burst <= 50:
        parser.error("--rounds 1..200, --burst 1..50")
    args.out.mkdir(parents=True, exist_ok=True)
    run_on_asyncio(run(args.rounds, args.burst, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
