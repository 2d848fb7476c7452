"""Server-side playback: fetch an audio URL, decode while it downloads, play it in real time on a track.

``play`` runs on the asyncio side (httpx, the SDK's AudioSource) as ONE coroutine per playback,
started by the session's Trio task for that playback. It emits STARTED when the first frame is handed
to the track, PROGRESS every ``progress_ms`` with the position actually played out, and returns the
audio's duration only after the last frame has played; every failure is a ``PlaybackError`` with a
stable code. The terminal event (COMPLETED or FAILED) is the caller's to send, exactly once.

The older bridge sent COMPLETED when *decoding* finished, into an unbounded queue. Here nothing runs
ahead of real time by more than the AudioSource's queue (``BRIDGE_PUBLISH_QUEUE_MS``): ``capture_frame``
waits, the HTTP download waits with it, and memory stays bounded whatever the file's length.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .audio import FrameChunker, StreamResampler, apply_gain
from .audio.decode import SNIFF_BYTES, DecodedAudio, DecodeError, UnsupportedFormatError, open_decoder
from .fetch import Fetcher
from .fetch_errors import (
    BadStatusError,
    FetchBusyError,
    FetchError,
    FetchTimeoutError,
    HostNotAllowedError,
    ResponseTooLargeError,
    UnsupportedEncodingError,
)
from .livekit_io.outbound import TrackPublisher, TrackPublishError

__all__ = [
    "ErrorCode",
    "PlaybackError",
    "PlaybackEvent",
    "PlaybackEventKind",
    "PlaybackEvents",
    "PlaybackLimits",
    "PlaybackObserver",
    "PlaybackRequest",
    "PlaybackServices",
    "PlaybackStats",
    "play",
]


_PIECE_BYTES = 4096


class ErrorCode:
    """The stable codes that start a FAILED event's ``error`` ("code: detail") and fill metadata["code"]."""

    HOST_NOT_ALLOWED = "host_not_allowed"
    FETCH_FAILED = "fetch_failed"
    HTTP_STATUS = "http_status"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    UNSUPPORTED_FORMAT = "unsupported_format"
    DECODE_FAILED = "decode_failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    SESSION_CLOSED = "session_closed"
    TOO_MANY_PLAYBACKS = "too_many_playbacks"
    TOO_MANY_FETCHES = "too_many_fetches"
    PUBLISH_FAILED = "publish_failed"
    INTERNAL = "internal"

    CANCELLED = frozenset({STOPPED, INTERRUPTED, SESSION_CLOSED})
    """Codes that mean "ended on purpose", counted as cancelled rather than failed."""


class PlaybackError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class PlaybackRequest:
    request_id: str
    url: str
    volume: float
    track_id: int
    stop_other: bool = False


@dataclass(frozen=True)
class PlaybackLimits:
    """What a playback may play (what it may fetch is ``fetch.FetchLimits``)."""

    max_duration_ms: int = 300_000
    progress_ms: int = 250
    chunk_ms: int = 40
    """Audio handed to the track per ``capture_frame`` call: small enough that a stop drops little."""


_FETCH_ERROR_CODES: dict[type[FetchError], str] = {
    HostNotAllowedError: ErrorCode.HOST_NOT_ALLOWED,
    FetchBusyError: ErrorCode.TOO_MANY_FETCHES,
    FetchTimeoutError: ErrorCode.TIMEOUT,
    ResponseTooLargeError: ErrorCode.TOO_LARGE,
    UnsupportedEncodingError: ErrorCode.UNSUPPORTED_FORMAT,
    BadStatusError: ErrorCode.HTTP_STATUS,
}
"""Every other FetchError is ``fetch_failed``."""


class PlaybackEventKind(enum.Enum):
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PlaybackEvent:
    """One event of a playback, as the domain knows it (rpc/service.py turns it into a PlayAudioEvent)."""

    kind: PlaybackEventKind
    request_id: str
    duration_ms: int = 0
    position_ms: int = 0
    code: str = ""
    """FAILED only: the stable code (ErrorCode)."""
    detail: str = ""
    """FAILED only: what went wrong, for people."""


