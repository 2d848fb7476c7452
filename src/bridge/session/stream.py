"""The StreamAudio call attached to a session: room audio out, cloud PCM in.

The RPC layer hands over a ``CloudLink`` (rpc/stream_link.py adapts a grpclib stream): two asyncio
coroutines that own the call's I/O. The session runs each as one Trio task inside its own nursery,
so LeaveRoom, a replacing JoinRoom or a drain end them too; a newer call replaces an older one.
How the call ended is a ``StreamEnd`` the RPC layer turns into a status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import trio
from trio_asyncio import aio_as_trio

from ..clock import now_ms
from ..cloud_queue import CloudAudioQueue
from ..errors import AudioFormatError, SessionNotFoundError, TransportRefusedError
from ..livekit_io.outbound import TrackPublishError
from .host import SessionHost
from .model import StreamEnd, StreamEndReason

__all__ = ["AttachedStream", "CloudLink", "StreamCounters", "StreamSnapshot"]

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 1.0
"""On a hand-over, how long the stream may take to send the room audio still queued for it."""
STREAM_TASKS_END_TIMEOUT_S = 10.0
"""How long an ended call waits, shielded, for its tasks to finish. Cancelling their asyncio halves
takes milliseconds; the bound keeps an asyncio task that ignores its cancel from hanging the call."""

Publish = Callable[[int, npt.NDArray[np.int16]], Awaitable[None]]


@dataclass
class StreamCounters:
    chunks_to_cloud: int = 0
    bytes_to_cloud: int = 0
    chunks_from_cloud: int = 0
    bytes_from_cloud: int = 0
    rejected_chunks: int = 0


class CloudLink(Protocol):
    """One StreamAudio call's I/O (asyncio side)."""

    user_id: str
    notices: frozenset[str]
    """The notices the client asked for (``x-bridge-notices``); the others are never sent to it."""

    async def send_all(self, queue: CloudAudioQueue, counters: StreamCounters) -> None:
        """Send queued room audio until the queue is closed (or sealed and empty)."""
        ...

    async def receive_all(self, publish: Publish, counters: StreamCounters) -> None:
        """Publish the cloud's PCM until it stops sending; AudioFormatError for unusable PCM,
        TransportRefusedError when the RPC layer refuses a message."""
        ...


@dataclass(frozen=True)
class StreamSnapshot:
    attached: bool
    streams_attached: int
    counters: StreamCounters


@dataclass(eq=False)
class _Attachment:
    link: CloudLink
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    flushed: trio.Event = field(default_factory=trio.Event)
    """The send loop has sent everything the (sealed) cloud queue held."""
    end: StreamEnd | None = None


class AttachedStream:
    def __init__(self, host: SessionHost, queue: CloudAudioQueue, publish: Publish) -> None:
        self._host = host
        self._queue = queue
        self._publish = publish
        self._attachment: _Attachment | None = None
        self.counters = StreamCounters()
        self.streams_attached = 0

    @property
    def attached(self) -> bool:
        return self._attachment is not None

    async def serve(self, link: CloudLink, end_for_close: Callable[[], StreamEnd]) -> StreamEnd:
        """Run a StreamAudio call until it ends; return how it ended.

        If the client goes away, the caller is cancelled and the ``finally`` ends the call's tasks
        before returning. ``end_for_close`` says how the call ends when the session closes.
        """
        nursery = self._host.nursery
        attachment = _Attachment(link)
        previous, self._attachment = self._attachment, attachment
        if previous is not None:
            previous.end = StreamEnd(StreamEndReason.SUPERSEDED, "superseded by a newer StreamAudio call")
            previous.scope.cancel()
        self.streams_attached += 1
        self._host.touch()
        nursery.start_soon(self._run, attachment, previous, link)
        try:
            await attachment.done.wait()
        finally:
            attachment.scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(STREAM_TASKS_END_TIMEOUT_S) as waiting:
                await attachment.done.wait()
            if waiting.cancelled_caught:
                log.error(
                    "stream tasks still running %.0f s after the call ended; leaving them to the session",
                    STREAM_TASKS_END_TIMEOUT_S,
                    extra={"user_id": self._host.user_id},
                )
            if self._attachment is attachment:
                self._attachment = None
            self._host.touch()
        return attachment.end or end_for_close()

    def notify(self, notice: str) -> bool:
        """Send ``notice`` on the attached call if its client asked for it; whether it was sent."""
        attachment = self._attachment
        if attachment is None or notice not in attachment.link.notices:
            return False
        self._queue.put_notice(notice, now_ms())
        return True

    async def flush(self) -> None:
        """Seal the cloud queue and wait (bounded) until the attached call has sent what it held."""
        attachment = self._attachment
        if attachment is None:
            return
        self._queue.seal()
        with trio.move_on_after(FLUSH_TIMEOUT_S):
            await attachment.flushed.wait()

    async def _run(self, attachment: _Attachment, previous: _Attachment | None, link: CloudLink) -> None:
        try:
            with attachment.scope:
                if previous is not None:  # one consumer of the cloud queue at a time
                    await previous.done.wait()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send, link, attachment)
                    nursery.start_soon(aio_as_trio(link.receive_all), self._publish, self.counters)
        except* AudioFormatError as group:
            attachment.end = StreamEnd(StreamEndReason.BAD_AUDIO, str(group.exceptions[0]))
        except* TransportRefusedError as group:
            refused = group.exceptions[0]
            assert isinstance(refused, TransportRefusedError)
            attachment.end = StreamEnd(StreamEndReason.REFUSED_BY_TRANSPORT, str(refused), refused.cause)
        except* TrackPublishError as group:
            # The session stays and keeps queueing room audio for the next StreamAudio call.
            attachment.end = StreamEnd(StreamEndReason.TRACK_UNPUBLISHABLE, str(group.exceptions[0]))
        except* SessionNotFoundError:
            pass  # the session ended under the call: its close decides the end
        except* Exception as group:
            # The cloud's connection broke, or a bug: the stream ends, the session stays.
            err = group.exceptions[0]
            log.warning(
                "stream ended by error: %s: %s",
                type(err).__name__,
                err,
                extra={"user_id": self._host.user_id},
            )
            attachment.end = attachment.end or StreamEnd(StreamEndReason.BROKEN, f"stream failed: {err}")
        finally:
            attachment.done.set()

    async def _send(self, link: CloudLink, attachment: _Attachment) -> None:
        await aio_as_trio(link.send_all)(self._queue, self.counters)
        attachment.flushed.set()  # the queue was sealed or closed, and all it held has been sent

    def snapshot(self) -> StreamSnapshot:
        return StreamSnapshot(self.attached, self.streams_attached, StreamCounters(**vars(self.counters)))
