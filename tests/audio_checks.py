"""Signal checks shared by the audio tests: a tone generator, its dominant frequency, and RMS level.

Tests of resampling, playback and round trips through a real room can rarely compare samples one for one
(resamplers add delay, codecs change every sample), but "a 440 Hz tone went in, a 440 Hz tone at about the
same level came out" survives all of that. These helpers make that check precise enough to catch a wrong
rate (a 48k->16k mix-up moves 440 Hz to 1320 Hz or 147 Hz) while ignoring harmless differences.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bridge.testing.analysis import dominant_frequency, loud_segment, rms

__all__ = ["dominant_frequency", "loud_segment", "rms", "sine"]

_INT16_MAX = 32767


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    """A mono int16 sine tone of ``freq`` Hz lasting ``seconds`` at ``rate`` Hz.

    ``amplitude`` is the peak as a fraction of full scale (0.5 = about -6 dBFS, leaving headroom so gain
    and resampling overshoot do not clip).
    """
    if not 0 < amplitude <= 1:
        raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
    if not 0 < freq < rate / 2:
        raise ValueError(f"freq must be between 0 and the Nyquist frequency {rate / 2}, got {freq}")
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    wave = amplitude * _INT16_MAX * np.sin(2 * np.pi * freq * t)
    return np.rint(wave).astype(np.int16)
