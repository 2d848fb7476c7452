"""Counting live tasks and waiting work on both sides of the process.

Task counts are how leak tests and HealthCheck see leftovers. ``callback_backlog`` is how the
metrics see a process falling behind: the SDK's native threads hand every event over with
``call_soon_threadsafe``, which trio-asyncio turns into a Trio ``run_sync_soon`` job and then an
asyncio handle. Both queues are unbounded; what waits there holds its event's memory.
"""

from __future__ import annotations

import asyncio
import contextlib

import trio

__all__ = ["asyncio_task_count", "callback_backlog", "tasks_under", "trio_task_count"]


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


def callback_backlog(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """Jobs queued from other threads for Trio, and handles queued for trio-asyncio's loop.

    Reads private fields of trio and trio-asyncio (versions pinned in pyproject.toml); a queue whose
    field is gone is left out rather than reported wrong.
    """
    backlog: dict[str, int] = {}
    with contextlib.suppress(AttributeError, RuntimeError):
        entry = trio.lowlevel.current_trio_token()._reentry_queue
        backlog["trio_run_sync_soon"] = len(entry.queue) + len(entry.idempotent_queue)
    with contextlib.suppress(AttributeError):
        backlog["asyncio_handles"] = loop._q_recv.statistics().current_buffer_used  # type: ignore[attr-defined]
    return backlog
