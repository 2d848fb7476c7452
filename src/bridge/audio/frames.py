"""Re-chunking a sample stream into frames of an exact size.

LiveKit's ``AudioSource.capture_frame`` wants frames of exactly 10/20 ms, while audio arrives in pieces of
any size (network reads, decoder packets, soxr's bursty output). :class:`FrameChunker` sits in between:
whole frames out, the remainder kept for the next push.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["FrameChunker"]

_EMPTY = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False


class FrameChunker:
    """Cut a stream of mono int16 samples into frames of exactly ``frame_samples`` samples.

    Frames returned by :meth:`push` never alias the array that was pushed, so a caller may reuse its
    input buffer.
    """

    __slots__ = ("_frame_samples", "_pending")

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self._frame_samples = frame_samples
        self._pending: npt.NDArray[np.int16] = _EMPTY

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    @property
    def pending(self) -> int:
        """Samples held back until a whole frame is available."""
        return len(self._pending)

    def push(self, samples: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
        """Add ``samples``; return every whole frame now available (possibly none), oldest first."""
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError(f"expected a 1-D int16 array, got {samples.ndim}-D {samples.dtype}")
        size = self._frame_samples
        if len(self._pending):
            # Concatenation already makes a private copy, so frames can be views into it.
            data = np.concatenate((self._pending, samples))
            owned = True
        else:
            data = samples
            owned = False
        count = len(data) // size
        whole = count * size
        # Copy the tail: it must not alias the caller's array (or pin a large concatenation).
        self._pending = data[whole:].copy() if whole < len(data) else _EMPTY
        if count == 0:
            return []
        block = data[:whole] if owned else data[:whole].copy()
        return list(block.reshape(count, size))

    def flush(self, pad: bool = True) -> npt.NDArray[np.int16] | None:
        """Return the held-back remainder and empty the chunker; None when nothing is held.

        With ``pad`` the remainder is zero-padded (silence) to a whole frame, as a frame-exact consumer
        needs; without, it is returned as is.
        """
        rest = self._pending
        if not len(rest):
            return None
        self._pending = _EMPTY
        if not pad:
            return rest
        frame = np.zeros(self._frame_samples, dtype=np.int16)
        frame[: len(rest)] = rest
        return frame

    def __repr__(self) -> str:
        return f"FrameChunker(frame_samples={self._frame_samples}, pending={self.pending})"
