"""The cloud side of the tests: a grpclib client for the bridge, driven from Trio tests.

grpclib is asyncio code: every coroutine here runs on the asyncio side (call it through
``aio_as_trio``, or start it as a Trio task with ``nursery.start_soon(aio_as_trio(fn), ...)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpclib.const
import trio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from bridge._gen.mentra.livekit.bridge import AudioChunk

STREAM_AUDIO = "/mentra.livekit.bridge.LiveKitBridge/StreamAudio"


@dataclass(eq=False)
class CloudStream:
    """One StreamAudio call: records what the bridge sends and how the call ended."""

    channel: Channel
    user_id: str
    received: list[AudioChunk] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    """``time.monotonic()`` at which each chunk of ``received`` arrived."""
    opened: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    status: Status | None = None
    message: str = ""
    stream: object = None
    metadata: dict[str, str] | None = None
    """Metadata of the call (e.g. ``{"x-bridge-notices": "draining"}``)."""

    @property
    def pcm(self) -> bytes:
        return b"".join(chunk.pcm_data for chunk in self.received)

    @property
    def notices(self) -> list[str]:
        return [chunk.notice for chunk in self.received if chunk.notice]

    async def run(self) -> None:
        """asyncio side: open the call, send the first message, read until it ends."""
        try:
            async with self.channel.request(
                STREAM_AUDIO,
                grpclib.const.Cardinality.STREAM_STREAM,
                AudioChunk,
                AudioChunk,
                metadata=self.metadata,
            ) as stream:
                self.stream = stream
                await stream.send_message(AudioChunk(user_id=self.user_id, sample_rate=16000, channels=1))
                self.opened.set()
                while (message := await stream.recv_message()) is not None:
                    self.received.append(message)
                    self.arrivals.append(time.monotonic())
                await stream.end()
                await stream.recv_trailing_metadata()  # raises GRPCError unless the status is OK
                self.status = Status.OK
                self.message = str(dict(stream.trailing_metadata or {}).get("x-bridge-end-reason", ""))
        except GRPCError as err:
            self.status, self.message = err.status, err.message or ""
        except StreamTerminatedError as err:  # the connection itself went away
            self.message = f"connection lost: {err}"
        finally:
            self.opened.set()
            self.ended.set()

    async def send(self, chunk: AudioChunk) -> None:
        """asyncio side: send one chunk on the open call."""
        await self.stream.send_message(chunk)  # type: ignore[attr-defined]
