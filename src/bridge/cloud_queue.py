"""The one bounded queue between a session's room and its cloud stream.

Producers are LiveKit callbacks (data packets) and the track readers; the consumer is the send loop
of whichever StreamAudio call is attached. All of them run on the asyncio side of the process, so
``put_nowait`` is a plain function and ``get_batch`` an asyncio coroutine: no Trio/asyncio round trip
per packet.

Drop policy: the queue holds at most ``max_bytes`` of PCM (``BRIDGE_CLOUD_QUEUE_MS`` of 16 kHz mono).
When a new chunk does not fit, the OLDEST chunks are dropped and counted: for live transcription fresh
audio is worth more than stale audio, and a cloud that stops reading must cost bounded memory. While
no stream is attached the queue keeps filling the same way, so a stream opened right after JoinRoom
loses nothing and one opened after a long gap gets the most recent audio.

A consumer parked in ``get_batch`` may offer to take a chunk at once (``take_now``): then a chunk that
arrives while nothing is queued goes straight to it from ``put_nowait`` (the gRPC stream writes it
from the packet's callback: rpc/direct_send.py), and is queued only if the consumer declines it.

After ``close()`` the queue never accepts anything again: a late callback is ignored and counted in
``rejected_after_close`` (the older bridge crashed every session writing into a closed queue).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CloudAudioQueue", "QueueClosed", "QueuedChunk"]


class QueueClosed(Exception):
    """The queue was closed: its session is ending."""


@dataclass(frozen=True, slots=True)
class QueuedChunk:
    pcm: bytes
    timestamp_ms: int
    notice: str = ""
    """A notice for the client instead of audio (``pcm`` empty): see ``put_notice``."""


class CloudAudioQueue:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._chunks: deque[QueuedChunk] = deque()
        self._notices: list[QueuedChunk] = []
        self._bytes = 0
        self._burst_room = 0
        """Room beyond ``max_bytes`` a burst was given, kept until the consumer takes a batch."""
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._take_now: Callable[[QueuedChunk], bool] | None = None
        self.enqueued = 0
        self.taken_at_once = 0
        """Chunks the parked consumer took from ``put_nowait`` itself (counted in ``enqueued`` too)."""
        self.dropped_chunks = 0
        self.dropped_bytes = 0
        self.rejected_after_close = 0

    @property
    def depth(self) -> int:
        return len(self._chunks)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, pcm: bytes, timestamp_ms: int, *, extra_bytes: int = 0) -> None:
        """Queue a chunk, dropping the oldest ones if it does not fit. Never blocks, never raises.

        ``extra_bytes``: room beyond ``max_bytes`` for a burst of audio that arrives all at once
        (packets held until their sender was named: session/unnamed.py), so it is not dropped for
        being a burst. The room lasts until the consumer takes a batch: the live packets that follow
        the burst before the send loop runs (a busy loop runs a queue of SDK events in one go) must
        not push it out either. Then the bound is ``max_bytes`` again.
        """
        if self._closed:
            self.rejected_after_close += 1
            return
        if extra_bytes > self._burst_room:
            self._burst_room = extra_bytes
        limit = self.max_bytes + self._burst_room
        if len(pcm) > limit:  # a single oversized chunk keeps its newest part
            dropped = len(pcm) - limit
            dropped += dropped % 2  # whole samples, and never more than the limit
            pcm = pcm[dropped:]
            self.dropped_bytes += dropped
        while self._chunks and self._bytes + len(pcm) > limit:
            old = self._chunks.popleft()
            self._bytes -= len(old.pcm)
            self.dropped_chunks += 1
            self.dropped_bytes += len(old.pcm)
        chunk = QueuedChunk(pcm, timestamp_ms)
        self.enqueued += 1
        # A consumer still parked has nothing queued before this chunk: it may take it at once.
        waiter, take_now = self._waiter, self._take_now
        if take_now is not None and waiter is not None and not waiter.done() and take_now(chunk):
            self.taken_at_once += 1
            return
        self._chunks.append(chunk)
        self._bytes += len(pcm)
        self._wake()

    def put_notice(self, notice: str, timestamp_ms: int) -> None:
        """Queue a notice for the client (e.g. "draining"). Notices take no room and are never dropped
        for room audio; the next batch carries them first."""
        if self._closed:
            self.rejected_after_close += 1
            return
        self._notices.append(QueuedChunk(b"", timestamp_ms, notice))
        self._wake()

    async def get_batch(self, take_now: Callable[[QueuedChunk], bool] | None = None) -> list[QueuedChunk]:
        """Wait for at least one chunk, then take every queued chunk (one wake-up per burst).

        ``take_now(chunk)``, while waiting: offered each chunk that arrives before it returns; True
        means the consumer has taken it (it is not queued), False queues it as usual. It must not
        raise, and runs in the producer's callback.
        """
        while not self._chunks and not self._notices:
            if self._closed:
                raise QueueClosed
            if self._waiter is not None:
                raise RuntimeError("CloudAudioQueue has one consumer at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            self._take_now = take_now
            try:
                await self._waiter
            finally:
                self._waiter = None
                self._take_now = None
        batch = [*self._notices, *self._chunks]
        self._notices.clear()
        self._chunks.clear()
        self._bytes = 0
        self._burst_room = 0
        return batch

    def seal(self) -> None:
        """Refuse every later put but keep what is queued: the consumer gets it, then QueueClosed."""
        self._closed = True
        self._wake()

    def close(self) -> None:
        """Refuse every later put, drop what is queued, and wake the consumer with QueueClosed."""
        self._closed = True
        self._chunks.clear()
        self._notices.clear()
        self._bytes = 0
        self._burst_room = 0
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
