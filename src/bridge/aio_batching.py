"""trio-asyncio runs asyncio's ready callbacks in batches: a private-API patch of trio-asyncio 0.16.

trio-asyncio's loop runs one asyncio callback per pass of its Trio task (``_main_loop_one``): each
callback costs a cancel scope, a memory-channel receive and a trip through Trio's scheduler. A mic
packet is a chain of 3-4 callbacks (the SDK's event, the room's listener, the cloud queue's waiter,
the gRPC send), so at N=10 that machinery was ~10 % of the bridge's Python samples (py-spy,
docs/design/lessons.md). The patched pass, after the callback it waited for, goes on with the ones
already queued (at most ``BATCH``) before it yields to Trio, as asyncio's own loop runs everything
ready in one iteration.

What it keeps from the original: timers are handled in due order (a pass ends when one is due, and
the next pass runs it first); a Trio-side handle (``AsyncHandle``) ends the pass as the original
would start it; ``stop()``'s ``TrioAsyncioExit`` propagates as before. What it changes besides
batching, as asyncio's own loop does: a new timer does not end the pass, a cancelled timer is
dropped instead of waking the loop, and with no timer pending a pass waits without a cancel scope.
``install`` patches only the pinned version (``PATCHED_VERSION``) and otherwise leaves trio-asyncio
as it is; tests/unit/test_aio_batching.py fails loudly if the patch stops applying.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from typing import Any

import trio
import trio_asyncio
from sniffio import thread_local as sniffio_library

__all__ = ["BATCH", "PATCHED_VERSION", "install", "installed", "uninstall"]

log = logging.getLogger(__name__)

PATCHED_VERSION = "0.16.0"
BATCH = 64
"""Callbacks one pass may run by default (``BRIDGE_ASYNCIO_BATCH``): bounds how long Trio's own
tasks wait behind a burst of them."""

_original: Any = None
_batch = BATCH


async def _main_loop_one(self: Any, no_wait: bool = False) -> None:
    from trio_asyncio._handles import AsyncHandle

    timers = self._timers
    while timers and timers[0]._cancelled:
        # asyncio's own loop drops a cancelled timer rather than wake up for it; trio-asyncio woke a
        # pass for each. The SDK's AudioSource re-arms its timer on every capture, so nearly every
        # talkback frame left one behind.
        heapq.heappop(timers)
    timeout = timers[0]._when - self.time() if timers else math.inf
    if timeout <= 0:
        obj = heapq.heappop(timers)  # a due timer goes first
    elif no_wait:
        obj = self._q_recv.receive_nowait()
    elif timeout == math.inf:
        obj = await self._q_recv.receive()  # no timer to wake for: no cancel scope (~6 µs a pass)
    else:
        obj = None
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            obj = await self._q_recv.receive()
        if obj is None:
            return  # a timer is due: the next pass starts with it
    from_queue = timeout > 0
    ran = 0
    while True:
        if from_queue and isinstance(obj, asyncio.TimerHandle):
            heapq.heappush(timers, obj)  # a new timer: kept, and the pass goes on
        elif isinstance(obj, AsyncHandle):
            # A Trio function to start: as the original, and the pass ends with it.
            obj._context.run(self._nursery.start_soon, obj._run, name=obj._callback)
            await obj._started.wait()
            return
        elif not obj._cancelled:
            prev_library, sniffio_library.name = sniffio_library.name, "asyncio"
            try:
                obj._run()
            finally:
                sniffio_library.name = prev_library
        ran += 1
        if ran >= _batch:
            return
        if timers and timers[0]._when <= self.time():
            return  # due timers go before the next queued callback, as in the original
        try:
            obj = self._q_recv.receive_nowait()  # taken only to be run (or kept) in this pass
        except trio.WouldBlock:
            return
        from_queue = True


def installed() -> bool:
    from trio_asyncio._base import BaseTrioEventLoop

    return BaseTrioEventLoop._main_loop_one is _main_loop_one


def install(batch: int = BATCH) -> bool:
    """Run up to ``batch`` callbacks per pass (idempotent; 1 = trio-asyncio's own loop). False, with
    an error logged, on a trio-asyncio other than the pinned one."""
    global _original, _batch
    from trio_asyncio._base import BaseTrioEventLoop

    if batch <= 1:
        uninstall()
        return False
    _batch = batch
    if installed():
        return True
    if trio_asyncio.__version__ != PATCHED_VERSION or not hasattr(BaseTrioEventLoop, "_main_loop_one"):
        log.error(
            "trio-asyncio %s is not the patched %s: asyncio callbacks run one per Trio pass",
            trio_asyncio.__version__,
            PATCHED_VERSION,
        )
        return False
    _original = BaseTrioEventLoop._main_loop_one
    BaseTrioEventLoop._main_loop_one = _main_loop_one
    return True


def uninstall() -> None:
    """Back to trio-asyncio's own pass (tests and benchmarks compare the two)."""
    from trio_asyncio._base import BaseTrioEventLoop

    if _original is not None:
        BaseTrioEventLoop._main_loop_one = _original
