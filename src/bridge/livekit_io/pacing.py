"""Room connects held back while the SDK's native memory from rooms already left is behind.

Under fast churn the livekit SDK's native teardown of disconnected rooms falls behind, and each room
not yet torn down keeps ~0.5 MiB (ICE gathered once; ~1.7 MiB with the SDK's default gathering) of
C heap in use: through the bridge at 5.5 sessions/s that grew by +155 MiB in 60 s and kept growing
(docs/design/lessons.md). The teardown runs on the same native threads as new connects, so a connect
that waits while the heap is high gives it time to catch up.

``NativeMemoryGate.wait`` is called before every room connect: while glibc's C heap in use is more
than ``headroom`` above the lowest level seen (the idle process with the SDK's runtime loaded), plus
``per_room`` for every room connected now (live sessions legitimately hold memory), the connect waits,
polling, for at most ``max_wait_s``; then it goes ahead anyway (a join is never refused for memory).
What it costs joins is counted (``paced_connects``, ``paced_seconds``) and exported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..memory import heap_usage

__all__ = ["NativeMemoryGate", "native_memory_gate"]

_MIB = 1 << 20


def _c_heap_in_use() -> int | None:
    return heap_usage().get("malloc_in_use")


class NativeMemoryGate:
    def __init__(
        self,
        *,
        headroom: int = 64 * _MIB,
        per_room: int = 2 * _MIB,
        max_wait_s: float = 2.0,
        poll_s: float = 0.05,
        in_use: Callable[[], int | None] = _c_heap_in_use,
    ) -> None:
        self._headroom: int | None = headroom
        self._per_room = per_room
        self._max_wait_s = max_wait_s
        self._poll_s = poll_s
        self._in_use = in_use
        self._floor: int | None = None
        self.rooms = 0
        """Rooms connected now (RoomLink counts them in and out)."""
        self.paced_connects = 0
        self.paced_seconds = 0.0

    def configure(self, *, headroom_mib: int) -> None:
        """``BRIDGE_NATIVE_MEMORY_HEADROOM_MIB``: 0 turns the gate off."""
        self._headroom = headroom_mib * _MIB if headroom_mib > 0 else None

    def _over(self, in_use: int) -> bool:
        assert self._floor is not None and self._headroom is not None
        return in_use - self._floor > self._headroom + self.rooms * self._per_room

    async def wait(self) -> float:
        """Wait (bounded) until the C heap in use is back within its allowance; seconds waited."""
        if self._headroom is None:  # turned off
            return 0.0
        in_use = self._in_use()
        if in_use is None:  # not glibc: nothing to go by
            return 0.0
        self._floor = in_use if self._floor is None else min(self._floor, in_use)
        if not self._over(in_use):
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < self._max_wait_s:
            await asyncio.sleep(self._poll_s)
            in_use = self._in_use()
            if in_use is None or not self._over(in_use):
                break
        waited = loop.time() - started
        self.paced_connects += 1
        self.paced_seconds += waited
        return waited


_GATE = NativeMemoryGate()


def native_memory_gate() -> NativeMemoryGate:
    """The process's gate: native memory is the process's, so all its rooms share one."""
    return _GATE
