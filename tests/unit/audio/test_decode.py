"""Streaming decoders: every WAV variant and MP3, fed in awkward pieces, give back the tone."""

from __future__ import annotations

import av
import numpy as np
import pytest

from audio_checks import dominant_frequency
from bridge.audio.decode import (
    DecodeError,
    Mp3Decoder,
    Mp3InfoHeader,
    UnsupportedFormatError,
    WavDecoder,
    open_decoder,
    read_mp3_info_header,
    sniff_format,
)
from bridge.testing.synth import encode_mp3, encode_wav, tone


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
    assert len(samples) == 44100  # the LAME tag's delay and padding are trimmed


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


# --- MP3 gapless: the Xing/Info + LAME header in the first frame -------------------------------------


def chirp(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A sweep 200 Hz -> 3.2 kHz: unlike a tone, it correlates with itself at one lag only."""
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t * t / seconds))).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1)


def first_frame(data: bytes) -> bytes:
    """The bytes after ``encode_mp3``'s ID3 tag, which start with the Info frame."""
    assert data[:3] == b"ID3"
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | byte
    return data[10 + size :]


def mp3_frame_sizes(body: bytes) -> list[int]:
    return [packet.size for packet in av.CodecContext.create("mp3", "r").parse(body)]


def decode_mp3(data: bytes, piece: int) -> tuple[np.ndarray, Mp3Decoder, int | None]:
    """Decoded samples, the decoder, and after how many bytes it knew the declared duration."""
    decoder = Mp3Decoder()
    blocks, known_after = [], None
    for start in range(0, len(data), piece):
        blocks += decoder.push(data[start : start + piece])
        if known_after is None and decoder.declared_duration_ms is not None:
            known_after = start + piece
    blocks += decoder.finish()
    return np.concatenate([b.samples for b in blocks]), decoder, known_after


def best_lag(decoded: np.ndarray, original: np.ndarray, max_lag: int = 64) -> tuple[int, float]:
    """The lag of ``decoded`` behind ``original`` that matches best, and its correlation coefficient."""
    n = min(len(decoded), len(original)) - 2 * max_lag
    ref = original[max_lag : max_lag + n]
    scores = [
        float(np.dot(decoded[max_lag + lag : max_lag + lag + n], ref)) for lag in range(-max_lag, max_lag + 1)
    ]
    best = int(np.argmax(scores))
    norm = float(np.linalg.norm(ref) * np.linalg.norm(decoded[max_lag + best - max_lag :][:n]))
    return best - max_lag, scores[best] / norm


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [44100, 24000])
def test_mp3_is_gapless_and_its_length_known_from_the_first_frame(rate: int, channels: int) -> None:
    data = encode_mp3(tone(880, 1.0, rate, channels=channels), rate)
    samples, decoder, known_after = decode_mp3(data, piece=97)
    assert known_after is not None and known_after < 400  # ID3 tag (45 bytes) + the header's 180
    assert decoder.declared_duration_ms is not None and abs(decoder.declared_duration_ms - 1000) <= 1
    assert samples.shape == (rate, channels)  # exactly the input: LAME states delay and padding exactly


@pytest.mark.parametrize(("rate", "spf"), [(44100, 1152), (24000, 576)])
def test_the_lame_header_states_the_frames_after_itself_and_its_delay(rate: int, spf: int) -> None:
    body = first_frame(encode_mp3(tone(440, 1.0, rate), rate))
    header = read_mp3_info_header(body[:200])
    assert header is not None and header.rate == rate and header.samples_per_frame == spf
    assert header.delay == 576  # LAME's own delay; the decoder adds 529
    assert header.frames == len(mp3_frame_sizes(body)) - 1  # the Info frame is not counted
    assert header.padding is not None
    assert header.frames * spf - header.delay - header.padding == rate


@pytest.mark.parametrize("rate", [44100, 24000])
def test_mp3_decoding_lines_up_with_the_input(rate: int) -> None:
    original = chirp(1.0, rate)
    samples, _, _ = decode_mp3(encode_mp3(original, rate), piece=97)
    lag, match = best_lag(samples[:, 0], original[:, 0])
    assert lag == 0 and match > 0.9


def test_mp3_fed_one_byte_at_a_time_is_trimmed_the_same() -> None:
    original = chirp(0.3, 24000, channels=2)
    samples, decoder, known_after = decode_mp3(encode_mp3(original, 24000), piece=1)
    assert samples.shape == original.shape and decoder.declared_duration_ms == 300
    assert known_after is not None and known_after < 400
    assert best_lag(samples[:, 1], original[:, 1])[0] == 0


def test_the_end_padding_is_held_back_not_emitted_then_dropped() -> None:
    data = encode_mp3(tone(440, 1.0, 44100), 44100)
    decoder = Mp3Decoder()
    before_finish = sum(
        len(b.samples) for start in range(0, len(data), 300) for b in decoder.push(data[start : start + 300])
    )
    after_finish = sum(len(b.samples) for b in decoder.finish())
    assert 44100 - 2 * 1152 <= before_finish <= 44100  # held back: the padding only, not more
    assert before_finish + after_finish == 44100


