"""Room -> cloud: a session's microphone path.

Phones send PCM as data packets (one sequence byte + 16 kHz mono s16le); other clients publish audio
tracks. Both end in the session's one ``CloudAudioQueue``, which the attached StreamAudio call
drains (stream.py) and which keeps filling, bounded, while no call is attached.

``on_data`` is the SDK's callback for every packet: the hot path. It filters by sender, strips and
tracks the sequence byte and queues; nothing else. Packets the SDK cannot name a sender for yet (a
phone in its first seconds in the room) wait in ``UnnamedPackets`` until it can (unnamed.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from trio_asyncio import aio_as_trio

from ..audio import SequenceTracker, split_sequence_byte
from ..clock import now_ms
from ..cloud_queue import CloudAudioQueue
from ..livekit_io.inbound import CLOUD_SAMPLE_RATE, forward_audio_track
from .host import SessionHost
from .unnamed import UnnamedPackets

__all__ = ["MicSnapshot", "RoomToCloud"]

_BYTES_PER_MS = CLOUD_SAMPLE_RATE * 2 // 1000

MAX_SEQUENCE_SOURCES = 64
"""Participants whose sequence bytes a session tracks; packets of any more still flow, untracked."""

UNNAMED_HOLD_MS = 6000
"""How long a packet without a nameable sender waits for its sender to be named: two of the
server's 3 s announcement intervals (unnamed.py)."""
_UNNAMED_HOLD_BYTES = 2 * UNNAMED_HOLD_MS * _BYTES_PER_MS


@dataclass(frozen=True)
class MicSnapshot:
    data_packets: int
    data_bytes: int
    data_packets_ignored: int
    """Packets from participants other than ``target_identity``."""
    unnamed_released: int
    """Packets that arrived before the SDK could name their sender, forwarded once it did."""
    unnamed_expired: int
    """Packets without a sender that nobody wanted was named for in time: dropped."""
    track_chunks: int
    queue_depth: int
    queued_bytes: int
    queue_dropped_chunks: int
    queue_dropped_bytes: int
    lost: int
    reordered: int
    duplicates: int


class RoomToCloud:
    def __init__(
        self, host: SessionHost, target_identity: str, *, knows_participant: Callable[[str], bool]
    ) -> None:
        """``knows_participant(identity)``: whether the room already names that participant."""
        self._host = host
        self._target = target_identity
        self._knows_participant = knows_participant
        self.unnamed = UnnamedPackets(max_age_ms=UNNAMED_HOLD_MS, max_bytes=_UNNAMED_HOLD_BYTES)
        self.queue = CloudAudioQueue(max_bytes=host.config.cloud_queue_ms * _BYTES_PER_MS)
        self.sequences: dict[str, SequenceTracker] = {}
        self._track_readers: dict[str, trio.CancelScope] = {}
        self.data_packets = 0
        self.data_bytes = 0
        self.data_packets_ignored = 0
        self.track_chunks = 0

    def wants(self, identity: str) -> bool:
        return not self._target or identity == self._target

    def on_data(self, payload: bytes, identity: str) -> None:
        """SDK callback for every data packet: filter, strip the sequence byte, queue. Hot path.

        ``identity`` is empty when the SDK could not name the sender.
        """
        if not identity:
            self._hold_unnamed(payload)
            return
        if not self.wants(identity):
            self.data_packets_ignored += 1
            return
        received_ms = now_ms()
        if self.unnamed:  # its packets from before it was named go first
            self._release_unnamed(identity, received_ms)
        self._accept(payload, identity, received_ms)

    def on_participant_named(self, identity: str) -> None:
        """The room names a participant now (``participant_connected``): a wanted one gets the
        packets held for want of a name, if no packet of its own has claimed them already."""
        if self.unnamed and self.wants(identity):
            self._release_unnamed(identity, now_ms())

    def _hold_unnamed(self, payload: bytes) -> None:
        if self._target and self._knows_participant(self._target):
            # The target is named already: a nameless packet is someone else's (or the server API's).
            self.data_packets_ignored += 1
            return
        self.unnamed.hold(payload, now_ms())

    def _release_unnamed(self, identity: str, now: int) -> None:
        released = self.unnamed.release(now)
        # Seconds of audio at once: room for all of it, so the burst does not push itself out.
        burst = sum(len(payload) for payload, _ in released)
        for payload, received_ms in released:
            self._accept(payload, identity, received_ms, extra_bytes=burst)

    def _accept(self, payload: bytes, identity: str, received_ms: int, extra_bytes: int = 0) -> None:
        seq, pcm = split_sequence_byte(payload)
        if seq is not None:
            tracker = self.sequences.get(identity)
            if tracker is None and len(self.sequences) < MAX_SEQUENCE_SOURCES:
                tracker = self.sequences[identity] = SequenceTracker()
            if tracker is not None:
                tracker.observe(seq)
        self.data_packets += 1
        self.data_bytes += len(pcm)
        if pcm:
            self.queue.put_nowait(pcm, received_ms, extra_bytes=extra_bytes)

    def _on_track_pcm(self, pcm: bytes) -> None:
        self.track_chunks += 1
        self.queue.put_nowait(pcm, now_ms())

    def read_track(self, identity: str, track_sid: str, track: Any) -> None:
        """Forward a remote audio track of a wanted participant, replacing an older reader of it."""
        if track is None or not self.wants(identity):
            return
        # After a full reconnect the SDK re-announces tracks as new objects: replace the old reader.
        self.stop_reading(track_sid)
        scope = self._track_readers[track_sid] = trio.CancelScope()
        self._host.nursery.start_soon(self._read_track, track_sid, track, scope)

    def stop_reading(self, track_sid: str) -> None:
        scope = self._track_readers.pop(track_sid, None)
        if scope is not None:
            scope.cancel()

    async def _read_track(self, track_sid: str, track: Any, scope: trio.CancelScope) -> None:
        with scope:
            forward = functools.partial(
                forward_audio_track, track, self._on_track_pcm, chunk_ms=self._host.config.track_chunk_ms
            )
            await aio_as_trio(forward)()
        if self._track_readers.get(track_sid) is scope:
            del self._track_readers[track_sid]

    def sequence_totals(self) -> dict[str, int]:
        totals = {"received": 0, "lost": 0, "reordered": 0, "duplicates": 0}
        for tracker in self.sequences.values():
            totals["received"] += tracker.received
            totals["lost"] += tracker.lost
            totals["reordered"] += tracker.reordered
            totals["duplicates"] += tracker.duplicates
        return totals

    def snapshot(self) -> MicSnapshot:
        seq, queue = self.sequence_totals(), self.queue
        return MicSnapshot(
            data_packets=self.data_packets,
            data_bytes=self.data_bytes,
            data_packets_ignored=self.data_packets_ignored,
            unnamed_released=self.unnamed.released,
            unnamed_expired=self.unnamed.expired,
            track_chunks=self.track_chunks,
            queue_depth=queue.depth,
            queued_bytes=queue.queued_bytes,
            queue_dropped_chunks=queue.dropped_chunks,
            queue_dropped_bytes=queue.dropped_bytes,
            lost=seq["lost"],
            reordered=seq["reordered"],
            duplicates=seq["duplicates"],
        )
