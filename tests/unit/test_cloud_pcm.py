"""Cloud PCM -> published frames: validation, downmix, resampling, whole 10 ms frames."""

from __future__ import annotations

import numpy as np
import pytest

from audio_checks import dominant_frequency, sine
from bridge._gen.mentra.livekit.bridge import AudioChunk
from bridge.errors import AudioFormatError
from bridge.livekit_io.outbound import track_name
from bridge.rpc.stream_link import CloudPcmConverter


def test_track_names_follow_the_contract() -> None:
    assert [track_name(i) for i in (0, 1, 2, 3, 7)] == ["speaker", "app_audio", "tts", "track_3", "track_7"]


def test_16k_mono_becomes_48k_in_whole_10ms_frames_with_the_same_tone() -> None:
    converter = CloudPcmConverter(out_rate=48000)
    tone = sine(440, 1.0, 16000)
    out = [
        converter.convert(AudioChunk(pcm_data=tone[i : i + 1600].tobytes(), sample_rate=16000, channels=1))
        for i in range(0, 16000, 1600)
    ]
    assert all(len(o) % 480 == 0 for o in out)
    joined = np.concatenate(out)
    assert abs(len(joined) - 48000) <= 480
    assert abs(dominant_frequency(joined, 48000) - 440) < 2


def test_stereo_and_other_rates_are_downmixed_and_resampled_not_refused() -> None:
    converter = CloudPcmConverter(out_rate=48000)
    mono = sine(880, 0.5, 8000)
    stereo = np.repeat(mono, 2)
    out = converter.convert(AudioChunk(pcm_data=stereo.tobytes(), sample_rate=8000, channels=2, track_id=1))
    assert 24000 - 2400 <= len(out) <= 24000  # soxr holds back up to ~50 ms until more input comes
    assert abs(dominant_frequency(out, 48000) - 880) < 3


def test_unset_rate_and_channels_mean_16k_mono() -> None:
    out = CloudPcmConverter(out_rate=16000).convert(AudioChunk(pcm_data=sine(440, 0.1, 16000).tobytes()))
    assert len(out) == 1600


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (AudioChunk(pcm_data=b"\x00\x01\x02"), "3 bytes"),
        (AudioChunk(pcm_data=b"\x00" * 6, channels=2), "6 bytes"),
        (AudioChunk(pcm_data=b"\x00" * 4, sample_rate=96000), "sample_rate=96000"),
        (AudioChunk(pcm_data=b"\x00" * 4, channels=3), "channels=3"),
        (AudioChunk(pcm_data=b"\x00" * 4, track_id=-1), "track_id -1"),
        (AudioChunk(pcm_data=b"\x00" * 4, track_id=16), "track_id 16"),
    ],
)
def test_unusable_pcm_is_refused_with_a_clear_message(chunk: AudioChunk, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        CloudPcmConverter(out_rate=48000).convert(chunk)
