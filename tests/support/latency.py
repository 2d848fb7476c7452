"""Room -> cloud latency from the test's own clocks: when a phone handed a packet to its SDK, and when
the cloud's StreamAudio call received the chunk carrying the same bytes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio
from trio_asyncio import aio_as_trio

from bridge.testing.cloud import CloudStream
from support import participants
from support.flows import wait_until


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


class QueueWatch:
    """Samples a session's cloud-queue depth while it runs; ``deepest`` is the most it held."""

    def __init__(self, session: Any) -> None:
        self.session, self.deepest = session, 0

        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            while True:
                self.deepest = max(self.deepest, self.session.mic.queue.depth)
                await trio.sleep(0.005)


async def measured_phase(
    phone: Any,
    packets: list[bytes],
    interval_s: float,
    cloud: CloudStream,
    session: Any,
    during: Callable[[], Awaitable[object]] | None = None,
    sent_at: list[float] | None = None,
) -> tuple[Latency, int]:
    """The phone sends ``packets`` (reliable, ``interval_s`` apart) to ``session``, with ``during``
    running alongside (a fault; the phase lasts until both are done); returns the packets'
    room->cloud latency and the session's deepest queue meanwhile."""
    sent_at = [] if sent_at is None else sent_at  # when each packet was sent (monotonic)
    watch = QueueWatch(session)
    async with trio.open_nursery() as phase:
        phase.start_soon(watch.run)
        if during is not None:
            phase.start_soon(during)
        await aio_as_trio(participants.send_packets)(phone, packets, interval_s, True, sent_at)
        tail = [p[1:] for p in packets[-3:]]
        await wait_until(
            lambda: all(pcm in {c.pcm_data for c in cloud.received[-50:]} for pcm in tail),
            what="the phase's last packets at the cloud",
        )
        watch.scope.cancel()
    return room_to_cloud_latency(packets, sent_at, cloud), watch.deepest
