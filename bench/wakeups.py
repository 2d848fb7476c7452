"""What one wakeup from another thread costs the loop that is woken: asyncio against Trio and the
bridge's trio-asyncio.

    python -m bench.wakeups                       # 200 wakeups/s for 5 s per loop, 3 rounds
    python -m bench.wakeups --rate 400 --seconds 5 --rounds 3

The SDK delivers every room event from its tokio thread with ``loop.call_soon_threadsafe``; a mic
packet every 100 ms per session is one such wakeup, and at N=20 they come ~5 ms apart, so the loop
sleeps between them and pays a whole wakeup for each. Here a sender thread does only that, evenly
spaced, into a callback that only counts; the loop thread's own CPU time over the window (user and
kernel apart: ``getrusage(RUSAGE_THREAD)``), less the same loop's idle CPU, divided by the wakeups,
is what a wakeup costs there. The bridge's loop is ``trio_asyncio.open_loop()`` as ``bridge.cli``
opens it, with ``bridge.aio_batching`` at its default batch. Everything runs pinned to one core (the
first of this process's affinity), the sender thread too, as the SDK's tokio thread shares the
bridge's core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
from collections.abc import Awaitable, Callable

import trio
import trio_asyncio

from bench.lib import call_evenly
from bridge import aio_batching

Schedule = Callable[[Callable[[], None]], None]
Reading = tuple[float, float, int]
"""The loop thread's user and kernel CPU seconds over the window, and the wakeups it ran."""


def _thread_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


def _since(start: tuple[float, float], calls: int) -> Reading:
    user, kernel = _thread_cpu()
    return user - start[0], kernel - start[1], calls


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


async def _window(
    schedule: Schedule, sleep: Callable[[float], Awaitable[object]], rate: float, seconds: float
) -> Reading:
    """The loop thread's CPU over ``seconds`` while a thread wakes it ``rate`` times a second."""
    counter = Counter()
    start = _thread_cpu()
    if rate:
        call_evenly(rate, seconds, lambda _i: schedule(counter))
    await sleep(seconds + 0.05)
    return _since(start, counter.calls)


def measure_asyncio(rate: float, seconds: float) -> Reading:
    async def main() -> Reading:
        return await _window(asyncio.get_running_loop().call_soon_threadsafe, asyncio.sleep, rate, seconds)

    # asyncio's own loop: trio_asyncio's import installs its policy, which asyncio.run would use.
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def measure_trio(rate: float, seconds: float) -> Reading:
    async def main() -> Reading:
        return await _window(trio.lowlevel.current_trio_token().run_sync_soon, trio.sleep, rate, seconds)

    return trio.run(main)


def measure_trio_asyncio(rate: float, seconds: float, batching: bool) -> Reading:
    async def main() -> Reading:
        async with trio_asyncio.open_loop() as loop:
            return await _window(loop.call_soon_threadsafe, trio.sleep, rate, seconds)

    if batching:
        aio_batching.install()
    else:
        aio_batching.uninstall()
    try:
        return trio.run(main)
    finally:
        aio_batching.uninstall()


LOOPS: dict[str, Callable[[float, float], Reading]] = {
    "asyncio": measure_asyncio,
    "trio": measure_trio,
    "trio-asyncio": lambda rate, seconds: measure_trio_asyncio(rate, seconds, batching=False),
    "trio-asyncio + aio_batching (the bridge)": lambda rate, seconds: measure_trio_asyncio(
        rate, seconds, batching=True
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="wakeups per second (200: N=20 phones)")
    parser.add_argument("--seconds", type=float, default=5.0, help="window per loop and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.rate <= 5000 or not 0.5 <= args.seconds <= 60 or not 1 <= args.rounds <= 10:
        parser.error("--rate 1..5000, --seconds 0.5..60, --rounds 1..10")
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # the sender thread shares the core, as the SDK's tokio thread does
    print(f"load average before: {os.getloadavg()}; pinned to core {core}")
    print(f"{args.rate:.0f} wakeups/s for {args.seconds:.0f} s per loop, {args.rounds} rounds (medians)")
    print(f"{'loop':<42} {'µs per wakeup':>14} {'user':>7} {'kernel':>7} {'idle % core':>12} {'wakeups':>8}")
    for name, measure in LOOPS.items():
        totals, users, kernels, idles, counts = [], [], [], [], []
        for _ in range(args.rounds):
            idle_user, idle_kernel, _calls = measure(0, args.seconds)
            user, kernel, calls = measure(args.rate, args.seconds)
            users.append((user - idle_user) / max(1, calls) * 1e6)
            kernels.append((kernel - idle_kernel) / max(1, calls) * 1e6)
            totals.append(users[-1] + kernels[-1])
            idles.append((idle_user + idle_kernel) / args.seconds * 100)
            counts.append(calls)
        median = statistics.median
        print(
            f"{name:<42} {median(totals):14.1f} {median(users):7.1f} {median(kernels):7.1f}"
            f" {median(idles):12.2f} {min(counts):8d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
