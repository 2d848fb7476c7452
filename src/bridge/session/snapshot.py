"""A session's state as numbers, for metrics and HealthCheck: read at scrape time, never pushed.

Counters only grow over a session's life; the registry adds an ended session's last snapshot to the
process totals, so process counters never go backwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["COUNTER_FIELDS", "SessionSnapshot"]


@dataclass(frozen=True)
class SessionSnapshot:
    # counters
    data_packets: int = 0
    data_bytes: int = 0
    data_packets_ignored: int = 0
    unnamed_released: int = 0
    unnamed_expired: int = 0
    track_chunks: int = 0
    chunks_to_cloud: int = 0
    bytes_to_cloud: int = 0
    chunks_from_cloud: int = 0
    bytes_from_cloud: int = 0
    rejected_chunks: int = 0
    dropped_track_busy: int = 0
    samples_skipped_catching_up: int = 0
    queue_dropped_chunks: int = 0
    queue_dropped_bytes: int = 0
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0
    # gauges
    queue_depth: int = 0
    queued_bytes: int = 0
    has_stream: bool = False
    playing: int = 0
    trio_tasks: int = 0
    pending_room_events: int = 0

    def counts(self) -> dict[str, int]:
        values = asdict(self)
        return {name: values[name] for name in COUNTER_FIELDS}


COUNTER_FIELDS = (
    "data_packets",
    "data_bytes",
    "data_packets_ignored",
    "unnamed_released",
    "unnamed_expired",
    "track_chunks",
    "chunks_to_cloud",
    "bytes_to_cloud",
    "chunks_from_cloud",
    "bytes_from_cloud",
    "rejected_chunks",
    "dropped_track_busy",
    "samples_skipped_catching_up",
    "queue_dropped_chunks",
    "queue_dropped_bytes",
    "lost",
    "reordered",
    "duplicates",
)