@dataclass(eq=False)
class PlaybackEvents:
    """The event stream of one playback (asyncio side): STARTED, PROGRESS…, then exactly one terminal.

    A PROGRESS not yet read is replaced by a newer one, so a slow reader costs no memory.
    """

    request_id: str
    _queue: deque[PlaybackEvent] = field(default_factory=deque)
    _waiter: asyncio.Future[None] | None = None
    finished: bool = False
    started_at: float | None = None
    """``time.monotonic()`` when the first frame went to the track (for the first-frame latency)."""
    terminal: PlaybackEvent | None = None
    position_ms: int = 0
    """The last position reported."""

    @property
    def failure_code(self) -> str | None:
        """The FAILED event's code, once there is one (None while running and after COMPLETED)."""
        terminal = self.terminal
        return terminal.code if terminal is not None and terminal.kind is PlaybackEventKind.FAILED else None

    def emit_started(self, duration_ms: int = 0) -> None:
        self.started_at = time.monotonic()
        self._put(PlaybackEvent(PlaybackEventKind.STARTED, self.request_id, duration_ms=duration_ms))

    def emit_progress(self, position_ms: int, duration_ms: int) -> None:
        self.position_ms = position_ms
        event = PlaybackEvent(
            PlaybackEventKind.PROGRESS, self.request_id, position_ms=position_ms, duration_ms=duration_ms
        )
        if self._queue and self._queue[-1].kind is PlaybackEventKind.PROGRESS:
            self._queue[-1] = event
        else:
            self._put(event)

    def complete(self, duration_ms: int) -> bool:
        return self._finish(
            PlaybackEvent(
                PlaybackEventKind.COMPLETED, self.request_id, duration_ms=duration_ms, position_ms=duration_ms
            )
        )

    def fail(self, code: str, detail: str, position_ms: int = 0) -> bool:
        return self._finish(
            PlaybackEvent(
                PlaybackEventKind.FAILED, self.request_id, position_ms=position_ms, code=code, detail=detail
            )
        )

    def _finish(self, event: PlaybackEvent) -> bool:
        """Queue the terminal event; False (and nothing queued) if there already is one."""
        if self.finished:
            return False
        self.finished = True
        self.terminal = event
        self._put(event)
        return True

    def _put(self, event: PlaybackEvent) -> None:
        self._queue.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[PlaybackEvent]:
        """Yield events until (and including) the terminal one."""
        while True:
            while not self._queue:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            event = self._queue.popleft()
            yield event
            if event is self.terminal:
                return


class _TrackWriter:
    """Decoded blocks -> mono int16 at the track's rate, with volume -> the track, in real time."""

    def __init__(
        self,
        publisher: TrackPublisher,
        owner: object,
        volume: float,
        events: PlaybackEvents,
        limits: PlaybackLimits,
    ) -> None:
        self._publisher = publisher
        self._owner = owner
        self._volume = volume
        self._events = events
        self._limits = limits
        self._rate = publisher.sample_rate
        self._resampler: StreamResampler | None = None
        self._chunker = FrameChunker(self._rate * limits.chunk_ms // 1000)
        self._max_samples = limits.max_duration_ms * self._rate // 1000
        self._last_progress = 0.0
        self.samples_written = 0
        self.first_frame_at: float | None = None
        self.expected_ms = 0
        """The audio's length when the file states it (WAV), else 0 = not known yet."""

    @property
    def written_ms(self) -> int:
        return self.samples_written * 1000 // self._rate

    @property
    def position_ms(self) -> int:
        """Audio of this playback that has actually played out."""
        return max(0, self.written_ms - round(self._publisher.queued_seconds * 1000))

    async def write(self, block: DecodedAudio) -> None:
        if self._resampler is None:
            self._resampler = StreamResampler(block.rate, self._rate, quality="HQ")
        mono = block.samples.mean(axis=1) if block.samples.shape[1] > 1 else block.samples[:, 0]
        pcm = np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)
        await self._push(self._resampler.push(pcm))

    async def flush(self) -> None:
        if self._resampler is not None:
            await self._push(self._resampler.flush())
        rest = self._chunker.flush(pad=True)
        if rest is not None:
            await self._capture(rest)

    async def _push(self, samples: npt.NDArray[np.int16]) -> None:
        for frame in self._chunker.push(apply_gain(samples, self._volume)):
            await self._capture(frame)

    async def _capture(self, frame: npt.NDArray[np.int16]) -> None:
        room_left = self._max_samples - self.samples_written
        if room_left <= 0:
            raise PlaybackError(ErrorCode.TOO_LONG, f"audio longer than {self._limits.max_duration_ms} ms")
        frame = frame[:room_left]
        if not await self._publisher.capture(frame, owner=self._owner):
            raise PlaybackError(ErrorCode.INTERRUPTED, "the track was taken over")
        self.samples_written += len(frame)
        now = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = now
            self._last_progress = now
            self._events.emit_started(self.expected_ms)
        elif now - self._last_progress >= self._limits.progress_ms / 1000:
            self._last_progress = now
            self._events.emit_progress(self.position_ms, self.expected_ms)

    async def played_out(self) -> None:
        """Wait until everything written has played, reporting PROGRESS meanwhile."""
        interval = self._limits.progress_ms / 1000
        while (queued := self._publisher.queued_seconds) > 0:
            await asyncio.sleep(min(queued, interval))
            self._last_progress = time.monotonic()
            self._events.emit_progress(self.position_ms, self.expected_ms)


