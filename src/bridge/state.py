"""What the gRPC handlers and the app share: the registry, health, counters, and the shutdown request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_asyncio
from grpclib.health.check import ServiceStatus

from . import diagnostics
from .config import BridgeConfig
from .metrics import BridgeMetrics
from .registry import SessionRegistry
from .rpc.server import BoundedHealth
from .version import VERSION

__all__ = ["BridgeState"]


@dataclass(eq=False)
class BridgeState:
    """What the handlers share: the registry, health, and process-wide counters."""

    config: BridgeConfig
    registry: SessionRegistry
    metrics: BridgeMetrics
    address: str = ""
    """Where the server listens: ``host:port`` or ``unix:/path``."""
    started_monotonic: float = field(default_factory=time.monotonic)
    metrics_port: int = 0
    active_streams: int = 0
    calls: int = 0
    _no_streams: trio.Event = field(default_factory=trio.Event)
    health: ServiceStatus = field(default_factory=ServiceStatus)
    health_service: BoundedHealth | None = None
    _shutdown: trio.Event = field(default_factory=trio.Event)
    _now: trio.Event = field(default_factory=trio.Event)

    def count_call(self, _stream: Any) -> None:
        self.calls += 1

    def stream_opened(self) -> None:
        self.active_streams += 1
        if self._no_streams.is_set():
            self._no_streams = trio.Event()

    def stream_closed(self) -> None:
        self.active_streams -= 1
        if self.active_streams == 0:
            self._no_streams.set()

    @property
    def shutdown_requested(self) -> bool:
        return self._shutdown.is_set()

    def request_shutdown(self, *, immediately: bool = False) -> None:
        """Drain, then stop; a second request (or ``immediately``) skips what is left of the drain."""
        if self._shutdown.is_set() or immediately:
            self._now.set()
        self._shutdown.set()

    def health_metadata(self) -> dict[str, str]:
        totals = self.metrics.totals()  # since start-up: ended sessions included
        return {
            "version": VERSION,
            "calls": str(self.calls),
            "sessions_started": str(self.registry.sessions_started),
            "joins_failed": str(self.registry.sessions_failed_to_join),
            "packets_lost": str(totals["lost"]),
            "queue_dropped_chunks": str(totals["queue_dropped_chunks"]),
            "playback_started": str(self.registry.playback.stats.started),
            "playback_completed": str(self.registry.playback.stats.completed),
            "playback_failed": str(self.registry.playback.stats.failed),
            "playback_cancelled": str(self.registry.playback.stats.cancelled),
            "trio_tasks": str(diagnostics.trio_task_count()),
            "asyncio_tasks": str(diagnostics.asyncio_task_count(trio_asyncio.current_loop.get())),
        }
