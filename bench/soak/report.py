"""What bench.soak prints and draws: the progress lines while it runs, the report (samples, cycles
and outcomes, fits, RSS and task counts idle -> after every session left, the verdict), the floor's
side by side with the bridge's, and the PNG."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.soak.measure import Sample, SoakResult


def sample_line(sample: Sample) -> str:
    """One bridge sample as it is taken."""
    return (
        f"  t={sample.t_s:6.1f} s  RSS {sample.rss_mib:7.1f} MiB  trio {sample.trio_tasks:4d}"
        f"  asyncio {sample.asyncio_tasks:4d}  sessions {sample.sessions:3d}"
        f"  streams {sample.streams}  CPU {sample.cpu_pct:3.0f} %  backlog {sample.backlog:5d}"
        f"  {_heap_text(sample.heap)}"
    )


def floor_sample_line(sample: dict[str, Any]) -> str:
    """One sample of the floor process (bench.soak.floor) as it arrives."""
    return (
        f"  floor t={sample['t_s']:6.1f} s  RSS {sample['rss_mib']:7.1f} MiB  rooms {sample['rooms']:3d}"
        f"  asyncio {sample['asyncio_tasks']:4d}  {_heap_text(sample['heap'])}"
    )


def _heap_text(heap: dict[str, float]) -> str:
    if not heap:
        return ""
    text = f"py blocks {heap.get('python_blocks', 0) / 1000:7.1f}k"
    if "in_use" in heap:
        text += f"  C heap in use {heap['in_use']:6.1f} / free {heap['free']:6.1f}"
        text += f" / mmap {heap['mmap']:5.1f} MiB"
    return text


def join_line(join_ms: list[float], churn_s: float) -> str:
    """JoinRoom latency at the client over the churn: the cost of pacing connects (livekit_io/pacing.py)."""
    if not join_ms:
        return "JoinRoom: none"
    p50, p99 = np.percentile(join_ms, [50, 99])
    return (
        f"JoinRoom: {len(join_ms)} joins ({len(join_ms) / churn_s:.1f}/s), "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(join_ms):.0f} ms"
    )


def heap_peak_line(samples: list[Sample]) -> str:
    in_use = [s.heap["in_use"] for s in samples if "in_use" in s.heap]
    if not in_use:
        return "C heap in use: not reported"
    return (
        f"C heap in use: first sample {in_use[0]:.1f} MiB, peak {max(in_use):.1f} MiB "
        f"({max(in_use) - in_use[0]:+.1f}), last {in_use[-1]:.1f} MiB"
    )


def format_report(result: SoakResult) -> str:
    s = result.settings
    lines = [
        f"soak: {s.sessions} session slots churning for {result.churn_s:.0f} s (idle TTL {s.idle_ttl_s:g} s)",
        "",
        "     t s   phase   RSS MiB  trio  asyncio  sessions  streams  CPU %  backlog",
    ]
    for sample in result.samples:
        lines.append(
            f"  {sample.t_s:6.1f}  {sample.phase:6s}  {sample.rss_mib:8.1f}  {sample.trio_tasks:4d}"
            f"  {sample.asyncio_tasks:7d}  {sample.sessions:8d}  {sample.streams:7d}  {sample.cpu_pct:5.0f}"
            f"  {sample.backlog:7d}  {_heap_text(sample.heap)}"
        )

    def per_hour(value: float | None, unit: str) -> str:
        return "n/a (too few samples)" if value is None else f"{value:+.1f} {unit}/hour"

    lines += [
        "",
        f"cycles: {dict(sorted(result.cycles.items()))}  (sessions started: {result.final.sessions_started})",
        f"outcomes: {dict(sorted(result.outcomes.items()))}",
        f"room audio chunks received by the cloud: {result.chunks_to_cloud}; "
        f"streams that got none: {dict(result.streams_without_audio) or 0}",
        join_line(result.join_ms, result.churn_s),
        heap_peak_line(result.samples),
        f"fits over {result.fitted_span_s:.0f} s of churn after a {s.warmup:g} s warm-up:",
        f"  RSS     {per_hour(result.rss_growth_mib_per_hour, 'MiB')}"
        + (
            ""
            if result.rss_growth_over_run_mib is None
            else f"  ({result.rss_growth_over_run_mib:+.1f} MiB over the fitted span)"
        ),
        f"  Python blocks   {per_hour(result.heap_growth_per_hour('python_blocks'), 'blocks')}",
        f"  C heap in use   {per_hour(result.heap_growth_per_hour('in_use'), 'MiB')}",
        f"  C heap free     {per_hour(result.heap_growth_per_hour('free'), 'MiB')}  (freed, not returned)",
        f"  C heap mmap     {per_hour(result.heap_growth_per_hour('mmap'), 'MiB')}",
        f"  trio    {per_hour(result.trio_growth_per_hour, 'tasks')}",
        f"  asyncio {per_hour(result.asyncio_growth_per_hour, 'tasks')}",
        f"RSS: idle {result.idle_rss_mib:.1f} MiB -> after every session left {result.final_rss_mib:.1f} MiB",
        f"tasks: idle trio {result.idle.trio_tasks} / asyncio {result.idle.asyncio_tasks} -> after every "
        f"session left trio {result.final.trio_tasks} / asyncio {result.final.asyncio_tasks}: "
        + ("back to idle exactly" if result.tasks_returned else "NOT back to idle (leak)"),
        f"bridge log: {result.bridge_log}",
    ]
    if result.floor is not None:
        lines += ["", *_floor_report(result)]
    if result.errors:
        lines.append(f"{len(result.errors)} cycle errors:")
        lines += [f"  {error}" for error in result.errors[:20]]
    lines.append("PASS" if result.ok else "FAIL")
    return "\n".join(lines)


def _floor_report(result: SoakResult) -> list[str]:
    floor = result.floor
    assert floor is not None
    lines = [
        "bare-SDK floor (same slots, phones and rooms; connect, publish, 1 s of tone, disconnect):",
        "     t s   phase   RSS MiB  rooms  asyncio",
    ]
    for sample in [*floor.samples, floor.final]:
        lines.append(
            f"  {sample['t_s']:6.1f}  {sample['phase']:6s}  {sample['rss_mib']:8.1f}  {sample['rooms']:5d}"
            f"  {sample['asyncio_tasks']:7d}  {_heap_text(sample['heap'])}"
        )

    def per_hour(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.1f} MiB/hour"

    lines += [
        f"floor sessions: {floor.sessions_started}; errors: {len(floor.final.get('errors', []))}",
        f"floor RSS: idle {floor.idle_rss_mib:.1f} MiB -> "
        f"after every room left {floor.final_rss_mib:.1f} MiB",
        "                        bridge            floor",
        f"  RSS fit          {per_hour(result.rss_growth_mib_per_hour):>17}  "
        f"{per_hour(floor.fit(lambda s: s['rss_mib'])):>17}",
    ]
    for kind, label in (("in_use", "C heap in use"), ("free", "C heap free")):
        if kind in floor.final["heap"]:
            lines.append(
                f"  {label:15s}  {per_hour(result.heap_growth_per_hour(kind)):>17}  "
                f"{per_hour(floor.fit(lambda s, kind=kind: s['heap'][kind])):>17}"
            )
    bridge_held = result.final_rss_mib - result.idle_rss_mib
    floor_held = floor.final_rss_mib - floor.idle_rss_mib
    lines += [
        f"  RSS held after all left {bridge_held:+8.1f} MiB      {floor_held:+8.1f} MiB  (above idle)",
        f"  sessions            {result.final.sessions_started:13d}  {floor.sessions_started:17d}",
    ]
    for error in floor.final.get("errors", [])[:5]:
        lines.append(f"  floor error: {error}")
    return lines


def plot(result: SoakResult, path: Path) -> bool:
    """RSS and the heap split over time (bridge, and the floor if it ran), and the task counts."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    fig, (memory, tasks) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    bridge = result.samples
    ts = [s.t_s for s in bridge]
    memory.plot(ts, [s.rss_mib for s in bridge], "-", color="tab:blue", label="bridge RSS")
    if all("in_use" in s.heap for s in bridge):
        memory.plot(
            ts, [s.heap["in_use"] for s in bridge], ":", color="tab:blue", label="bridge C heap in use"
        )
        memory.plot(ts, [s.heap["free"] for s in bridge], "-.", color="tab:blue", label="bridge C heap free")
    if result.floor is not None:
        floor = [*result.floor.samples, result.floor.final]
        fts = [s["t_s"] for s in floor]
        memory.plot(fts, [s["rss_mib"] for s in floor], "-", color="tab:orange", label="floor RSS")
        if all("in_use" in s["heap"] for s in floor):
            memory.plot(
                fts,
                [s["heap"]["in_use"] for s in floor],
                ":",
                color="tab:orange",
                label="floor C heap in use",
            )
            memory.plot(
                fts, [s["heap"]["free"] for s in floor], "-.", color="tab:orange", label="floor C heap free"
            )
    memory.axvline(result.settings.warmup, color="grey", alpha=0.4)
    memory.set_ylabel("MiB")
    memory.set_ylim(bottom=0)
    memory.set_title(
        f"soak: {result.settings.sessions} slots, {result.final.sessions_started} bridge sessions"
    )
    memory.grid(True, alpha=0.3)
    memory.legend(fontsize=8, ncol=2)
    tasks.plot(ts, [s.trio_tasks for s in bridge], "-", label="bridge Trio tasks")
    tasks.plot(ts, [s.asyncio_tasks for s in bridge], "-", label="bridge asyncio tasks")
    tasks.plot(ts, [s.sessions for s in bridge], "--", label="sessions open")
    tasks.set_xlabel("seconds since the churn started")
    tasks.set_ylim(bottom=0)
    tasks.grid(True, alpha=0.3)
    tasks.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
