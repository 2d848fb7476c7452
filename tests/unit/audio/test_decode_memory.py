"""The WAV decoder keeps only what it needs, whatever sizes the file states (tracemalloc peaks)."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator

import pytest

from bridge.audio.decode import DecodeError, WavDecoder

PIECE = 4096  # what playback hands the decoder at a time
TAIL = 4 * 1024 * 1024
BOUND = 64 * 1024
"""Peak Python memory a decoder may add while 4 MiB stream through it: a few pieces, never the file."""


def fmt_chunk(size: int | None = None, *, rate: int = 16000) -> bytes:
    body = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return b"fmt " + struct.pack("<I", len(body) if size is None else size) + body


def riff(*chunks: bytes) -> bytes:
    body = b"".join(chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def pieces(size: int) -> Iterator[bytes]:
    filler = bytes(range(256)) * (PIECE // 256)
    for _ in range(size // PIECE):
        yield filler


def peak_while_streaming(decoder: WavDecoder, head: bytes, tail_bytes: int) -> tuple[int, int]:
    """Push ``head`` then ``tail_bytes`` in pieces; return (peak bytes above the start, frames out)."""
    frames = 0
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for block in decoder.push(head):
            frames += len(block.samples)
        for piece in pieces(tail_bytes):
            for block in decoder.push(piece):
                frames += len(block.samples)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, frames


def test_what_follows_the_data_chunk_is_dropped_as_it_arrives() -> None:
    decoder = WavDecoder()
    head = riff(fmt_chunk(), b"data" + struct.pack("<I", 320) + bytes(320))
    peak, frames = peak_while_streaming(decoder, head, TAIL)
    print(f"320-byte data chunk + {TAIL >> 20} MiB after it: peak {peak} bytes")
    assert frames == 160
    assert peak < BOUND, peak
    assert decoder.finish() == []


def test_a_fmt_chunk_with_a_lying_size_is_not_buffered() -> None:
    decoder = WavDecoder()
    peak, frames = peak_while_streaming(decoder, riff(fmt_chunk(size=0x7FFFFFF0)), TAIL)
    print(f"fmt chunk claiming 2 GiB + {TAIL >> 20} MiB: peak {peak} bytes")
    assert frames == 0 and peak < BOUND, peak
    with pytest.raises(DecodeError, match="before its audio data"):
        decoder.finish()


def test_a_long_fmt_chunk_is_read_from_its_start_and_the_rest_skipped() -> None:
    body = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16) + bytes(1000)
    data = riff(b"fmt " + struct.pack("<I", len(body)) + body, b"data" + struct.pack("<I", 4) + bytes(4))
    decoder = WavDecoder()
    frames = sum(
        len(b.samples) for start in range(0, len(data), 7) for b in decoder.push(data[start : start + 7])
    )
    assert frames == 2 and decoder.finish() == []


def test_an_unknown_chunk_with_a_huge_size_is_skipped_not_buffered() -> None:
    decoder = WavDecoder()
    head = riff(fmt_chunk(), b"junk" + struct.pack("<I", 0xFFFFFFF0))
    peak, frames = peak_while_streaming(decoder, head, TAIL)
    print(f"unknown chunk claiming 4 GiB + {TAIL >> 20} MiB: peak {peak} bytes")
    assert frames == 0 and peak < BOUND, peak
