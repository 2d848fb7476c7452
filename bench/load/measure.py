"""What bench.load measures, and how: CPU, RSS, threads, task counts, latencies, onsets, losses.

- CPU: process CPU seconds (utime + stime of every thread, /proc/<pid>/stat) over a window, in % of
  one core, for the measured process, the phones, this process (the cloud client) and the server;
- RSS: the measured process's VmRSS, idle and every second of the window;
- descriptors: the measured process's open file descriptors (/proc/<pid>/fd), idle and at the end
  of the window;
- tasks: the bridge's HealthCheck ``trio_tasks``/``asyncio_tasks`` idle, at N and after every
  session left; the Python floor's live asyncio tasks, the Go receiver's goroutines, idle and at N;
- room -> cloud latency: receive wall time - the send time in each packet's header, for packets
  sent inside the window; missing packets by counter against what the phones say they sent;
- cloud -> room onsets: each tone burst's send time matched to the first onset the listening phone
  heard after it (within ONSET_MATCH_S).

The figures of one side of one point come out as a dict (``bridge_figures``/``receiver_figures``), which
bench.load.report prints and the JSON keeps; bench/README.md says what each number means.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bench.lib import Health, cpu_seconds, percentiles, rss_mib
from bench.load.threads import cpu_by_group, run_delay_seconds

ONSET_MATCH_S = 0.9
"""A tone burst is heard if an onset follows its send within this long (bursts are 1 s apart)."""


@dataclass
class Window:
    t0_ns: int
    t1_ns: int
    seconds: float
    cpu_pct: dict[str, float]
    """% of one core over the window, per process name."""
    rss_mib: list[float]
    """RSS of the measured process, sampled each second."""
    fds: int
    """Open file descriptors of the measured process at the end of the window."""
    thread_cpu_pct: dict[str, float]
    """The measured process's CPU by thread group (bench.load.threads), % of one core."""
    waited_pct: dict[str, float]
    """Time its threads were runnable but waiting for a CPU, per process name, % of the window (summed
    over threads: above 100 when several waited at once)."""


@dataclass(frozen=True)
class Idle:
    """A process's readings before it has any session."""

    rss_mib: float
    cpu_pct: float
    """% of one core over 2 s."""
    fds: int


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid`` (entries of /proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def measure_idle(pid: int) -> Idle:
    """RSS and descriptors now, then CPU over the next 2 s."""
    idle_rss, idle_fds = rss_mib(pid), open_fds(pid)
    before = cpu_seconds(pid)
    await asyncio.sleep(2.0)
    return Idle(idle_rss, 100 * (cpu_seconds(pid) - before) / 2.0, idle_fds)


async def measure_window(seconds: float, pids: dict[str, int], rss_pid: int) -> Window:
    start_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start_wait = {name: run_delay_seconds(pid) for name, pid in pids.items()}
    start_groups = cpu_by_group(rss_pid)
    start, t0 = time.monotonic(), time.time_ns()
    samples = [rss_mib(rss_pid)]
    end = start + seconds
    while (remaining := end - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, remaining))
        samples.append(rss_mib(rss_pid))
    elapsed, t1 = time.monotonic() - start, time.time_ns()
    cpu = {name: 100 * (cpu_seconds(pid) - start_cpu[name]) / elapsed for name, pid in pids.items()}
    waited = {name: 100 * (run_delay_seconds(pid) - start_wait[name]) / elapsed for name, pid in pids.items()}
    groups = {g: 100 * (s - start_groups[g]) / elapsed for g, s in cpu_by_group(rss_pid).items()}
    return Window(t0, t1, elapsed, cpu, samples, open_fds(rss_pid), groups, waited)


