"""Streaming decoders: every WAV variant and MP3, fed in awkward pieces, give back the tone."""

from __future__ import annotations

import numpy as np
import pytest

from audio_checks import dominant_frequency
from bridge.audio.decode import (
    DecodeError,
    Mp3Decoder,
    UnsupportedFormatError,
    WavDecoder,
    open_decoder,
    sniff_format,
)
from bridge.audio.synth import encode_mp3, encode_wav, tone


def decode_in_pieces(data: bytes, piece: int) -> tuple[np.ndarray, int]:
    decoder = open_decoder(data[:12])
    blocks = []
    for start in range(0, len(data), piece):
        blocks += decoder.push(data[start : start + piece])
    blocks += decoder.finish()
    assert len({b.rate for b in blocks}) == 1
    return np.concatenate([b.samples for b in blocks]), blocks[0].rate


@pytest.mark.parametrize("sample_format", ["pcm8", "pcm16", "pcm24", "float32"])
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 2), (22050, 1), (44100, 2), (48000, 1)])
def test_wav_variants_decode_to_the_same_tone_from_odd_sized_pieces(
    sample_format: str, rate: int, channels: int
) -> None:
    data = encode_wav(tone(440, 0.5, rate, channels=channels), rate, sample_format=sample_format)
    samples, got_rate = decode_in_pieces(data, piece=1031)
    assert got_rate == rate and samples.shape == (rate // 2, channels)
    assert abs(dominant_frequency(samples[:, 0], rate) - 440) < 2
    assert abs(float(np.abs(samples).max()) - 0.5) < 0.02


def test_unknown_wav_chunks_are_skipped() -> None:
    data = encode_wav(tone(440, 0.2, 16000), 16000)
    junk = b"LIST" + (5).to_bytes(4, "little") + b"abcde\x00"  # odd size: padded to even
    patched = data[:12] + junk + data[12:]
    samples, _ = decode_in_pieces(patched, piece=7)
    assert len(samples) == 3200


def test_a_truncated_wav_is_a_decode_error_after_what_arrived() -> None:
    data = encode_wav(tone(440, 1.0, 16000), 16000)
    decoder = WavDecoder()
    blocks = decoder.push(data[: len(data) // 2])
    assert sum(len(b.samples) for b in blocks) > 0  # what arrived is playable
    with pytest.raises(DecodeError, match="truncated"):
        decoder.finish()


def test_a_wav_without_a_size_streams_until_the_end() -> None:
    data = bytearray(encode_wav(tone(440, 0.3, 16000), 16000))
    data[40:44] = b"\xff\xff\xff\xff"  # what streaming TTS writers put in the data size
    samples, _ = decode_in_pieces(bytes(data), piece=500)
    assert len(samples) == 4800


@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_with_an_id3_tag_decodes_from_small_pieces_with_the_first_pcm_early(channels: int) -> None:
    data = encode_mp3(tone(880, 1.0, 44100, channels=channels), 44100)
    assert data[:3] == b"ID3"
    decoder = Mp3Decoder()
    first_pcm_after = None
    blocks = []
    for start in range(0, len(data), 512):
        new = decoder.push(data[start : start + 512])
        if new and first_pcm_after is None:
            first_pcm_after = start + 512
        blocks += new
    blocks += decoder.finish()
    samples = np.concatenate([b.samples for b in blocks])
    assert first_pcm_after is not None and first_pcm_after < len(data) // 2
    assert samples.shape[1] == channels and abs(dominant_frequency(samples[:, 0], 44100) - 880) < 2
    assert 44100 <= len(samples) <= 44100 + 4 * 1152  # encoder delay and padding (not trimmed yet)


def test_formats_are_sniffed_from_content() -> None:
    assert sniff_format(encode_wav(tone(1, 0.01, 8000), 8000)[:12]) == "wav"
    assert sniff_format(encode_mp3(tone(440, 0.1, 44100), 44100)[:12]) == "mp3"
    assert sniff_format(b"\xff\xfb\x90\x00" + bytes(8)) == "mp3"  # a bare MPEG frame header
    assert sniff_format(b"<html><body>") is None
    with pytest.raises(UnsupportedFormatError, match="not MP3 or WAV"):
        open_decoder(b"OggS\x00\x02" + bytes(6))


@pytest.mark.parametrize(
    ("fmt_tag", "bits", "message"),
    [(2, 16, "encoding 2"), (1, 12, "12-bit PCM"), (3, 16, "16-bit float")],
)
def test_unsupported_wav_encodings_are_refused_clearly(fmt_tag: int, bits: int, message: str) -> None:
    data = bytearray(encode_wav(tone(440, 0.1, 16000), 16000))
    data[20:22] = fmt_tag.to_bytes(2, "little")
    data[34:36] = bits.to_bytes(2, "little")
    with pytest.raises(UnsupportedFormatError, match=message):
        WavDecoder().push(bytes(data))


def test_garbage_after_an_mp3_header_is_a_decode_error() -> None:
    decoder = Mp3Decoder()
    with pytest.raises(DecodeError):
        decoder.push(b"\xff\xfb" + bytes(range(256)) * 8)
        decoder.finish()
