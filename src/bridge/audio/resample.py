"""Streaming sample-rate conversion of mono int16 audio with soxr.

Audio reaches the bridge at whatever rate its source uses (48 kHz tracks, 44.1 kHz files, 16 kHz phones)
and leaves at the rate the other side expects, in pieces of arbitrary size. A streaming resampler keeps
its filter state between pieces, so piece boundaries leave no clicks; a one-shot resample per piece would.

soxr's output is bursty (nothing at first, then more than one input piece's worth): re-chunk it with
:class:`bridge.audio.frames.FrameChunker` before anything that needs exact frame sizes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from .pcm import PcmFormatError

__all__ = ["StreamResampler"]

MIN_RATE = 8_000
MAX_RATE = 192_000


class StreamResampler:
    """Resample one continuous mono int16 stream from ``in_rate`` to ``out_rate`` Hz.

    ``quality="LQ"`` is the default because it adds the least delay for 48k -> 16k speech; ``"HQ"`` adds
    about 37 ms and ``"QQ"`` aliases audibly (see STACK-NOTES, "Decoding and resampling"). When the rates
    are equal no soxr object is made and :meth:`push` returns its input unchanged.

    Call :meth:`flush` at the end of the stream to get the samples soxr still holds back; afterwards the
    resampler is reset and can start a new, unrelated stream.
    """

    __slots__ = ("_in_rate", "_out_rate", "_quality", "_soxr")

    def __init__(self, in_rate: int, out_rate: int, quality: str = "LQ") -> None:
        _check_rate("in_rate", in_rate)
        _check_rate("out_rate", out_rate)
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._quality = quality
        # soxr validates `quality` itself (ValueError listing the allowed names).
        self._soxr: soxr.ResampleStream | None = (
            None
            if in_rate == out_rate
            # float32, not int16: soxr's int16 output is dithered (see _to_int16).
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    @property
    def passthrough(self) -> bool:
        """True when the rates are equal and samples are returned untouched."""
        return self._soxr is None

    def push(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Feed the next piece of the stream; return whatever output is ready (possibly empty)."""
        _check_mono_int16(samples)
        if self._soxr is None:
            return samples
        return _to_int16(self._soxr.resample_chunk(samples.astype(np.float32) * _TO_FLOAT))

    def flush(self) -> npt.NDArray[np.int16]:
        """End the stream: return the held-back tail and reset for a new stream."""
        if self._soxr is None:
            return np.zeros(0, dtype=np.int16)
        tail = _to_int16(self._soxr.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        # soxr refuses input after `last=True`; clearing keeps the object usable (and is cheaper than a
        # new one, which would rebuild the filter).
        self._soxr.clear()
        return tail

    def __repr__(self) -> str:
        return (
            f"StreamResampler(in_rate={self._in_rate}, out_rate={self._out_rate}, quality={self._quality!r})"
        )


def _check_rate(name: str, rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise PcmFormatError(f"{name} must be in {MIN_RATE}..{MAX_RATE} Hz, got {rate}")


def _check_mono_int16(samples: npt.NDArray[np.int16]) -> None:
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise PcmFormatError(
            f"expected a 1-D int16 array of mono samples, got {samples.ndim}-D {samples.dtype}"
        )


_TO_FLOAT = np.float32(1 / 32768)


def _to_int16(result: object) -> npt.NDArray[np.int16]:
    """soxr's float output as int16, rounded and clipped, without dither.

    soxr's own int16 output adds TPDF dither: digital silence came out as +-1 noise on a fifth of its
    samples. Phones heard a noise floor where the cloud sent silence, and Opus, which encodes digital
    silence almost for free, encoded the noise: a talkback track's encoder thread cost ~4x the
    floor's in bench.load (docs/design/lessons.md, "Audio").
    """
    samples = np.rint(np.asarray(result, dtype=np.float32) * np.float32(32768))
    rounded: npt.NDArray[np.int16] = np.clip(samples, -32768, 32767).astype(np.int16)
    return rounded
