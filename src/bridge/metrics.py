"""Prometheus metrics: what the bridge does, measured where it is cheap to measure.

Two kinds, on one registry:

- Event metrics (RPC latency, joins, playback outcomes) are prometheus_client objects updated when
  the event happens; those events are rare.
- Per-packet counts (frames and bytes each way, sequence-number losses, queue drops) are plain
  integers the sessions already keep; ``_SessionCollector`` sums their snapshots at scrape time (plus
  the totals of sessions that have ended), so the data path pays nothing for being measured. What
  it reads is a ``SessionSource`` the app wires (the registry): never a session's internals.

Scrapes run in the Trio thread (metrics_server.py), so reading session state needs no locks.
The playback metric names are the ones the cloud team built dashboards around (wire contract).

The registry also carries prometheus_client's standard ``process_*``, ``python_gc_*`` and
``python_info`` families, ``livekit_bridge_build_info`` and the CPU split by thread group
(threads.py), so the usual process dashboards and alerts work on the bridge as they are.
"""

from __future__ import annotations

import platform
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Protocol

import trio_asyncio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import diagnostics, memory
from .livekit_io.pacing import native_memory_gate
from .playback import ErrorCode
from .session.snapshot import COUNTER_FIELDS, SessionSnapshot
from .threads import ThreadCpu
from .version import __version__

__all__ = ["BridgeMetrics", "SessionSource", "SessionTotals"]

_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PLAYBACK_MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)
_FIRST_FRAME_MS_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class SessionSource(Protocol):
    """Where the metrics find the live sessions' numbers (the registry)."""

    capacity: int

    def snapshots(self) -> Iterable[SessionSnapshot]: ...


class SessionTotals:
    """Per-packet counters of sessions that have ended, kept so counters never go backwards."""

    FIELDS = COUNTER_FIELDS

    def __init__(self) -> None:
        self.values: Tally[str] = Tally()

    def add(self, snapshot: SessionSnapshot) -> None:
        self.values.update(snapshot.counts())


