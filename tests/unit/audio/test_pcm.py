"""s16le bytes <-> mono int16 samples, and gain."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import PcmFormatError, apply_gain, s16le_from_samples, samples_from_s16le


def stereo(left: list[int], right: list[int]) -> bytes:
    return s16le_from_samples(np.column_stack((left, right)).astype(np.int16))


def test_mono_decodes_little_endian_int16() -> None:
    samples = samples_from_s16le(b"\x01\x00\xff\xff\x00\x80\xff\x7f", channels=1)
    assert samples.dtype == np.int16
    assert samples.tolist() == [1, -1, -32768, 32767]


def test_mono_round_trips_byte_for_byte() -> None:
    pcm = bytes(range(256)) * 25
    assert s16le_from_samples(samples_from_s16le(pcm, channels=1)) == pcm


def test_empty_pcm_is_zero_samples() -> None:
    assert samples_from_s16le(b"", channels=2).shape == (0,)


def test_odd_byte_count_is_rejected_with_a_message_a_client_can_act_on() -> None:
    with pytest.raises(PcmFormatError) as err:
        samples_from_s16le(bytes(3201), channels=1)
    assert str(err.value) == (
        "pcm_data has 3201 bytes: s16le needs whole samples (a multiple of 2 bytes per channel, channels=1)"
    )


def test_stereo_needs_whole_frames_of_both_channels() -> None:
    with pytest.raises(PcmFormatError, match=r"pcm_data has 6 bytes.*channels=2"):
        samples_from_s16le(bytes(6), channels=2)


@pytest.mark.parametrize("channels", [0, -1, 9])
def test_channel_count_outside_1_to_8_is_rejected(channels: int) -> None:
    with pytest.raises(PcmFormatError, match=r"channels must be in 1\.\.8"):
        samples_from_s16le(bytes(48), channels=channels)


def test_pcm_format_error_is_a_value_error() -> None:
    assert issubclass(PcmFormatError, ValueError)


def test_stereo_downmix_averages_the_channels() -> None:
    pcm = stereo([1000, 1000, 300, 3, -3], [-1000, 3000, 100, 4, -4])
    assert samples_from_s16le(pcm, channels=2).tolist() == [0, 2000, 200, 4, -3]


def test_stereo_downmix_of_full_scale_does_not_overflow() -> None:
    pcm = stereo([32767, -32768, 32767], [32767, -32768, -32768])
    assert samples_from_s16le(pcm, channels=2).tolist() == [32767, -32768, 0]


def test_multichannel_downmix() -> None:
    frames = np.array([[300, 600, 900], [-32768, -32768, -32768]], dtype=np.int16)
    assert samples_from_s16le(s16le_from_samples(frames), channels=3).tolist() == [600, -32768]


def test_encoding_rejects_samples_that_are_not_int16() -> None:
    with pytest.raises(PcmFormatError, match="int32"):
        s16le_from_samples(np.zeros(4, dtype=np.int32))


def test_gain_one_returns_the_input_itself() -> None:
    samples = np.array([1, -2, 3], dtype=np.int16)
    assert apply_gain(samples, 1.0) is samples


def test_gain_zero_is_silence_of_the_same_shape() -> None:
    result = apply_gain(np.array([1, -32768, 32767], dtype=np.int16), 0.0)
    assert result.dtype == np.int16
    assert result.tolist() == [0, 0, 0]


def test_gain_half_halves_and_rounds() -> None:
    result = apply_gain(np.array([1000, -1000, 32767, -32768, 5], dtype=np.int16), 0.5)
    assert result.dtype == np.int16
    assert result.tolist() == [500, -500, 16384, -16384, 2]  # 2.5 rounds to even


def test_gain_above_one_clips_to_the_int16_range() -> None:
    result = apply_gain(np.array([20000, -20000, 100], dtype=np.int16), 2.0)
    assert result.tolist() == [32767, -32768, 200]


def test_gain_does_not_modify_its_input() -> None:
    samples = np.array([100, 200], dtype=np.int16)
    apply_gain(samples, 0.5)
    assert samples.tolist() == [100, 200]


@pytest.mark.parametrize("gain", [-0.5, float("nan"), float("inf")])
def test_negative_or_non_finite_gain_is_rejected(gain: float) -> None:
    with pytest.raises(ValueError, match="gain"):
        apply_gain(np.zeros(3, dtype=np.int16), gain)
