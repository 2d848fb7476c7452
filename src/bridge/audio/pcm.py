"""Conversions between s16le PCM bytes and mono int16 sample arrays, and gain.

Every boundary of the bridge (LiveKit data packets, gRPC ``pcm_data`` fields, decoded files) carries
signed 16-bit little-endian PCM as bytes; inside, audio is a 1-D ``numpy.int16`` array of mono samples so
resampling, chunking and gain are vectorised instead of byte-fiddling. Validation happens here, once, so
that a malformed ``pcm_data`` from a client becomes a clear :class:`PcmFormatError` instead of a numpy
error deep inside a session.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["PcmFormatError", "apply_gain", "s16le_from_samples", "samples_from_s16le"]

MAX_CHANNELS = 8
_INT16_MIN = -32768
_INT16_MAX = 32767
# Explicitly little-endian: "s16le" is a wire format, not "whatever this CPU uses".
_S16LE = np.dtype("<i2")


class PcmFormatError(ValueError):
    """PCM whose layout cannot be what it claims (odd byte count, bad channel count or sample rate).

    Expected: it is raised for data that came from outside (a client's ``pcm_data``, a file), and the
    message is written to be passed back to that client as is.
    """


def samples_from_s16le(pcm: bytes, channels: int) -> npt.NDArray[np.int16]:
    """Decode interleaved s16le PCM with ``channels`` channels into mono int16 samples.

    Several channels are averaged (in int32, so the sum cannot overflow). For mono input the result is a
    read-only view of ``pcm`` without a copy; copy it before writing into it.
    """
    _check_channels(channels)
    if len(pcm) % (2 * channels):
        raise PcmFormatError(
            f"pcm_data has {len(pcm)} bytes: s16le needs whole samples "
            f"(a multiple of 2 bytes per channel, channels={channels})"
        )
    interleaved = np.frombuffer(pcm, dtype=_S16LE)
    if interleaved.dtype != np.int16:  # only on a big-endian host: convert to native order
        interleaved = interleaved.astype(np.int16)
    if channels == 1:
        return interleaved
    return _downmix(interleaved.reshape(-1, channels))


def s16le_from_samples(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples (any shape, e.g. interleaved) as s16le bytes."""
    if samples.dtype != np.int16:
        # Silently casting int32 or float audio would wrap or truncate it into noise.
        raise PcmFormatError(f"samples must be int16 to encode as s16le, got {samples.dtype}")
    return samples.astype(_S16LE, copy=False).tobytes()


def apply_gain(samples: npt.NDArray[np.int16], gain: float) -> npt.NDArray[np.int16]:
    """Scale samples by ``gain``, rounding and clipping to the int16 range.

    ``gain == 1.0`` returns ``samples`` itself (no work on the common path); ``gain == 0`` returns zeros.
    Negative or non-finite gains are rejected: volume is a magnitude, and NaN would turn into noise.
    """
    if not math.isfinite(gain) or gain < 0:
        raise ValueError(f"gain must be a finite number >= 0, got {gain}")
    if gain == 1.0:
        return samples
    if gain == 0:
        return np.zeros_like(samples)
    # float32 holds every int16 exactly and gives ~7 significant digits: plenty for 16-bit audio.
    scaled: npt.NDArray[np.float32] = np.rint(samples.astype(np.float32) * np.float32(gain))
    return scaled.clip(_INT16_MIN, _INT16_MAX).astype(np.int16)


def _check_channels(channels: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise PcmFormatError(f"channels must be in 1..{MAX_CHANNELS}, got {channels}")


def _downmix(frames: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Average the columns of a (samples, channels) array, rounding to nearest."""
    channels: int = frames.shape[1]
    total: npt.NDArray[np.int32] = frames.sum(axis=1, dtype=np.int32)
    # Integer round-half-up; floor division alone would bias every sample by half an LSB downwards.
    mean: npt.NDArray[np.int32] = (total + channels // 2) // channels
    # A mean of int16 values is always in range; the clip documents that and guards the cast.
    return mean.clip(_INT16_MIN, _INT16_MAX).astype(np.int16)
