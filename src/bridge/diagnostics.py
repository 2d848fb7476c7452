"""Counting live tasks on both sides of the process: how leak tests and HealthCheck see leftovers."""

from __future__ import annotations

import asyncio

import trio

__all__ = ["asyncio_task_count", "tasks_under", "trio_task_count"]


def trio_task_count() -> int:
    """Every Trio task in this run (walks the task tree from the root)."""
    root = trio.lowlevel.current_root_task()
    return 0 if root is None else tasks_under(root)


def tasks_under(task: trio.lowlevel.Task) -> int:
    """``task`` and every task in the nurseries below it."""
    count, pending = 0, [task]
    while pending:
        current = pending.pop()
        count += 1
        for nursery in current.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def asyncio_task_count(loop: asyncio.AbstractEventLoop) -> int:
    """Unfinished asyncio tasks on ``loop`` (trio-asyncio's loop in the bridge)."""
    return sum(1 for task in asyncio.all_tasks(loop) if not task.done())
