"""Counting every task in the process, to prove that a teardown left nothing behind.

A census counts all Trio tasks (walking the task tree) and all unfinished asyncio tasks on
trio-asyncio's loop, and names the asyncio coroutines so a failure says what leaked. Tests take one
before a session exists and assert the process returns to it after the session is gone.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import trio
import trio_asyncio

from bridge.diagnostics import trio_task_count


def _asyncio_task_names() -> Counter[str]:
    loop = trio_asyncio.current_loop.get()
    names: Counter[str] = Counter()
    for task in asyncio.all_tasks(loop):
        if not task.done():
            coro = task.get_coro()
            names[getattr(coro, "__qualname__", repr(coro))] += 1
    return names


def _trio_task_names() -> Counter[str]:
    root = trio.lowlevel.current_root_task()
    names: Counter[str] = Counter()
    pending = [root] if root is not None else []
    while pending:
        task = pending.pop()
        names[task.name] += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return names


@dataclass(frozen=True)
class TaskCensus:
    trio_tasks: int
    asyncio_tasks: Counter[str]

    @classmethod
    def now(cls) -> TaskCensus:
        return cls(trio_task_count(), _asyncio_task_names())

    @classmethod
    async def settled(cls) -> TaskCensus:
        """A census once task counts stop changing (finished tasks take a tick to go)."""
        previous = cls.now()
        for _ in range(50):
            await trio.sleep(0.02)
            current = cls.now()
            if current == previous:
                return current
            previous = current
        return previous

    @property
    def asyncio_total(self) -> int:
        return sum(self.asyncio_tasks.values())

    def difference(self, other: TaskCensus) -> str:
        extra = self.asyncio_tasks - other.asyncio_tasks
        missing = other.asyncio_tasks - self.asyncio_tasks
        return (
            f"trio {other.trio_tasks} -> {self.trio_tasks} ({sorted(_trio_task_names().items())}); "
            f"asyncio extra {dict(extra)}, missing {dict(missing)}"
        )


async def assert_back_to(baseline: TaskCensus, timeout_s: float = 5.0) -> TaskCensus:
    """Wait (bounded) until the process has exactly the baseline's tasks again; fail otherwise."""
    with trio.move_on_after(timeout_s):
        while True:
            current = await TaskCensus.settled()
            if current == baseline:
                return current
            await trio.sleep(0.05)
    current = TaskCensus.now()
    raise AssertionError(f"tasks left after teardown: {current.difference(baseline)}")
