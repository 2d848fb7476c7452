"""How fast the livekit SDK gives back a disconnected room's native memory: the floor under churn.

    python -m bench.sdk_churn [--slots 1,2,4,8] [--seconds 20] [--idle 30] [--rtc bridge|sdk-default]

Bare SDK, no bridge: for each slot count K, K loops connect an ``rtc.Room`` (auto-subscribe and,
unless ``--rtc sdk-default``, ICE gathered once, as the bridge does) to a local LiveKit server, stay
0.5 s and disconnect, for ``--seconds``; then nothing happens for ``--idle`` seconds. The C heap in
use (glibc mallinfo2, bridge.memory) is sampled every second. It prints, per K: sessions per second,
C heap growth per session during the churn, the peak, and how fast the heap came back afterwards
(MiB/s, and rooms' worth per second).

Why: bench.soak showed the bridge's C heap climbing by hundreds of MiB under fast churn and
falling back later. This shows the same on the bare SDK: each disconnected room keeps ~1.7 MiB of
native memory until the SDK's teardown gets to it, and the teardown falls behind when rooms come
and go faster than it runs (docs/design/lessons.md has the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from livekit import rtc

from bench.lib import least_squares_slope, run_on_asyncio
from bridge.livekit_io.room import rtc_configuration
from bridge.memory import heap_usage
from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

_HOLD_S = 0.5


def in_use_mib() -> float:
    return heap_usage().get("malloc_in_use", 0) / 2**20


async def churn(
    url: str,
    token: Callable[[str, str], str],
    slots: int,
    seconds: float,
    idle_s: float,
    rtc_config: rtc.RtcConfiguration | None = None,
) -> dict[str, float]:
    sessions = 0
    started = time.monotonic()
    deadline = started + seconds
    samples: list[tuple[float, int, float]] = []  # (t, sessions so far, MiB in use)
    base = in_use_mib()

    async def slot(index: int) -> None:
        nonlocal sessions
        while time.monotonic() < deadline:
            room = rtc.Room()
            await asyncio.wait_for(
                room.connect(
                    url,
                    token(f"churn-{slots}-{index}", f"churn-{slots}-{index}"),
                    rtc.RoomOptions(auto_subscribe=True, rtc_config=rtc_config),
                ),
                15,
            )
            await asyncio.sleep(_HOLD_S)
            await room.disconnect()
            sessions += 1

    async def sample_until(end: float) -> None:
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            samples.append((time.monotonic() - started, sessions, in_use_mib()))

    sampler = asyncio.ensure_future(sample_until(deadline + idle_s))
    await asyncio.gather(*(slot(i) for i in range(slots)))
    churn_s = time.monotonic() - started
    await sampler
    during = [s for s in samples if s[0] <= churn_s]
    after = [s for s in samples if s[0] > churn_s]
    peak = max(s[2] for s in samples)
    growth = least_squares_slope([s[1] for s in during], [s[2] for s in during]) if len(during) > 2 else None
    # The release rate: the steepest fall over 5 s after the churn (the teardown's own pace).
    release = 0.0
    for i in range(len(after) - 5):
        release = max(release, (after[i][2] - after[i + 5][2]) / (after[i + 5][0] - after[i][0]))
    return {
        "slots": slots,
        "sessions": sessions,
        "sessions_per_s": sessions / churn_s,
        "base_mib": base,
        "mib_per_session": growth if growth is not None else float("nan"),
        "peak_mib": peak,
        "end_mib": after[-1][2] if after else float("nan"),
        "release_mib_per_s": release,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_churn", description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1,2,4,8", help="comma-separated slot counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="churn time per slot count (max 600)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle time after each churn (max 600)")
    parser.add_argument(
        "--rtc",
        choices=("bridge", "sdk-default"),
        default="bridge",
        help="the bridge's RtcConfiguration (ICE gathered once, default) or the SDK's own",
    )
    args = parser.parse_args()
    rtc_config = rtc_configuration() if args.rtc == "bridge" else None
    slot_counts = [int(part) for part in args.slots.split(",") if part.strip()]
    if not slot_counts or not all(1 <= k <= 32 for k in slot_counts):
        parser.error("--slots must be numbers in 1..32")
    if not (0 < args.seconds <= 600 and 0 < args.idle <= 600):
        parser.error("--seconds and --idle must be in (0, 600]")
    ensure_server_binary(log=lambda message: print(message, file=sys.stderr))
    with LocalLiveKitServer() as server:
        for slots in slot_counts:
            row = run_on_asyncio(churn(server.url, server.token, slots, args.seconds, args.idle, rtc_config))
            print(
                f"K={slots:2d}: {row['sessions']:4.0f} sessions ({row['sessions_per_s']:5.1f}/s); "
                f"C heap in use "
                f"{row['base_mib']:6.1f} -> peak {row['peak_mib']:7.1f} MiB, "
                f"{row['mib_per_session']:+5.2f} MiB per session during the churn; "
                f"{args.idle:g} s later {row['end_mib']:7.1f} MiB; given back at up to "
                f"{row['release_mib_per_s']:5.1f} MiB/s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
