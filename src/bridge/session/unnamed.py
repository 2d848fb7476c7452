"""Data packets whose sender the SDK cannot name yet, held until it can.

livekit-server announces a participant that publishes no track (a phone that sends its microphone as
data packets) to the others only in a batch every 3 s (``subscriberUpdateInterval`` in its room.go),
while it forwards that participant's data packets at once. Until the announcement arrives the SDK
hands us those packets with no sender (``DataPacket.participant is None``), and it drops the sender's
identity that the packet carries. Dropping them lost the first 0-3 s of every phone that joined after
the bridge (measured: 52 of 100 packets, 2.8 s); forwarding them at once could pass another
participant's audio off as the target's. So they are held here, in order and bounded, and released as
the named participant's once the SDK names a wanted sender (its first named packet, or its
``participant_connected``); what waits longer than ``max_age_ms`` is dropped and counted.

Packets the bridge takes straight from the SDK's events (livekit_io/ffi_filter.py) come the same
way: the SDK's native side already leaves the sender's identity empty until the announcement.
"""

from __future__ import annotations

from collections import deque

__all__ = ["UnnamedPackets"]


class UnnamedPackets:
    def __init__(self, *, max_age_ms: int, max_bytes: int) -> None:
        self._max_age_ms = max_age_ms
        self._max_bytes = max_bytes
        self._held: deque[tuple[bytes, int]] = deque()
        self._bytes = 0
        self.released = 0
        """Packets handed on as a named participant's."""
        self.expired = 0
        """Packets dropped: nobody wanted was named within ``max_age_ms``, or the hold was full."""

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, payload: bytes, received_ms: int) -> None:
        self._drop_older_than(received_ms - self._max_age_ms)
        self._held.append((payload, received_ms))
        self._bytes += len(payload)
        while self._bytes > self._max_bytes:
            self._drop_oldest()

    def release(self, now_ms: int) -> list[tuple[bytes, int]]:
        """The packets still fresh at ``now_ms``, oldest first, each with the time it arrived."""
        self._drop_older_than(now_ms - self._max_age_ms)
        packets = list(self._held)
        self._held.clear()
        self._bytes = 0
        self.released += len(packets)
        return packets

    def _drop_older_than(self, cutoff_ms: int) -> None:
        while self._held and self._held[0][1] < cutoff_ms:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        payload, _ = self._held.popleft()
        self._bytes -= len(payload)
        self.expired += 1
