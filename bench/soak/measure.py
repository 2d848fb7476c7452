"""What bench.soak samples, and how, and the fits it derives.

Every ``sample_every_s`` (``Sampler``): the bridge's RSS (/proc/<pid>/status VmRSS), its CPU since the
previous sample (/proc/<pid>/stat, all threads), HealthCheck's ``trio_tasks``/``asyncio_tasks``,
sessions and streams, and from its /metrics the heap split (Python blocks, C heap in use / free /
mmap: bridge.memory) and the callback backlog. After the churn, one ``final`` sample once every
session is gone and the task counts have settled.

Fits (``SoakResult``): least-squares slopes per hour of RSS, each part of the heap split and both task
counts over the ``churn`` samples after the warm-up; the RSS growth over the fitted span; and the
verdict: the task counts after every session left equal the idle ones exactly, and no cycle failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.lib import (
    HEAP_KINDS,
    BridgeProcess,
    Health,
    cpu_seconds,
    least_squares_slope,
    rss_mib,
    scrape_memory_and_backlog,
)

if TYPE_CHECKING:
    from bench.soak.driver import SoakSettings


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_mib: float
    trio_tasks: int
    asyncio_tasks: int
    sessions: int
    streams: int
    phase: str
    """``churn`` while sessions come and go, ``drain`` after the deadline."""
    heap: dict[str, float] = field(default_factory=dict)
    """The bridge's heap split (bridge.memory via /metrics): ``python_blocks`` and C heap MiB."""
    cpu_pct: float = 0.0
    """The bridge's CPU since the previous sample, in % of one core."""
    backlog: int = 0
    """Callbacks, asyncio handles and room events queued in the bridge and not yet run."""


def growth_per_hour(points: list[tuple[str, float, float]], warmup_s: float) -> float | None:
    """Least-squares slope per hour of (phase, t_s, value) points: churn samples after the warm-up."""
    chosen = [(t, value) for phase, t, value in points if phase == "churn" and t >= warmup_s]
    slope = least_squares_slope([t for t, _ in chosen], [value for _, value in chosen])
    return None if slope is None else slope * 3600


@dataclass
class FloorResult:
    """The bare-SDK churn's samples (dicts as bench.soak.floor prints them) and its last line."""

    samples: list[dict[str, Any]]
    final: dict[str, Any]
    warmup_s: float

    def fit(self, value: Callable[[dict[str, Any]], float]) -> float | None:
        return growth_per_hour([(s["phase"], s["t_s"], value(s)) for s in self.samples], self.warmup_s)

    @property
    def idle_rss_mib(self) -> float:
        return float(self.samples[0]["rss_mib"])

    @property
    def final_rss_mib(self) -> float:
        return float(self.final["rss_mib"])

    @property
    def sessions_started(self) -> int:
        return int(self.final.get("sessions_started", 0))


