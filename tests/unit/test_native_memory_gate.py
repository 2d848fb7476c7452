"""NativeMemoryGate: connects wait while the C heap in use is above its allowance, bounded (pacing.py)."""

from __future__ import annotations

import pytest
import trio
from trio_asyncio import aio_as_trio

from bridge.livekit_io.pacing import NativeMemoryGate

MIB = 1 << 20


class Heap:
    """A C heap in use that the test sets, and that falls by ``release`` at every reading."""

    def __init__(self, in_use: int, release: int = 0) -> None:
        self.in_use, self.release = in_use, release

    def __call__(self) -> int:
        value = self.in_use
        self.in_use = max(0, self.in_use - self.release)
        return value


def gate(heap: Heap, **overrides: float) -> NativeMemoryGate:
    settings = {"headroom": 64 * MIB, "per_room": 2 * MIB, "max_wait_s": 0.5, "poll_s": 0.01, **overrides}
    return NativeMemoryGate(in_use=heap, **settings)  # type: ignore[arg-type]


async def test_within_its_allowance_a_connect_does_not_wait(aio_loop: object) -> None:
    heap = Heap(20 * MIB)
    paced = gate(heap)
    assert await aio_as_trio(paced.wait)() == 0.0  # the floor: 20 MiB
    paced.rooms = 10  # ten live rooms may hold 20 MiB more
    heap.in_use = (20 + 64 + 20) * MIB
    assert await aio_as_trio(paced.wait)() == 0.0
    assert paced.paced_connects == 0


async def test_above_it_a_connect_waits_until_the_teardown_catches_up(aio_loop: object) -> None:
    heap = Heap(20 * MIB)
    paced = gate(heap)
    await aio_as_trio(paced.wait)()
    heap.in_use, heap.release = 100 * MIB, 4 * MIB  # 16 MiB over; the teardown frees 4 MiB a poll
    waited = await aio_as_trio(paced.wait)()
    assert 0.02 <= waited < 0.5
    assert heap.in_use <= (20 + 64) * MIB
    assert paced.paced_connects == 1 and paced.paced_seconds == pytest.approx(waited)


async def test_the_wait_is_bounded_and_the_connect_goes_ahead(aio_loop: object) -> None:
    heap = Heap(20 * MIB)
    paced = gate(heap, max_wait_s=0.1)
    await aio_as_trio(paced.wait)()
    heap.in_use = 500 * MIB  # never comes back
    started = trio.current_time()
    waited = await aio_as_trio(paced.wait)()
    assert 0.1 <= waited < 0.3 and trio.current_time() - started < 0.5


async def test_without_glibc_figures_nothing_waits(aio_loop: object) -> None:
    paced = NativeMemoryGate(in_use=lambda: None)
    assert await aio_as_trio(paced.wait)() == 0.0
