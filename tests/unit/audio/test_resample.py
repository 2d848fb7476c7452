"""Streaming resampling: rate, length, pitch and level survive arbitrary piece sizes."""

from __future__ import annotations

from itertools import cycle

import numpy as np
import numpy.typing as npt
import pytest

from audio_checks import dominant_frequency, rms, sine
from bridge.audio import PcmFormatError, StreamResampler

# Deliberately awkward piece sizes: single samples, primes, and pieces larger than soxr's internal blocks.
PIECE_SIZES = (1, 7, 13, 479, 997, 2049, 3)


def pieces(samples: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    out: list[npt.NDArray[np.int16]] = []
    start = 0
    for size in cycle(PIECE_SIZES):
        if start >= len(samples):
            return out
        out.append(samples[start : start + size])
        start += size
    raise AssertionError("unreachable")


def resample_in_pieces(resampler: StreamResampler, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    outputs = [resampler.push(piece) for piece in pieces(samples)]
    outputs.append(resampler.flush())
    return np.concatenate(outputs)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48_000, 16_000), (16_000, 48_000), (44_100, 48_000)])
def test_tone_keeps_its_pitch_length_and_level(in_rate: int, out_rate: int) -> None:
    tone = sine(440, seconds=1.0, rate=in_rate)

    out = resample_in_pieces(StreamResampler(in_rate, out_rate), tone)

    assert out.dtype == np.int16
    assert len(out) == pytest.approx(len(tone) * out_rate / in_rate, rel=0.01)
    assert dominant_frequency(out, out_rate) == pytest.approx(440, abs=2)
    # Judge the level away from the edges, where the filter is still filling or emptying.
    middle = out[len(out) // 4 : 3 * len(out) // 4]
    assert rms(middle) == pytest.approx(rms(tone), rel=0.02)


def test_piece_boundaries_do_not_change_the_output() -> None:
    tone = sine(440, seconds=0.5, rate=48_000)
    whole = StreamResampler(48_000, 16_000)
    at_once = np.concatenate((whole.push(tone), whole.flush()))

    in_pieces = resample_in_pieces(StreamResampler(48_000, 16_000), tone)

    assert len(in_pieces) == len(at_once)
    # soxr's float arithmetic differs in the last bits with the block layout, which rounding can turn
    # into an LSB; a click would be thousands.
    assert np.abs(in_pieces.astype(np.int32) - at_once).max() <= 4


def test_resampler_is_reusable_after_flush() -> None:
    tone = sine(1000, seconds=0.2, rate=48_000)
    resampler = StreamResampler(48_000, 16_000)
    first = resample_in_pieces(resampler, tone)
    second = resample_in_pieces(resampler, tone)
    assert len(first) == len(second)
    np.testing.assert_array_equal(first, second)  # no dither: the same input gives the same output


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16_000, 48_000), (48_000, 16_000), (44_100, 48_000)])
def test_digital_silence_stays_digital_silence(in_rate: int, out_rate: int) -> None:
    """soxr's int16 output is dithered: silence came out as +-1 noise, which phones heard and which
    kept Opus from encoding silence cheaply. A tone's tail also ends in exact zeros."""
    silence = np.zeros(in_rate, dtype=np.int16)
    resampler = StreamResampler(in_rate, out_rate)

    assert not np.any(resample_in_pieces(resampler, silence))

    tone_then_silence = np.concatenate((sine(1000, seconds=0.1, rate=in_rate), silence))
    out = resample_in_pieces(resampler, tone_then_silence)
    after_the_tail = out[int(0.2 * out_rate) :]  # the tone and the filter's few ms of ringing
    assert len(after_the_tail) > out_rate // 2
    assert not np.any(after_the_tail)


def test_equal_rates_pass_samples_through_untouched() -> None:
    tone = sine(440, seconds=0.1, rate=16_000)
    resampler = StreamResampler(16_000, 16_000)
    assert resampler.passthrough
    assert resampler.push(tone) is tone
    flushed = resampler.flush()
    assert flushed.dtype == np.int16 and len(flushed) == 0


def test_output_starts_late_but_nothing_is_lost_by_flush() -> None:
    # soxr holds samples back at first; flush must hand them all over.
    resampler = StreamResampler(48_000, 16_000)
    first = resampler.push(sine(440, seconds=0.01, rate=48_000))
    assert len(first) < 160
    assert len(first) + len(resampler.flush()) == 160


@pytest.mark.parametrize(("in_rate", "out_rate"), [(7_999, 16_000), (16_000, 192_001), (0, 16_000)])
def test_rates_outside_8k_to_192k_are_rejected(in_rate: int, out_rate: int) -> None:
    with pytest.raises(PcmFormatError, match=r"8000\.\.192000"):
        StreamResampler(in_rate, out_rate)


def test_unknown_quality_is_rejected() -> None:
    with pytest.raises(ValueError, match="Quality"):
        StreamResampler(48_000, 16_000, quality="best")


@pytest.mark.parametrize(
    "bad",
    [np.zeros(10, dtype=np.float32), np.zeros(10, dtype=np.int32), np.zeros((10, 2), dtype=np.int16)],
)
def test_push_rejects_anything_but_1d_int16(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(PcmFormatError, match="1-D int16"):
        StreamResampler(48_000, 16_000).push(bad)  # type: ignore[arg-type]
