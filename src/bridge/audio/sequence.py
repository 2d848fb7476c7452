"""Sequence bytes on phone audio packets, and loss/reorder accounting per sender.

Phones send microphone audio as lossy LiveKit data packets: ONE sequence byte (0..255, wrapping) followed
by 16 kHz mono s16le PCM. PCM always has an even length, so an odd-length packet is how we know the byte is
there; an even-length packet comes from a client that sends plain PCM without sequence numbers.

Both functions here run for every 100 ms packet of every session, on the thread that also serves the
LiveKit SDK's callbacks, so they do O(1) work with a few integer operations and no allocation beyond the
PCM bytes themselves.
"""

from __future__ import annotations

__all__ = ["SequenceTracker", "split_sequence_byte"]

# A sequence number is one byte, so it wraps at 256. A forward step of less than half the ring is read as
# "newer" (a gap of lost packets); anything else is read as "older" (a late or repeated packet). This is
# the usual serial-number arithmetic (RFC 1982) for an 8-bit counter.
_RING = 256
_HALF = _RING // 2
# The history window: one bit for each of the last _HALF sequence numbers behind the newest packet. A late
# packet can only be recognised while it is less than half the ring old, so more bits would never be read.
_WINDOW_MASK = (1 << _HALF) - 1


def split_sequence_byte(packet: bytes) -> tuple[int | None, bytes]:
    """Split a phone's data packet into ``(sequence byte, PCM)``.

    An odd length means the first byte is the sequence number: ``(packet[0], packet[1:])``. An even length
    is plain PCM from a client without sequence numbers: ``(None, packet)``, returned as the same object
    without copying. Stripping the byte costs one copy of the PCM, which callers need as ``bytes`` anyway.
    """
    if len(packet) & 1:
        return packet[0], packet[1:]
    return None, packet


class SequenceTracker:
    """Counts received, lost, reordered and duplicate packets from ONE sender's sequence bytes.

    Call :meth:`observe` with the sequence byte of every packet as it arrives. Let ``expected`` be one
    past the newest sequence number seen so far and ``delta = (seq - expected) % 256``:

    * The first packet only initialises ``expected``; it counts as received.
    * ``delta == 0``: the packet is in order.
    * ``0 < delta < 128``: the ``delta`` packets in between are missing; they are counted in ``lost`` at
      once and this packet is taken as in order (it becomes the newest).
    * ``delta >= 128``: the packet is older than the newest one, i.e. it arrived after newer ones.

      - If it was one of the packets counted lost, it is counted in ``reordered`` and taken back out of
        ``lost`` (exactly once: its "missing" mark is cleared).
      - If it was already seen (including the newest packet itself), it is counted in ``duplicates``.
      - If it is from just before the first packet this tracker saw, it is counted in ``reordered``;
        ``lost`` is unchanged because it was never counted lost (a repeat of it is a duplicate).

    ``received`` counts every call, duplicates included; ``received - duplicates`` is the number of distinct
    packets, and ``lost / (lost + received - duplicates)`` is the loss ratio. ``lost`` is the number of
    packets still missing now, so it can go down when late packets turn up.

    An 8-bit counter cannot tell "128 or more packets lost" from "a packet that is late by 128 or more"; a
    jump of 128 or more forward is therefore read as a late or repeated packet. At 10 packets a second that
    takes 12.8 s of consecutive loss, after which the count is only approximate until packets flow again.

    State is two 128-bit integers marking which of the last 128 sequence numbers have not arrived (counted
    lost, or before the first packet), so each call is O(1): a shift, a mask and a few additions.
    """

    __slots__ = ("_duplicates", "_expected", "_lost", "_missing", "_received", "_reordered", "_unaccounted")

    def __init__(self) -> None:
        self._received = 0
        self._lost = 0
        self._reordered = 0
        self._duplicates = 0
        # -1 until the first packet: there is nothing to compare against yet.
        self._expected = -1
        # Bit k set <=> sequence number (expected - 1 - k) % 256 was counted lost and has not arrived.
        self._missing = 0
        # Same layout: positions before the first packet that have not arrived. They were never counted
        # lost, so a packet from there is late but must not reduce ``lost``; clearing its bit lets a repeat
        # of it count as a duplicate.
        self._unaccounted = 0

    @property
    def received(self) -> int:
        """Every packet observed, duplicates included."""
        return self._received

    @property
    def lost(self) -> int:
        """Packets skipped over by a newer one and not (yet) arrived late."""
        return self._lost

    @property
    def reordered(self) -> int:
        """Packets that arrived after a newer one had already arrived (and were not duplicates)."""
        return self._reordered

    @property
    def duplicates(self) -> int:
        """Packets whose sequence number had already been seen within the last 128 numbers."""
        return self._duplicates

    def observe(self, seq: int) -> None:
        """Account for one packet with sequence byte ``seq`` (0..255)."""
        if not 0 <= seq < _RING:
            raise ValueError(f"sequence byte must be in 0..255, got {seq}")
        self._received += 1
        expected = self._expected
        if expected < 0:
            self._expected = (seq + 1) % _RING
            self._unaccounted = _WINDOW_MASK ^ 1
            return
        delta = (seq - expected) % _RING
        if delta < _HALF:
            # Newest so far. Shift the window so bit 0 is this packet (seen), and mark the `delta` numbers
            # skipped over (bits 1..delta) as missing.
            self._lost += delta
            self._missing = ((self._missing << (delta + 1)) | (((1 << delta) - 1) << 1)) & _WINDOW_MASK
            if self._unaccounted:
                self._unaccounted = (self._unaccounted << (delta + 1)) & _WINDOW_MASK
            self._expected = (seq + 1) % _RING
            return
        # Older than the newest: it sits `age` places behind it (0 = the newest itself).
        age = _RING - 1 - delta
        bit = 1 << age
        if self._missing & bit:
            self._missing ^= bit
            self._lost -= 1
            self._reordered += 1
        elif self._unaccounted & bit:
            self._unaccounted ^= bit
            self._reordered += 1
        else:
            self._duplicates += 1

    def __repr__(self) -> str:
        return (
            f"SequenceTracker(received={self._received}, lost={self._lost}, "
            f"reordered={self._reordered}, duplicates={self._duplicates})"
        )
