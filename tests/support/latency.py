"""Room -> cloud latency from the test's own clocks: when a phone handed a packet to its SDK, and when
the cloud's StreamAudio call received the chunk carrying the same bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.testing.cloud import CloudStream


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def __str__(self) -> str:
        return f"n={self.count} p50={self.p50_ms:.1f} ms p99={self.p99_ms:.1f} ms max={self.max_ms:.1f} ms"


def room_to_cloud_latency(packets: list[bytes], sent_at: list[float], cloud: CloudStream) -> Latency:
    """Per packet (sequence byte + PCM, each PCM unique): arrival at ``cloud`` minus send time.

    Every packet must have arrived exactly once (a missing one raises: it is a loss, not a latency).
    """
    assert len(packets) == len(sent_at), (len(packets), len(sent_at))
    arrived = {chunk.pcm_data: at for chunk, at in zip(cloud.received, cloud.arrivals, strict=True)}
    missing = [i for i, p in enumerate(packets) if p[1:] not in arrived]
    assert not missing, f"{len(missing)} packets never reached the cloud (first: {missing[:5]})"
    delays = np.array([1000 * (arrived[p[1:]] - t) for p, t in zip(packets, sent_at, strict=True)])
    return Latency(
        len(delays),
        float(np.percentile(delays, 50)),
        float(np.percentile(delays, 99)),
        float(delays.max()),
    )