async def play(
    request: PlaybackRequest,
    events: PlaybackEvents,
    client: Fetcher,
    publisher: TrackPublisher,
    limits: PlaybackLimits,
    owner: object,
    requester: object,
) -> int:
    """Play ``request`` on ``publisher``; return the audio's duration in ms once it has played out.

    ``owner`` is what holds the track meanwhile; the fetch counts against ``requester``'s share (the
    session) and its wait budget is credited with the audio written to the track. Raises PlaybackError;
    cancellation (stop, interrupt, session end) propagates as CancelledError.
    """
    writer = _TrackWriter(publisher, owner, request.volume, events, limits)
    try:
        async with client.open(
            request.url, requester=requester, audio_delivered_s=lambda: writer.written_ms / 1000
        ) as body:
            await _decode_into(body, writer, limits)
        await writer.flush()
    except PlaybackError as err:
        if err.code == ErrorCode.TOO_LONG:
            await writer.played_out()  # what fitted under the limit still plays to its end
        raise
    except TrackPublishError as err:
        raise PlaybackError(ErrorCode.PUBLISH_FAILED, str(err)) from None
    except FetchError as err:
        code = _FETCH_ERROR_CODES.get(type(err), ErrorCode.FETCH_FAILED)
        raise PlaybackError(code, str(err)) from None
    except UnsupportedFormatError as err:
        raise PlaybackError(ErrorCode.UNSUPPORTED_FORMAT, str(err)) from None
    except DecodeError as err:
        raise PlaybackError(ErrorCode.DECODE_FAILED, str(err)) from None
    await writer.played_out()
    return writer.written_ms


async def _decode_into(pieces: AsyncIterator[bytes], writer: _TrackWriter, limits: PlaybackLimits) -> None:
    """Decode the body as it arrives (the fetch enforces the byte limit on it)."""
    decoder = None
    head = bytearray()
    received = 0
    async for piece in pieces:
        received += len(piece)
        if decoder is None:
            head += piece
            if len(head) < SNIFF_BYTES:
                continue
            decoder, piece = open_decoder(bytes(head)), bytes(head)
        # Decode what arrived in small slices: the first frame goes out after the first few KiB
        # of a fast download, not after its first 64 KiB have been decoded.
        for start in range(0, len(piece), _PIECE_BYTES):
            blocks = decoder.push(piece[start : start + _PIECE_BYTES])
            if not writer.expected_ms and decoder.declared_duration_ms:  # known once the header is read
                writer.expected_ms = min(decoder.declared_duration_ms, limits.max_duration_ms)
            for block in blocks:
                await writer.write(block)
    if decoder is None:
        raise PlaybackError(ErrorCode.UNSUPPORTED_FORMAT, f"only {received} bytes: not an audio file")
    for block in decoder.finish():
        await writer.write(block)


class PlaybackObserver(Protocol):
    """Who else hears of playback outcomes (the Prometheus metrics, wired by the app)."""

    def playback_started(self) -> None: ...
    def playback_first_frame(self, latency_ms: float) -> None: ...
    def playback_ended(self, code: str | None, duration_ms: int, *, cancelled: bool) -> None:
        """``code`` None for COMPLETED, else the FAILED code; ``cancelled``: ended on purpose."""
        ...


@dataclass
class PlaybackStats:
    """Process-wide playback counts, passed on to an observer when there is one."""

    started: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    bridge_errors: int = 0
    first_frame_latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    observer: PlaybackObserver | None = None

    def record_start(self) -> None:
        self.started += 1
        if self.observer is not None:
            self.observer.playback_started()

    def record_first_frame(self, latency_ms: float) -> None:
        self.first_frame_latencies_ms.append(latency_ms)
        if self.observer is not None:
            self.observer.playback_first_frame(latency_ms)

    def record_end(self, code: str | None, duration_ms: int = 0) -> None:
        """Count a finished playback: ``code`` None for COMPLETED, else its FAILED code."""
        cancelled = code in ErrorCode.CANCELLED
        if code is None:
            self.completed += 1
        elif cancelled:
            self.cancelled += 1
        else:
            self.failed += 1
            self.bridge_errors += code == ErrorCode.INTERNAL
        if self.observer is not None:
            self.observer.playback_ended(code, duration_ms, cancelled=cancelled)


@dataclass(frozen=True)
class PlaybackServices:
    """What every playback of the process shares: the fetcher, the limits, the counters."""

    client: Fetcher
    """Opens each playback's URL on its own connection."""
    limits: PlaybackLimits
    stats: PlaybackStats
