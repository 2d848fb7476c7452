"""Per-thread CPU of a process, grouped by thread name (/proc/<pid>/task/*/stat): libwebrtc's
``network_thread``, the SDK's ``tokio-rt-worker``s, the main thread (Python's, or the Go runtime's
first thread) and everything else."""

from __future__ import annotations

import os

_CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUPS = ("network_thread", "tokio-rt-worker", "main", "other")
_NAMED = ("network_thread", "tokio-rt-worker")
"""Thread names (prefixes of /proc's 15-character ``comm``) that make a group of their own."""


def cpu_by_group(pid: int) -> dict[str, float]:
    """CPU seconds per group, summed over the threads alive now (a thread gone since is not counted)."""
    totals = dict.fromkeys(GROUPS, 0.0)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        if int(tid) == pid:
            group = "main"
        elif name.startswith(_NAMED):
            # libwebrtc names it "network_thread 0x…", which the kernel cuts to 15 characters.
            group = next(g for g in _NAMED if name.startswith(g))
        else:
            group = "other"
        totals[group] += seconds
    return totals


def run_delay_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` alive now have spent runnable but waiting for a CPU
    (/proc/<pid>/task/*/schedstat, second field): how much another process kept it off its core."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile (or no schedstats in this kernel)
    return total / 1e9
