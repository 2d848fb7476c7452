"""Test signals and their encodings (WAV, MP3): for tests, benchmarks and trying the bridge by hand."""

from __future__ import annotations

import io
import struct

import numpy as np
import numpy.typing as npt

__all__ = ["encode_mp3", "encode_wav", "tone"]


def tone(
    freq: float, seconds: float, rate: int, amplitude: float = 0.5, channels: int = 1
) -> npt.NDArray[np.float32]:
    """A sine tone, float32 shape (frames, channels), peak ``amplitude`` of full scale."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1)


def encode_wav(samples: npt.NDArray[np.float32], rate: int, *, sample_format: str = "pcm16") -> bytes:
    """A WAV file of ``samples`` (frames, channels): ``pcm16``, ``pcm24``, ``pcm8`` or ``float32``."""
    channels = samples.shape[1]
    clipped = np.clip(samples, -1.0, 1.0)
    if sample_format == "float32":
        tag, bits, data = 3, 32, clipped.astype("<f4").tobytes()
    elif sample_format == "pcm16":
        tag, bits, data = 1, 16, np.round(clipped * 32767).astype("<i2").tobytes()
    elif sample_format == "pcm24":
        ints = np.round(clipped * 8388607).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        tag, bits, data = 1, 24, ints.tobytes()
    elif sample_format == "pcm8":
        tag, bits, data = 1, 8, (np.round(clipped * 127) + 128).astype(np.uint8).tobytes()
    else:
        raise ValueError(f"unknown sample format {sample_format}")
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def encode_mp3(samples: npt.NDArray[np.float32], rate: int, *, bitrate: int = 64000) -> bytes:
    """An MP3 file of ``samples`` (frames, channels), encoded with the LAME inside PyAV's FFmpeg."""
    import av

    frames, channels = samples.shape
    layout = "mono" if channels == 1 else "stereo"
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout=layout)
        stream.bit_rate = bitrate
        planar = np.ascontiguousarray(samples.T, dtype=np.float32)
        step = 1152
        for start in range(0, frames, step):
            frame = av.AudioFrame.from_ndarray(planar[:, start : start + step], format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