@dataclass
class SoakResult:
    settings: SoakSettings
    idle: Health
    idle_rss_mib: float
    final: Health
    final_rss_mib: float
    samples: list[Sample]
    churn_s: float
    cycles: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    chunks_to_cloud: int = 0
    streams_without_audio: Counter[str] = field(default_factory=Counter)
    """Streams (by cycle kind) that received no room audio at all while they were attached."""
    bridge_log: str = ""
    floor: FloorResult | None = None
    join_ms: list[float] = field(default_factory=list)
    """How long each JoinRoom took at the client: what pacing connects under churn costs."""

    @property
    def tasks_returned(self) -> bool:
        return self.final.tasks == self.idle.tasks and self.final.active_sessions == 0

    def _fit(self, value: Callable[[Sample], float]) -> float | None:
        points = [(s.phase, s.t_s, value(s)) for s in self.samples]
        return growth_per_hour(points, self.settings.warmup)

    @property
    def rss_growth_mib_per_hour(self) -> float | None:
        return self._fit(lambda s: s.rss_mib)

    def heap_growth_per_hour(self, kind: str) -> float | None:
        """Fitted growth of one part of the heap split (MiB/hour, or blocks/hour for python_blocks)."""
        if not all(kind in s.heap for s in self.samples if s.phase == "churn"):
            return None
        return self._fit(lambda s: s.heap[kind])

    @property
    def trio_growth_per_hour(self) -> float | None:
        return self._fit(lambda s: s.trio_tasks)

    @property
    def asyncio_growth_per_hour(self) -> float | None:
        return self._fit(lambda s: s.asyncio_tasks)

    @property
    def fitted_span_s(self) -> float:
        chosen = [s.t_s for s in self.samples if s.phase == "churn" and s.t_s >= self.settings.warmup]
        return max(chosen) - min(chosen) if len(chosen) > 1 else 0.0

    @property
    def rss_growth_over_run_mib(self) -> float | None:
        """The fitted RSS slope times the span it was fitted over: growth during the churn."""
        per_hour = self.rss_growth_mib_per_hour
        return None if per_hour is None else per_hour * self.fitted_span_s / 3600

    @property
    def ok(self) -> bool:
        return self.tasks_returned and not self.errors

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "settings": {
                "seconds": s.seconds,
                "sessions": s.sessions,
                "sample_every_s": s.sample_every_s,
                "idle_ttl_s": s.idle_ttl_s,
                "warmup_s": s.warmup,
                "seed": s.seed,
                "kinds": list(s.kinds),
            },
            "churn_s": self.churn_s,
            "samples": [sample.__dict__ for sample in self.samples],
            "idle": {
                "rss_mib": self.idle_rss_mib,
                "trio": self.idle.trio_tasks,
                "asyncio": self.idle.asyncio_tasks,
            },
            "final": {
                "rss_mib": self.final_rss_mib,
                "trio": self.final.trio_tasks,
                "asyncio": self.final.asyncio_tasks,
                "sessions": self.final.active_sessions,
                "sessions_started": self.final.sessions_started,
            },
            "fits_per_hour": {
                "rss_mib": self.rss_growth_mib_per_hour,
                "trio_tasks": self.trio_growth_per_hour,
                "asyncio_tasks": self.asyncio_growth_per_hour,
                **{f"heap_{kind}": self.heap_growth_per_hour(kind) for kind in HEAP_KINDS},
                "span_s": self.fitted_span_s,
            },
            "tasks_returned": self.tasks_returned,
            "cycles": dict(self.cycles),
            "outcomes": dict(self.outcomes),
            "streams_without_audio": dict(self.streams_without_audio),
            "chunks_to_cloud": self.chunks_to_cloud,
            "errors": self.errors,
            "ok": self.ok,
            "floor": None
            if self.floor is None
            else {
                "samples": self.floor.samples,
                "final": self.floor.final,
                "fits_per_hour": {
                    "rss_mib": self.floor.fit(lambda s: s["rss_mib"]),
                    **{
                        f"heap_{kind}": self.floor.fit(lambda s, kind=kind: s["heap"][kind])
                        for kind in HEAP_KINDS
                        if kind in self.floor.final["heap"]
                    },
                },
            },
        }


class Sampler:
    """Samples the bridge (see the module's docstring) until cancelled; ``phase`` is what the churn is
    at (``churn``, then ``drain`` after the deadline). ``on_sample`` sees each sample as it is taken."""

    def __init__(self, bridge: BridgeProcess, metrics_port: int, on_sample: Callable[[Sample], None]) -> None:
        self.bridge = bridge
        self.metrics_port = metrics_port
        self.on_sample = on_sample
        self.samples: list[Sample] = []
        self.phase = "churn"
        self.started = time.monotonic()

    async def run(self, every_s: float) -> None:
        bridge = self.bridge
        cpu_before, at_before = cpu_seconds(bridge.pid), time.monotonic()
        while True:
            health = await bridge.health()
            heap, backlog = await asyncio.to_thread(scrape_memory_and_backlog, self.metrics_port)
            cpu_now, at_now = cpu_seconds(bridge.pid), time.monotonic()
            cpu_pct = 100 * (cpu_now - cpu_before) / max(at_now - at_before, 1e-6)
            cpu_before, at_before = cpu_now, at_now
            sample = Sample(
                t_s=time.monotonic() - self.started,
                rss_mib=rss_mib(bridge.pid),
                trio_tasks=health.trio_tasks,
                asyncio_tasks=health.asyncio_tasks,
                sessions=health.active_sessions,
                streams=health.active_streams,
                phase=self.phase,
                heap=heap,
                cpu_pct=cpu_pct,
                backlog=backlog,
            )
            self.samples.append(sample)
            self.on_sample(sample)
            await asyncio.sleep(every_s)

    async def final(self, health: Health, running: asyncio.Task[None]) -> Sample:
        """The ``final`` sample, after every session left: ``health`` is the settled HealthCheck; RSS
        and the heap are read now, then the ``running`` sampling task is stopped and the sample kept
        last."""
        final_rss = rss_mib(self.bridge.pid)
        final_heap, final_backlog = await asyncio.to_thread(scrape_memory_and_backlog, self.metrics_port)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        sample = Sample(
            time.monotonic() - self.started,
            final_rss,
            health.trio_tasks,
            health.asyncio_tasks,
            health.active_sessions,
            health.active_streams,
            "final",
            final_heap,
            backlog=final_backlog,
        )
        self.samples.append(sample)
        return sample