def onset_delays(
    tones: list[tuple[int, int]], onsets: list[tuple[int, int]]
) -> tuple[list[float], int, dict[int, float]]:
    """Match each (session, send ns) burst to the first onset heard after it in that session.

    Returns the delays in ms, the number of bursts nobody heard within ONSET_MATCH_S, and each
    session's median delay (a fixed offset per session shows up there, not in the spread).
    """
    by_session: dict[int, list[int]] = {}
    for session, ns in onsets:
        by_session.setdefault(session, []).append(ns)
    for values in by_session.values():
        values.sort()
    delays, missed = [], 0
    per_session: dict[int, list[float]] = {}
    limit = int(ONSET_MATCH_S * 1e9)
    for session, sent in tones:
        heard = [ns for ns in by_session.get(session, []) if sent <= ns < sent + limit]
        if heard:
            delay = (heard[0] - sent) / 1e6
            delays.append(delay)
            per_session.setdefault(session, []).append(delay)
        else:
            missed += 1
    medians = {session: float(np.median(values)) for session, values in sorted(per_session.items())}
    return delays, missed, medians


def missing_packets(sent: dict[str, int], received: dict[int, int]) -> int:
    return sum(max(0, count - received.get(int(index), 0)) for index, count in sent.items())


def load_of(window: Window, generator: dict[str, Any]) -> dict[str, Any]:
    """How busy the generator side was: phones, cloud client and server CPU, the phones' send lag.

    ``phones_cpu_pct`` is everything that simulates phones on the load core: the phones process, plus
    the Python listeners process that goes with the Go phones (``listeners_cpu_pct``, None without)."""
    listeners = window.cpu_pct.get("listeners")
    return {
        "phones_cpu_pct": window.cpu_pct["phones"] + (listeners or 0.0),
        "listeners_cpu_pct": listeners,
        "phones_waited_pct": window.waited_pct["phones"] + window.waited_pct.get("listeners", 0.0),
        "cloud_waited_pct": window.waited_pct["cloud"],
        "cloud_cpu_pct": window.cpu_pct["cloud"],
        "server_cpu_pct": window.cpu_pct.get("server"),
        "send_lag_ms": percentiles(generator["lag_ms"]),
        "send_errors": generator["errors"],
        "window_s": window.seconds,
    }


class CloudRecords(Protocol):
    """What the cloud client recorded for one session (bench.load.driver.CloudSession)."""

    index: int
    records: list[tuple[int, int, int, int]]
    """(send ns, receive ns, counter, AudioChunk.timestamp_ms: the bridge's wall clock when the
    packet reached its handler, in whole ms)"""
    tone_ns: list[int]
    ended: str


def bridge_figures(
    n: int,
    window: Window,
    idle: Idle,
    tasks: tuple[Health, Health, Health],
    threads: int,
    sessions: Sequence[CloudRecords],
    generator: dict[str, Any],
    exit_code: int,
) -> dict[str, Any]:
    """The bridge side of a point: ``tasks`` = HealthCheck idle, at N, after every session left;
    ``generator`` = the phones' report (what they sent, their send lag, the onsets they heard)."""
    idle_health, at_n, after = tasks
    latencies, to_bridge, bridge_to_cloud, received = [], [], [], {}
    for session in sessions:
        counters = set()
        for sent_ns, at_ns, counter, bridge_ms in session.records:
            if window.t0_ns <= sent_ns <= window.t1_ns:
                latencies.append((at_ns - sent_ns) / 1e6)
                # Split at the bridge's handler; its stamp is truncated to the ms, so each part is
                # off by up to 1 ms (in opposite directions), their sum is exact.
                to_bridge.append(bridge_ms - sent_ns / 1e6)
                bridge_to_cloud.append(at_ns / 1e6 - bridge_ms)
                counters.add(counter)
        received[session.index] = len(counters)
    tones = [(s.index, ns) for s in sessions for ns in s.tone_ns if window.t0_ns <= ns <= window.t1_ns]
    onsets = [(i, ns) for i, who, ns in generator["onsets"] if who.startswith("bridge-")]
    delays, missed, by_session = onset_delays(tones, onsets)
    rss_n = window.rss_mib[-1]
    return {
        "cpu_pct": window.cpu_pct["measured"],
        "cpu_pct_per_session": window.cpu_pct["measured"] / n,
        "cpu_waited_pct": window.waited_pct["measured"],
        "thread_cpu_pct_per_session": {g: pct / n for g, pct in window.thread_cpu_pct.items()},
        "idle_cpu_pct": idle.cpu_pct,
        "rss_idle_mib": idle.rss_mib,
        "rss_mib": rss_n,
        "rss_samples_mib": window.rss_mib,
        "rss_per_session_mib": (rss_n - idle.rss_mib) / n,
        "fds_idle": idle.fds,
        "fds": window.fds,
        "fds_per_session": (window.fds - idle.fds) / n,
        "threads": threads,
        "tasks_idle": {"trio": idle_health.trio_tasks, "asyncio": idle_health.asyncio_tasks},
        "tasks_at_n": {"trio": at_n.trio_tasks, "asyncio": at_n.asyncio_tasks},
        "tasks_per_session": {
            "trio": (at_n.trio_tasks - idle_health.trio_tasks) / n,
            "asyncio": (at_n.asyncio_tasks - idle_health.asyncio_tasks) / n,
        },
        "tasks_after_leave": {"trio": after.trio_tasks, "asyncio": after.asyncio_tasks},
        "tasks_back_to_idle": after.tasks == idle_health.tasks,
        "latency_ms": percentiles(latencies),
        "latency_to_handler_ms": percentiles(to_bridge),
        "latency_handler_to_cloud_ms": percentiles(bridge_to_cloud),
        "onset_ms": percentiles(delays),
        "onset_p50_by_session_ms": by_session,
        "tones_sent": len(tones),
        "tones_missed": missed,
        "packets_sent": sum(generator["sent"].values()),
        "packets_received": sum(received.values()),
        "packets_missing": missing_packets(generator["sent"], received),
        "queue_dropped_chunks": at_n.queue_dropped_chunks,
        "packets_lost": at_n.packets_lost,
        "streams_ended": sorted({s.ended for s in sessions}),
        "exit_code": exit_code,
        "load": load_of(window, generator),
    }


