"""The total time a fetch may spend waiting for its server, measured so real-time playback is free.

Playback paces the download: the decoder asks for more bytes only when the track has room, so a
5-minute file takes 5 minutes to download, and plain wall-clock time cannot tell it from a server
that drips a byte every few seconds. What tells them apart is how long the fetch *waits for the
server* (name lookup, connect, response headers, each body read) against how much audio the server
has delivered: a server at least as fast as real time never waits longer than the audio it sent.
A fetch fails with ``timeout`` once its waits exceed ``slack_s`` plus the seconds of audio delivered;
time spent waiting for the track (real-time playout) is not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .fetch_errors import FetchTimeoutError

__all__ = ["ServerWaitBudget"]


class ServerWaitBudget:
    """Waits for one fetch's server (asyncio side), cut off once they exceed slack + audio delivered."""

    def __init__(
        self,
        slack_s: float,
        audio_delivered_s: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slack_s = slack_s
        self._audio_delivered_s = audio_delivered_s
        self._clock = clock
        self.waited_s = 0.0

    def remaining_s(self) -> float:
        return self._slack_s + self._audio_delivered_s() - self.waited_s

    @asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """Wrap one wait for the server; raises FetchTimeoutError when the budget runs out in it."""
        remaining = self.remaining_s()
        if remaining <= 0:
            raise self._exhausted()
        started = self._clock()
        expired = False
        try:
            async with asyncio.timeout(remaining) as deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise
            expired = True
        finally:
            self.waited_s += self._clock() - started
        if expired:
            raise self._exhausted()

    def _exhausted(self) -> FetchTimeoutError:
        return FetchTimeoutError(
            f"waited {self.waited_s:.1f} s for the server while it delivered "
            f"{self._audio_delivered_s():.1f} s of audio "
            f"(slack {self._slack_s:g} s, BRIDGE_FETCH_TOTAL_TIMEOUT_S)"
        )
