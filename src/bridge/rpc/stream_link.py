"""A StreamAudio call as the session sees it (session.stream.CloudLink), over a grpclib stream.

Both loops are asyncio coroutines that own the call's I/O; the session runs each as one Trio task,
so a whole call costs two crossings between Trio and asyncio, not one per chunk. Protobuf stays on
this side: the session gets mono samples at the published rate, and hands back queued room audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from .._gen.mentra.livekit.bridge import AudioChunk
from ..audio import FrameChunker, PcmFormatError, StreamResampler, samples_from_s16le
from ..cloud_queue import CloudAudioQueue, QueueClosed, QueuedChunk
from ..errors import AudioFormatError, TransportRefusedError
from ..livekit_io.inbound import CLOUD_SAMPLE_RATE
from ..session.stream import Publish, StreamCounters
from .codec import CAudioChunk
from .direct_send import DirectSender, supported

__all__ = ["MAX_TRACK_ID", "NOTICES_KEY", "CloudPcmConverter", "GrpcCloudLink", "requested_notices"]

MAX_TRACK_ID = 15
"""Cloud PCM may use tracks 0..15; each distinct id publishes one more track into the room."""

_MAX_CHANNELS = 2

NOTICES_KEY = "x-bridge-notices"
"""StreamAudio metadata: the notices a client understands, comma-separated (AudioChunk.notice)."""
KNOWN_NOTICES = frozenset({"draining"})


def requested_notices(metadata: object) -> frozenset[str]:
    """The known notices a StreamAudio call's metadata asks for; anything else is ignored."""
    values = metadata.getall(NOTICES_KEY, []) if hasattr(metadata, "getall") else []
    wanted = {part.strip() for value in values if isinstance(value, str) for part in value.split(",")}
    return frozenset(wanted & KNOWN_NOTICES)


class GrpcCloudLink:
    """One StreamAudio call: ``first`` is its first message (already read, it carries the user id).

    The server reads the cloud's AudioChunks as upb messages (codec.py), not betterproto2's dataclass
    the annotations name: the same fields, read the same way here.
    """

    def __init__(
        self,
        stream: Stream[AudioChunk, AudioChunk],
        first: AudioChunk,
        *,
        out_rate: int,
        notices: frozenset[str] = frozenset(),
        direct_send: bool = True,
    ) -> None:
        """``direct_send``: write a chunk from the producer's callback when the send loop is idle
        (rpc/direct_send.py; grpclib versions it does not know get the loop only)."""
        self.user_id = first.user_id
        self.notices = notices
        """The notices this client asked for (metadata ``x-bridge-notices``)."""
        self._stream = stream
        self._first: AudioChunk | None = first
        self._converter = CloudPcmConverter(out_rate)
        self._direct = DirectSender(stream) if direct_send and supported() else None

    @property
    def sent_directly(self) -> int:
        """Chunks written from the producer's callback rather than by the send loop."""
        return self._direct.sent if self._direct is not None else 0

    async def send_all(self, queue: CloudAudioQueue, counters: StreamCounters) -> None:
        """Send queued room audio to the cloud until the queue closes (asyncio side)."""
        direct = self._direct

        def take_now(chunk: QueuedChunk) -> bool:
            assert direct is not None
            if not direct.try_send(self._message(chunk).SerializeToString()):
                return False
            counters.chunks_to_cloud += 1
            counters.bytes_to_cloud += len(chunk.pcm)
            return True

        while True:
            try:
                batch = await queue.get_batch(take_now if direct is not None else None)
            except QueueClosed:
                return
            for chunk in batch:
                await self._stream.send_message(self._message(chunk))
                if not chunk.notice:
                    counters.chunks_to_cloud += 1
                    counters.bytes_to_cloud += len(chunk.pcm)

    def _message(self, chunk: QueuedChunk) -> Any:
        # upb, not betterproto2: the hot path (codec.py); the cloud reads the same bytes.
        return CAudioChunk(
            pcm_data=chunk.pcm,
            sample_rate=CLOUD_SAMPLE_RATE,
            channels=1,
            timestamp_ms=chunk.timestamp_ms,
            user_id=self.user_id,
            notice=chunk.notice,
        )

    async def receive_all(self, publish: Publish, counters: StreamCounters) -> None:
        """Publish cloud PCM until the client stops sending (asyncio side).

        Raises AudioFormatError for a chunk that cannot be used (the stream ends with
        INVALID_ARGUMENT, the session stays), TransportRefusedError when the server refused a message.
        """
        message, self._first = self._first, None
        while message is not None:
            if message.pcm_data:
                try:
                    samples = self._converter.convert(message)
                except AudioFormatError:
                    counters.rejected_chunks += 1
                    raise
                counters.chunks_from_cloud += 1
                counters.bytes_from_cloud += len(message.pcm_data)
                if samples.size:
                    await publish(message.track_id, samples)
            try:
                message = await self._stream.recv_message()
            except GRPCError as err:  # rpc/server.py refused it (too large, compressed)
                raise TransportRefusedError(err.message or err.status.name, err) from None


@dataclass
class CloudPcmConverter:
    """Turns cloud AudioChunks into mono int16 at the published rate, in whole 10 ms frames.

    Keeps resampler and frame state per track, so a stream that interleaves tracks stays continuous
    on each of them. A chunk with another rate or channel count is resampled/downmixed, not refused;
    only PCM that is not whole s16le samples, or a format we cannot sensibly publish, is refused.
    State is bounded: one resampler per track (a new rate on a track replaces it), 16 tracks at most.
    """

    out_rate: int
    _resamplers: dict[int, tuple[int, StreamResampler]] = field(default_factory=dict)
    _chunkers: dict[int, FrameChunker] = field(default_factory=dict)

    @property
    def resampler_count(self) -> int:
        return len(self._resamplers)

    def convert(self, chunk: AudioChunk) -> npt.NDArray[np.int16]:
        track_id = chunk.track_id
        rate = chunk.sample_rate or 16000
        channels = chunk.channels or 1
        if not 0 <= track_id <= MAX_TRACK_ID:
            raise AudioFormatError(f"track_id {track_id} is out of range (0..{MAX_TRACK_ID})")
        if not 1 <= channels <= _MAX_CHANNELS:
            raise AudioFormatError(f"channels={channels} is not supported (1 or 2)")
        if not 8000 <= rate <= 48000:
            raise AudioFormatError(f"sample_rate={rate} is not supported (8000..48000 Hz)")
        try:
            samples = samples_from_s16le(chunk.pcm_data, channels)
            resampler = self._resampler(track_id, rate)
            samples = resampler.push(samples)
        except PcmFormatError as err:
            raise AudioFormatError(f"track {track_id}: {err}") from None
        chunker = self._chunkers.get(track_id)
        if chunker is None:
            chunker = self._chunkers[track_id] = FrameChunker(self.out_rate // 100)
        frames = chunker.push(samples)
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return frames[0] if len(frames) == 1 else np.concatenate(frames)

    def _resampler(self, track_id: int, rate: int) -> StreamResampler:
        current = self._resamplers.get(track_id)
        if current is not None and current[0] == rate:
            return current[1]
        # A rate change on a track starts a new resampler: the old one's few ms of filter
        # history belong to a different signal anyway.
        resampler = StreamResampler(rate, self.out_rate)
        self._resamplers[track_id] = (rate, resampler)
        return resampler
