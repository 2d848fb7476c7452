"""Pure audio helpers: s16le <-> int16 samples, gain, resampling, framing and sequence bytes.

Pure means numpy and soxr only, no I/O and no event loop (``tests/unit/audio/test_purity.py`` fails if
anything here imports trio, asyncio, livekit or httpx). That keeps every function testable without a
room or a server, and callable from either side of the Trio/asyncio bridge.
"""

from .frames import FrameChunker
from .pcm import PcmFormatError, apply_gain, s16le_from_samples, samples_from_s16le
from .resample import StreamResampler
from .sequence import SequenceTracker, split_sequence_byte

__all__ = [
    "FrameChunker",
    "PcmFormatError",
    "SequenceTracker",
    "StreamResampler",
    "apply_gain",
    "s16le_from_samples",
    "samples_from_s16le",
    "split_sequence_byte",
]
