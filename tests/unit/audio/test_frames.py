"""Re-chunking arbitrary pieces into exact frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio import FrameChunker

FRAME = 160  # 10 ms at 16 kHz


def ramp(start: int, count: int) -> npt.NDArray[np.int16]:
    return np.arange(start, start + count, dtype=np.int16)


def test_odd_pushes_come_out_as_exact_frames_in_order() -> None:
    chunker = FrameChunker(FRAME)
    sizes = [1, 159, 160, 161, 500, 3, 0, 319]
    frames: list[npt.NDArray[np.int16]] = []
    start = 0
    for size in sizes:
        frames += chunker.push(ramp(start, size))
        start += size

    assert all(len(frame) == FRAME and frame.dtype == np.int16 for frame in frames)
    assert len(frames) == sum(sizes) // FRAME
    assert chunker.pending == sum(sizes) % FRAME
    assert np.array_equal(np.concatenate(frames), ramp(0, len(frames) * FRAME))


def test_small_pushes_are_held_until_a_frame_is_complete() -> None:
    chunker = FrameChunker(FRAME)
    assert chunker.push(ramp(0, 100)) == []
    assert chunker.pending == 100
    (frame,) = chunker.push(ramp(100, 60))
    assert np.array_equal(frame, ramp(0, FRAME))
    assert chunker.pending == 0


def test_one_large_push_gives_several_frames_and_keeps_the_remainder() -> None:
    chunker = FrameChunker(FRAME)
    frames = chunker.push(ramp(0, 3 * FRAME + 7))
    assert len(frames) == 3
    assert chunker.pending == 7


def test_frames_do_not_alias_the_pushed_array() -> None:
    chunker = FrameChunker(FRAME)
    buffer = ramp(0, FRAME + 10)
    (frame,) = chunker.push(buffer)
    buffer[:] = -1  # the caller reuses its buffer
    assert np.array_equal(frame, ramp(0, FRAME))
    assert np.array_equal(chunker.flush(pad=False), ramp(FRAME, 10))  # type: ignore[arg-type]


def test_flush_zero_pads_the_remainder_to_a_whole_frame() -> None:
    chunker = FrameChunker(FRAME)
    chunker.push(ramp(1, 50))
    frame = chunker.flush()
    assert frame is not None
    assert len(frame) == FRAME and frame.dtype == np.int16
    assert np.array_equal(frame[:50], ramp(1, 50))
    assert not frame[50:].any()
    assert chunker.pending == 0


def test_flush_without_padding_returns_the_remainder_as_is() -> None:
    chunker = FrameChunker(FRAME)
    chunker.push(ramp(1, 50))
    rest = chunker.flush(pad=False)
    assert rest is not None
    assert np.array_equal(rest, ramp(1, 50))


def test_flush_when_empty_returns_none() -> None:
    chunker = FrameChunker(FRAME)
    assert chunker.flush() is None
    chunker.push(ramp(0, FRAME))
    assert chunker.flush() is None


def test_chunker_starts_over_after_flush() -> None:
    chunker = FrameChunker(FRAME)
    chunker.push(ramp(0, 10))
    chunker.flush()
    (frame,) = chunker.push(ramp(500, FRAME))
    assert np.array_equal(frame, ramp(500, FRAME))


@pytest.mark.parametrize("size", [0, -160])
def test_frame_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="frame_samples"):
        FrameChunker(size)


def test_push_rejects_anything_but_1d_int16() -> None:
    with pytest.raises(ValueError, match="1-D int16"):
        FrameChunker(FRAME).push(np.zeros(FRAME, dtype=np.float32))
