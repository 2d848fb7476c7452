"""The trio-asyncio patch (aio_batching.py) applies to the pinned version, runs ready asyncio
callbacks in batches, and keeps the loop's order, its timers and its Trio-side handles as they were."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import trio
import trio_asyncio

from bridge import aio_batching


@pytest.fixture(params=["batched", "one per pass"])
def loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    was = aio_batching.installed()
    if request.param == "batched":
        assert aio_batching.install(), "the patch no longer applies: see aio_batching.py"
    else:
        aio_batching.install(1)
    yield request.param
    aio_batching.install() if was else aio_batching.install(1)


async def _chain_passes(length: int) -> int:
    """How many times a Trio task got to run while asyncio ran a chain of ``length`` callbacks,
    each scheduling the next (as an SDK event wakes a listener that wakes a sender)."""
    done = trio.Event()
    turns = 0

    def step(left: int) -> None:
        if left:
            asyncio.get_running_loop().call_soon(step, left - 1)
        else:
            done.set()

    async def count_turns() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
        nursery.start_soon(count_turns)
        await trio.lowlevel.checkpoint()
        loop.call_soon(step, length)
        await done.wait()
    return turns


async def test_a_chain_of_callbacks_runs_in_one_pass_when_batched(loop_kind: str) -> None:
    turns = await _chain_passes(40)
    if loop_kind == "batched":
        assert turns <= 3, turns
    else:
        assert turns >= 40, turns  # the original: one Trio pass per callback


async def test_a_long_burst_still_lets_trio_tasks_run(loop_kind: str) -> None:
    # Bounded batches: 1000 callbacks give Trio at least 1000 / BATCH turns in between.
    assert await _chain_passes(1000) >= 1000 // aio_batching.BATCH


async def test_order_timers_and_trio_handles_are_as_in_the_original(loop_kind: str) -> None:
    seen: list[str] = []

    async def from_trio(tag: str) -> None:
        seen.append(tag)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        loop.call_soon(seen.append, "a")
        loop.call_later(0.01, seen.append, "timer 10 ms")
        loop.call_soon(seen.append, "b")
        loop.call_soon(lambda: loop.call_soon(seen.append, "c (scheduled by a callback)"))
        cancelled = loop.call_soon(seen.append, "never")
        cancelled.cancel()
        await trio_asyncio.trio_as_aio(from_trio)("trio function")
        loop.call_later(0.02, finished.set_result, None)
        await finished

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(scenario)()
    # The Trio function was queued (by trio_as_aio) before the callback that scheduled "c" ran.
    assert seen == ["a", "b", "trio function", "c (scheduled by a callback)", "timer 10 ms"]


async def test_a_timer_set_while_the_loop_waits_without_one_fires_on_time(loop_kind: str) -> None:
    # The batched pass waits with no cancel scope when no timer is pending: a new timer has to wake
    # it (it arrives through the loop's queue) and fire when due, not at the next unrelated callback.
    async with trio_asyncio.open_loop() as loop:
        await trio.sleep(0.05)  # the loop parks with an empty timer heap
        fired = trio.Event()
        set_at = trio.current_time()
        loop.call_later(0.05, fired.set)
        with trio.fail_after(2):
            await fired.wait()
        assert 0.04 <= trio.current_time() - set_at < 0.5


async def test_cancelled_timers_do_not_wake_the_loop_when_batched(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's AudioSource cancels and re-arms a timer on every capture: trio-asyncio woke a pass
    # for each cancelled one when it came due, asyncio's own loop drops them.
    from trio_asyncio._base import BaseTrioEventLoop

    patched = BaseTrioEventLoop._main_loop_one
    passes = 0

    async def counted(self: object, no_wait: bool = False) -> None:
        nonlocal passes
        passes += 1
        await patched(self, no_wait)

    monkeypatch.setattr(BaseTrioEventLoop, "_main_loop_one", counted)
    async with trio_asyncio.open_loop() as loop:
        await trio.sleep(0.02)
        before = passes
        for _ in range(50):
            loop.call_later(0.03, lambda: None).cancel()
        await trio.sleep(0.1)  # past the timers' due time
        woke = passes - before
    if loop_kind == "batched":
        assert woke <= 3, woke
    else:
        assert woke >= 50, woke  # the original: a pass for each timer queued, and for each due


async def test_a_loop_opened_and_stopped_under_the_patch_leaves_no_task(loop_kind: str) -> None:
    for _ in range(3):
        async with trio_asyncio.open_loop() as loop:
            await trio_asyncio.aio_as_trio(asyncio.sleep)(0.001)
            loop.call_soon(lambda: None)
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names = [t.name for n in root.child_nurseries for t in n.child_tasks]
    assert not any("trio_asyncio" in name for name in names), names


def test_another_trio_asyncio_version_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    was = aio_batching.installed()
    aio_batching.install(1)
    monkeypatch.setattr(trio_asyncio, "__version__", "9.9.9")
    try:
        assert not aio_batching.install() and not aio_batching.installed()
    finally:
        monkeypatch.undo()
        if was:
            aio_batching.install()