class _SessionCollector(Collector):
    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        metrics = self._metrics
        source = metrics.source
        sessions = list(source.snapshots()) if source is not None else []
        totals = metrics.totals(sessions)

        yield GaugeMetricFamily("livekit_bridge_sessions", "Live sessions.", value=len(sessions))
        if source is not None:
            yield GaugeMetricFamily(
                "livekit_bridge_capacity_sessions",
                "Sessions this bridge takes at most (BRIDGE_MAX_SESSIONS or the sizing rule).",
                value=source.capacity,
            )
            yield GaugeMetricFamily(
                "livekit_bridge_load",
                "Live sessions / capacity: 1 means full (JoinRoom answers RESOURCE_EXHAUSTED).",
                value=len(sessions) / source.capacity,
            )
        yield GaugeMetricFamily(
            "livekit_bridge_streams",
            "Sessions with an attached StreamAudio call.",
            value=sum(s.has_stream for s in sessions),
        )
        yield GaugeMetricFamily(
            "livekit_bridge_playbacks",
            "PlayAudio calls playing now.",
            value=sum(s.playing for s in sessions),
        )
        tasks = GaugeMetricFamily(
            "livekit_bridge_tasks", "Live tasks in the process, by side.", labels=["side"]
        )
        tasks.add_metric(["trio"], diagnostics.trio_task_count())
        tasks.add_metric(["asyncio"], diagnostics.asyncio_task_count(trio_asyncio.current_loop.get()))
        yield tasks
        per_session = [s.trio_tasks for s in sessions]
        per = GaugeMetricFamily(
            "livekit_bridge_session_trio_tasks", "Trio tasks inside one session's nursery.", labels=["stat"]
        )
        per.add_metric(["max"], max(per_session, default=0))
        per.add_metric(["mean"], sum(per_session) / len(per_session) if per_session else 0.0)
        yield per
        depth = GaugeMetricFamily(
            "livekit_bridge_cloud_queue_chunks",
            "Chunks waiting in sessions' room->cloud queues.",
            labels=["stat"],
        )
        depth.add_metric(["sum"], sum(s.queue_depth for s in sessions))
        depth.add_metric(["max"], max((s.queue_depth for s in sessions), default=0))
        yield depth

        def counter(name: str, doc: str, value: int) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter(
            "livekit_bridge_cloud_queue_dropped_chunks",
            "Room->cloud chunks dropped (oldest first) because a cloud stream fell behind.",
            totals["queue_dropped_chunks"],
        )
        yield counter(
            "livekit_bridge_cloud_queue_dropped_bytes",
            "Bytes of those dropped chunks.",
            totals["queue_dropped_bytes"],
        )
        seq = CounterMetricFamily(
            "livekit_bridge_data_packets_sequence",
            "Phone data packets by what their sequence byte says.",
            labels=["outcome"],
        )
        for outcome in ("lost", "reordered", "duplicates"):
            seq.add_metric([outcome], totals[outcome])
        yield seq
        yield counter(
            "livekit_bridge_data_packets_ignored",
            "Data packets from participants other than the session's target_identity.",
            totals["data_packets_ignored"],
        )
        unnamed = CounterMetricFamily(
            "livekit_bridge_data_packets_unnamed",
            "Data packets that arrived before the SDK could name their sender (a phone's first seconds "
            "in a room), by outcome: released to the cloud once it did, or expired.",
            labels=["outcome"],
        )
        unnamed.add_metric(["released"], totals["unnamed_released"])
        unnamed.add_metric(["expired"], totals["unnamed_expired"])
        yield unnamed
        frames = CounterMetricFamily(
            "livekit_bridge_frames",
            "Audio chunks moved, by direction and stage.",
            labels=["direction", "stage"],
        )
        frames.add_metric(["room_to_cloud", "data_packet_in"], totals["data_packets"])
        frames.add_metric(["room_to_cloud", "track_chunk_in"], totals["track_chunks"])
        frames.add_metric(["room_to_cloud", "sent"], totals["chunks_to_cloud"])
        frames.add_metric(["cloud_to_room", "received"], totals["chunks_from_cloud"])
        frames.add_metric(["cloud_to_room", "rejected"], totals["rejected_chunks"])
        frames.add_metric(["cloud_to_room", "dropped_track_busy"], totals["dropped_track_busy"])
        yield frames
        data = CounterMetricFamily(
            "livekit_bridge_pcm_bytes", "PCM bytes moved, by direction.", labels=["direction"]
        )
        data.add_metric(["room_to_cloud_in"], totals["data_bytes"])
        data.add_metric(["room_to_cloud_sent"], totals["bytes_to_cloud"])
        data.add_metric(["cloud_to_room"], totals["bytes_from_cloud"])
        yield data
        yield counter(
            "livekit_bridge_cloud_pcm_skipped_samples",
            "Cloud PCM samples skipped to stay real time after waiting for a new track's publication.",
            totals["samples_skipped_catching_up"],
        )
        backlog = GaugeMetricFamily(
            "livekit_bridge_callback_backlog",
            "Work queued and not yet run: native-thread callbacks for Trio, asyncio handles, and SDK "
            "events for rooms (sum over sessions). Growth means the process is behind.",
            labels=["queue"],
        )
        for queue, waiting in diagnostics.callback_backlog(trio_asyncio.current_loop.get()).items():
            backlog.add_metric([queue], waiting)
        backlog.add_metric(["room_events"], sum(s.pending_room_events for s in sessions))
        yield backlog
        heap = memory.heap_usage()
        yield GaugeMetricFamily(
            "livekit_bridge_python_allocated_blocks",
            "Blocks the Python interpreter has allocated (grows only when Python objects are kept).",
            value=heap.pop("python_blocks"),
        )
        if heap:
            c_heap = GaugeMetricFamily(
                "livekit_bridge_c_heap_bytes",
                "glibc heap over all arenas: in use, freed but kept (fragmentation), mmap-ed blocks.",
                labels=["kind"],
            )
            for kind, value in heap.items():
                c_heap.add_metric([kind.removeprefix("malloc_")], value)
            yield c_heap


def build_labels() -> dict[str, str]:
    """What ``livekit_bridge_build_info`` says: this bridge's, Python's and the livekit SDK's versions."""

    def version(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "version": __version__,
        "python": platform.python_version(),
        "livekit_sdk": version("livekit"),
    }


class _BuildAndThreadsCollector(Collector):
    def __init__(self) -> None:
        self._build = build_labels()
        self._threads = ThreadCpu() if ThreadCpu.available() else None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        info = GaugeMetricFamily(
            "livekit_bridge_build_info",
            "Always 1; the labels say which bridge, Python and livekit SDK are running.",
            labels=list(self._build),
        )
        info.add_metric(list(self._build.values()), 1)
        yield info
        gate = native_memory_gate()
        yield CounterMetricFamily(
            "livekit_bridge_room_connects_paced",
            "Room connects that waited for the SDK's native teardown of rooms already left to catch up "
            "(C heap in use above its allowance: livekit_io/pacing.py).",
            value=gate.paced_connects,
        )
        yield CounterMetricFamily(
            "livekit_bridge_room_connect_pacing_seconds",
            "Time those connects waited (what fast churn costs joins).",
            value=gate.paced_seconds,
        )
        if self._threads is None:
            return
        seconds, counts = self._threads.read()
        cpu = CounterMetricFamily(
            "livekit_bridge_thread_cpu_seconds",
            "CPU time (user + system) by thread group: python_main runs all of the bridge's Python code, "
            "tokio the livekit SDK's native runtime, webrtc_* libwebrtc's threads.",
            labels=["group"],
        )
        threads = GaugeMetricFamily("livekit_bridge_threads", "Live OS threads by group.", labels=["group"])
        for group, value in seconds.items():
            cpu.add_metric([group], value)
            threads.add_metric([group], counts[group])
        yield cpu
        yield threads


