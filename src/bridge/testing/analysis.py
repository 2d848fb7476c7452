"""Signal analysis for checking audio as audio: dominant frequency, level, the audible stretch.

Round trips through resamplers, codecs and a real room rarely keep samples one for one, but "a
440 Hz tone went in, a 440 Hz tone at about the same level came out" survives all of that. These
are precise enough to catch a wrong rate (a 48k->16k mix-up moves 440 Hz to 1320 Hz or 147 Hz)
while ignoring harmless differences. Used by the tests, the benchmarks and the TS client's driver.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["dominant_frequency", "loud_segment", "rms"]


def dominant_frequency(samples: npt.NDArray[np.integer] | npt.NDArray[np.floating], rate: int) -> float:
    """The frequency in Hz of the strongest spectral peak in ``samples`` (DC excluded).

    A Hann window keeps leakage from the ends of the clip from drowning the peak, and the peak is refined
    between FFT bins by fitting a parabola through the log-magnitudes of the three bins around it (for a
    Hann window that is accurate to a few hundredths of a bin). One second of audio therefore gives the
    frequency to well under 0.1 Hz rather than to the 1 Hz bin spacing.
    """
    n = len(samples)
    if n < 4:
        raise ValueError(f"need at least 4 samples to find a frequency, got {n}")
    x = np.asarray(samples, dtype=np.float64)
    x = x - x.mean()  # a DC offset would otherwise leak into the lowest bins
    spectrum = np.abs(np.fft.rfft(x * np.hanning(n)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if spectrum[peak] == 0.0:
        raise ValueError("samples are silent: no dominant frequency")
    offset = 0.0
    if 0 < peak < len(spectrum) - 1:
        # Tiny floor so an exactly-zero neighbour cannot produce log(0).
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        curvature = left - 2 * centre + right
        if curvature < 0:
            offset = 0.5 * (left - right) / curvature
    return float((peak + offset) * rate / n)


def rms(samples: npt.NDArray[np.integer] | npt.NDArray[np.floating]) -> float:
    """Root-mean-square level in sample units (for int16, full scale is 32768); 0.0 when empty.

    Computed in float64 so squares of int16 samples cannot overflow. A sine of peak ``A`` has RMS
    ``A / sqrt(2)``.
    """
    if len(samples) == 0:
        return 0.0
    x = np.asarray(samples, dtype=np.float64)
    return math.sqrt(float(np.mean(x * x)))


def loud_segment(samples: npt.NDArray[np.int16], threshold: int = 1000) -> npt.NDArray[np.int16]:
    """The contiguous stretch from the first to the last sample above ``threshold`` (silence trimmed).

    Keeping it contiguous matters: dropping quiet samples from inside a tone breaks its phase and moves
    its FFT peak.
    """
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]