# 16 kb/s at 24 kHz: 48-byte frames, so audio decodes before enough bytes arrived to rule out a header.
@pytest.mark.parametrize(("rate", "bitrate", "spf"), [(44100, 64000, 1152), (24000, 16000, 576)])
def test_mp3_without_an_info_frame_decodes_untrimmed_with_no_declared_length(
    rate: int, bitrate: int, spf: int
) -> None:
    data = encode_mp3(tone(440, 1.0, rate), rate, bitrate=bitrate)
    body = first_frame(data)
    sizes = mp3_frame_sizes(body)
    stripped = data[: len(data) - len(body)] + body[sizes[0] :]  # keep the ID3 tag, drop the Info frame
    assert b"Info" not in stripped[:400] and read_mp3_info_header(body[sizes[0] :]) is None
    samples, decoder, _ = decode_mp3(stripped, piece=97)
    assert decoder.declared_duration_ms is None
    assert len(samples) == (len(sizes) - 1) * spf  # every audio frame, delay and padding included
    assert abs(dominant_frequency(samples[:, 0], rate) - 440) < 2


def _patch_lame_delays(data: bytes, delay: int, padding: int) -> bytes:
    body = first_frame(data)
    at = len(data) - len(body) + body.index(b"Info") + 141
    return data[:at] + ((delay << 12) | padding).to_bytes(3, "big") + data[at + 3 :]


@pytest.mark.parametrize("seconds", [0.1, 1.0])  # shorter than the delays claim / long enough to hold them
@pytest.mark.parametrize("rate", [44100, 24000])
def test_absurd_lame_delay_and_padding_are_ignored_rather_than_swallowing_the_audio(
    rate: int, seconds: float
) -> None:
    data = _patch_lame_delays(encode_mp3(tone(440, seconds, rate), rate), 4095, 4095)
    samples, decoder, _ = decode_mp3(data, piece=97)
    spf = 1152 if rate == 44100 else 576
    frames = len(mp3_frame_sizes(first_frame(data))) - 1
    assert len(samples) == frames * spf  # only the Info frame dropped
    assert decoder.declared_duration_ms == frames * spf * 1000 // rate
    assert abs(dominant_frequency(samples[:, 0], rate) - 440) < 15


def test_an_absurd_frame_count_or_truncated_header_does_not_crash() -> None:
    data = bytearray(encode_mp3(tone(440, 0.2, 44100), 44100))
    info_at = len(data) - len(first_frame(bytes(data))) + bytes(data).index(b"Info")
    data[info_at + 8 : info_at + 12] = b"\xff\xff\xff\xff"
    samples, decoder, _ = decode_mp3(bytes(data), piece=97)
    assert len(samples) == 8820 and decoder.declared_duration_ms is not None
    head = first_frame(bytes(data))[:180]
    for end in range(len(head) + 1):
        read_mp3_info_header(head[:end])  # any prefix: a header or None, never an exception


@pytest.mark.parametrize(
    ("byte1", "byte3", "rate", "spf", "xing_at"),
    [
        (0xFB, 0xC0, 44100, 1152, 4 + 17),  # MPEG-1 mono
        (0xFB, 0x40, 44100, 1152, 4 + 32),  # MPEG-1 joint stereo
        (0xF3, 0xC0, 22050, 576, 4 + 9),  # MPEG-2 mono
        (0xF3, 0x00, 22050, 576, 4 + 17),  # MPEG-2 stereo
        (0xE3, 0xC0, 11025, 576, 4 + 9),  # MPEG-2.5 mono
    ],
)
def test_the_xing_header_is_found_after_the_side_info(
    byte1: int, byte3: int, rate: int, spf: int, xing_at: int
) -> None:
    frame = bytearray(400)
    frame[:4] = bytes([0xFF, byte1, 0x50, byte3])
    frame[xing_at : xing_at + 12] = b"Xing" + (1).to_bytes(4, "big") + (100).to_bytes(4, "big")
    frame[xing_at + 12 : xing_at + 16] = b"LAME"  # frame count only: the LAME tag follows at once
    frame[xing_at + 12 + 21 : xing_at + 12 + 24] = ((576 << 12) | 1000).to_bytes(3, "big")
    assert read_mp3_info_header(bytes(frame)) == Mp3InfoHeader(rate, spf, 100, 576, 1000)
    frame[xing_at + 12 : xing_at + 16] = b"FhG "  # not an encoder whose delays FFmpeg trusts
    assert read_mp3_info_header(bytes(frame)) == Mp3InfoHeader(rate, spf, 100)
    frame[xing_at - 1 : xing_at + 3] = frame[xing_at : xing_at + 4]  # one byte early: not there
    assert read_mp3_info_header(bytes(frame)) is None


def test_a_vbri_header_gives_the_frame_count() -> None:
    frame = bytes([0xFF, 0xFB, 0x90, 0x40]) + bytes(32) + b"VBRI" + bytes.fromhex("0001 0000 0000")
    header = read_mp3_info_header(frame + (5000).to_bytes(4, "big") + (100).to_bytes(4, "big") + bytes(20))
    assert header == Mp3InfoHeader(44100, 1152, 100)
    assert header.duration_ms == 100 * 1152 * 1000 // 44100