class BridgeMetrics:
    """Every metric of one bridge process, on its own registry (tests can run several bridges)."""

    def __init__(self) -> None:
        self.prometheus = CollectorRegistry()
        self.source: SessionSource | None = None
        self.ended = SessionTotals()
        reg = self.prometheus
        self.rpc_seconds = Histogram(
            "livekit_bridge_rpc_duration_seconds",
            "Time to answer a unary RPC.",
            ["method"],
            buckets=_RPC_BUCKETS,
            registry=reg,
        )
        self.rpcs = Counter(
            "livekit_bridge_rpcs", "RPCs answered, by gRPC status.", ["method", "code"], registry=reg
        )
        self.auth_rejected = Counter(
            "livekit_bridge_auth_rejected",
            "Calls refused for a missing or wrong bearer token.",
            ["method"],
            registry=reg,
        )
        self.joins = Counter("livekit_bridge_joins", "JoinRoom outcomes.", ["result"], registry=reg)
        self.sessions_closed = Counter(
            "livekit_bridge_sessions_closed", "Sessions ended, by reason.", ["reason"], registry=reg
        )
        self.playback_started_total = Counter("server_playback_started", "Playbacks started.", registry=reg)
        self.playback_completed = Counter(
            "server_playback_completed", "Playbacks that played to the end.", registry=reg
        )
        self.playback_failed = Counter(
            "server_playback_failed", "Playbacks that failed.", ["code"], registry=reg
        )
        self.playback_cancelled = Counter(
            "server_playback_cancelled",
            "Playbacks stopped, interrupted or ended with their session.",
            ["code"],
            registry=reg,
        )
        self.playback_bridge_errors = Counter(
            "server_playback_bridge_error", "Playbacks that failed by a bug in the bridge.", registry=reg
        )
        self.playback_duration_ms = Histogram(
            "server_playback_duration_ms",
            "Length of audio played to completion, in milliseconds.",
            buckets=_PLAYBACK_MS_BUCKETS,
            registry=reg,
        )
        self.playback_first_frame_ms = Histogram(
            "server_playback_first_frame_latency_ms",
            "PlayAudio accepted -> first frame handed to the track, in milliseconds.",
            buckets=_FIRST_FRAME_MS_BUCKETS,
            registry=reg,
        )
        reg.register(_SessionCollector(self))
        reg.register(_BuildAndThreadsCollector())
        # The standard families (process_cpu_seconds_total, process_resident_memory_bytes,
        # process_open_fds, python_gc_*, python_info): fresh instances on this registry.
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)

    def totals(self, live: Iterable[SessionSnapshot] | None = None) -> Tally[str]:
        """Per-packet counts since start-up: sessions that ended plus the live ones."""
        if live is None:
            live = self.source.snapshots() if self.source is not None else []
        totals = Tally(self.ended.values)
        for snapshot in live:
            totals.update(snapshot.counts())
        return totals

    def attach(self, source: SessionSource) -> None:
        self.source = source

    def session_ended(self, snapshot: SessionSnapshot, reason: str) -> None:
        self.ended.add(snapshot)
        self.sessions_closed.labels(reason).inc()

    # --- playback.PlaybackObserver ------------------------------------------------------------------

    def playback_started(self) -> None:
        self.playback_started_total.inc()

    def playback_first_frame(self, latency_ms: float) -> None:
        self.playback_first_frame_ms.observe(latency_ms)

    def playback_ended(self, code: str | None, duration_ms: int, *, cancelled: bool) -> None:
        if code is None:
            self.playback_completed.inc()
            self.playback_duration_ms.observe(duration_ms)
        elif cancelled:
            self.playback_cancelled.labels(code).inc()
        else:
            self.playback_failed.labels(code).inc()
            if code == ErrorCode.INTERNAL:
                self.playback_bridge_errors.inc()


class RpcTimer:
    """Times one RPC into ``livekit_bridge_rpc_duration_seconds`` / ``livekit_bridge_rpcs``."""

    def __init__(self, metrics: BridgeMetrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._start = time.perf_counter()

    def done(self, code: str, *, timed: bool = True) -> None:
        if timed:
            self._metrics.rpc_seconds.labels(self._method).observe(time.perf_counter() - self._start)
        self._metrics.rpcs.labels(self._method, code).inc()
