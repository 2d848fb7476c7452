"""The test watchdog turns a hang in a shielded wait into a dump of where it waits, and an exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from support.watchdog import EXIT_CODE

TESTS = Path(__file__).resolve().parents[1]

HANGING = textwrap.dedent(
    """
    import subprocess
    import trio
    from support.watchdog import watchdog

    async def cleanup_that_never_returns():
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()

    async def main():
        child = subprocess.Popen(["sleep", "60"])  # as a LiveKit server a fixture started
        print(child.pid, flush=True)
        with watchdog("the hanging test", seconds=1.0):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cleanup_that_never_returns)
                with trio.fail_after(0.2):  # cannot end the shielded wait
                    await trio.sleep_forever()

    trio.run(main)
    """
)


def test_a_hang_inside_a_shield_is_dumped_and_ends_the_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HANGING],
        cwd=TESTS,
        env={"PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == EXIT_CODE, done.stderr
    assert "the hanging test still running after 1 s" in done.stderr
    assert "in cleanup_that_never_returns" in done.stderr  # the Trio task and the frame it waits in
    assert "*** threads:" in done.stderr
    child = int(done.stdout.split()[0])
    assert not _alive(child), "the test's child process was left running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
