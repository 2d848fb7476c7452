"""A per-test watchdog: a hung test prints where every Trio task and thread waits, then ends the run.

A test's own ``trio.fail_after`` cannot end a wait inside a shielded cleanup, and CI's only other
bound is its 90 minutes. So a thread watches the clock; at the deadline it asks the Trio loop for
its task tree (with a bound, in case the loop's thread is stuck in sync code), dumps every thread's
stack, and exits the process with a distinct code.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio


def _nothing_to_release() -> None:
    pass


release_output: Callable[[], None] = _nothing_to_release
"""Set by conftest to suspend pytest's output capture, whose files ``os._exit`` would discard."""

DEFAULT_SECONDS = 300.0
"""Twice the longest ``fail_after`` of any test; ``BRIDGE_TEST_WATCHDOG_S`` overrides it."""
EXIT_CODE = 70


def task_tree() -> str:
    """Every Trio task of this run, indented by nursery, with the frames it is awaiting in."""
    lines: list[str] = []

    def visit(task: trio.lowlevel.Task, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}task {task.name}")
        for frame, lineno in task.iter_await_frames():
            code = frame.f_code
            lines.append(f"{pad}  at {code.co_filename}:{lineno} in {code.co_name}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                visit(child, depth + 1)

    visit(trio.lowlevel.current_root_task(), 0)  # type: ignore[arg-type]
    return "\n".join(lines)


def _kill_children() -> None:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == me:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


@contextmanager
def watchdog(test_name: str, seconds: float | None = None) -> Iterator[None]:
    """Watch the enclosed part of a test (call from inside the Trio run)."""
    limit = (
        seconds if seconds is not None else float(os.environ.get("BRIDGE_TEST_WATCHDOG_S", DEFAULT_SECONDS))
    )
    token = trio.lowlevel.current_trio_token()
    finished = threading.Event()

    def bark() -> None:
        if finished.wait(limit):
            return
        dumped = threading.Event()
        tree: list[str] = []

        def dump_in_trio() -> None:
            tree.append(task_tree())
            dumped.set()

        try:
            token.run_sync_soon(dump_in_trio)
        except trio.RunFinishedError:
            dumped.set()
        dumped.wait(10)
        release_output()
        out = sys.stderr
        out.write(f"\n*** watchdog: {test_name} still running after {limit:.0f} s; Trio tasks:\n")
        out.write((tree[0] if tree else "(the Trio loop did not answer within 10 s)") + "\n")
        out.write("*** threads:\n")
        out.flush()
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.flush()
        _kill_children()  # fixture teardown will not run: no LiveKit server left behind
        os._exit(EXIT_CODE)

    thread = threading.Thread(target=bark, name=f"watchdog {test_name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
