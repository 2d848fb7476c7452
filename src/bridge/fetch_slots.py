"""How many audio fetches run at once: a process-wide cap and a fair share per session.

A fetch holds its connection for as long as its audio plays (real-time pacing), so without a share
one user could hold every fetch the process allows. Beyond either cap a fetch is refused at once
(``too_many_fetches``) rather than queued: a queued playback would start late and out of order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .fetch_errors import FetchBusyError

__all__ = ["FetchSlots"]


class FetchSlots:
    """Counts running fetches per process and per requester (a session); single-threaded (asyncio side)."""

    def __init__(self, max_concurrent: int, max_per_requester: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_per_requester = max_per_requester
        self.active = 0
        self._by_requester: dict[object, int] = {}

    def held_by(self, requester: object) -> int:
        return self._by_requester.get(requester, 0)

    @contextmanager
    def hold(self, requester: object) -> Iterator[None]:
        """One slot for ``requester`` for the duration; FetchBusyError if none is free."""
        own = self.held_by(requester)
        if own >= self.max_per_requester:
            raise FetchBusyError(
                f"this session already fetches {own} audio files (BRIDGE_MAX_PLAYBACKS_PER_SESSION)"
            )
        if self.active >= self.max_concurrent:
            raise FetchBusyError(
                f"the bridge already fetches {self.active} audio files (BRIDGE_FETCH_MAX_CONCURRENT)"
            )
        self.active += 1
        self._by_requester[requester] = own + 1
        try:
            yield
        finally:
            self.active -= 1
            left = self._by_requester[requester] - 1
            if left:
                self._by_requester[requester] = left
            else:
                del self._by_requester[requester]