def receiver_figures(
    n: int,
    window: Window,
    idle: Idle,
    tasks: tuple[str, int, int],
    threads: int,
    report: dict[str, Any],
    generator: dict[str, Any],
) -> dict[str, Any]:
    """A receiver side of a point (the Python floor, or the Go receiver): ``tasks`` = (kind, idle,
    at N), the kind ``asyncio`` (live tasks, Python floor) or ``goroutines`` (Go); ``report`` = the
    receiver process's own (latencies, packets received, tones sent); ``generator`` = the phones'."""
    task_kind, idle_tasks, at_n = tasks
    received = {int(k): v for k, v in report["received"].items()}
    onsets = [(i, ns) for i, who, ns in generator["onsets"] if who.startswith("floor-")]
    delays, missed, by_session = onset_delays([(i, ns) for i, ns in report["tones"]], onsets)
    rss_n = window.rss_mib[-1]
    return {
        "cpu_pct": window.cpu_pct["measured"],
        "cpu_pct_per_session": window.cpu_pct["measured"] / n,
        "cpu_waited_pct": window.waited_pct["measured"],
        "thread_cpu_pct_per_session": {g: pct / n for g, pct in window.thread_cpu_pct.items()},
        "idle_cpu_pct": idle.cpu_pct,
        "rss_idle_mib": idle.rss_mib,
        "rss_mib": rss_n,
        "rss_samples_mib": window.rss_mib,
        "rss_per_session_mib": (rss_n - idle.rss_mib) / n,
        "fds_idle": idle.fds,
        "fds": window.fds,
        "fds_per_session": (window.fds - idle.fds) / n,
        "threads": threads,
        "tasks_idle": {task_kind: idle_tasks},
        "tasks_at_n": {task_kind: at_n},
        "tasks_per_session": {task_kind: (at_n - idle_tasks) / n},
        "latency_ms": percentiles(report["latency_ms"]),
        "onset_ms": percentiles(delays),
        "onset_p50_by_session_ms": by_session,
        "tones_sent": len(report["tones"]),
        "tones_missed": missed,
        "packets_sent": sum(generator["sent"].values()),
        "packets_received": sum(received.values()),
        "packets_missing": missing_packets(generator["sent"], received),
        "load": load_of(window, generator),
    }
