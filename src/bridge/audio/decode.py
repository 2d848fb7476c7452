"""Streaming decoders for MP3 and WAV: bytes in as they arrive, PCM out as soon as it can be.

Why not pydub: it needs the whole file (and an ffmpeg binary) before giving the first sample, so a
60 s TTS file would be silent until fully downloaded. PyAV's parser/decoder takes arbitrary network
pieces and yields PCM after the first few KiB (bench/playback_latency.py measures it); WAV needs no
codec at all, only a RIFF header parser.

The format is detected from the bytes (``sniff_format``), never from Content-Type. Decoders return
``DecodedAudio`` blocks (float32, shape (frames, channels), with their rate) and raise
``UnsupportedFormatError`` / ``DecodeError`` with messages meant for the cloud.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "DecodeError",
    "DecodedAudio",
    "Mp3Decoder",
    "StreamDecoder",
    "UnsupportedFormatError",
    "WavDecoder",
    "open_decoder",
    "sniff_format",
]

SNIFF_BYTES = 12
"""Bytes ``sniff_format`` needs to decide."""

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming WAV writers put these in size fields they cannot know
_MAX_CHANNELS = 8


class DecodeError(ValueError):
    """The audio is damaged or truncated."""


class UnsupportedFormatError(ValueError):
    """The bytes are not a format we decode (MP3 or WAV), or a WAV variant we do not support."""


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: npt.NDArray[np.float32]
    """Shape (frames, channels), nominal range -1..1."""
    rate: int


class StreamDecoder(Protocol):
    def push(self, data: bytes) -> list[DecodedAudio]: ...
    def finish(self) -> list[DecodedAudio]: ...
    @property
    def declared_duration_ms(self) -> int | None:
        """The length the file's header states, once known; None if it states none."""
        ...


def _is_mpeg_frame_sync(head: bytes) -> bool:
    # 11 sync bits, MPEG version != reserved (01), layer != reserved (00).
    return (
        len(head) >= 2
        and head[0] == 0xFF
        and head[1] & 0xE0 == 0xE0
        and head[1] & 0x18 != 0x08
        and head[1] & 0x06 != 0
    )


def sniff_format(head: bytes) -> Literal["wav", "mp3"] | None:
    """``"wav"``, ``"mp3"`` or None (not one we decode), from the first ``SNIFF_BYTES`` bytes."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or _is_mpeg_frame_sync(head):
        return "mp3"
    return None


def open_decoder(head: bytes) -> StreamDecoder:
    kind = sniff_format(head)
    if kind == "wav":
        return WavDecoder()
    if kind == "mp3":
        return Mp3Decoder()
    raise UnsupportedFormatError(f"not MP3 or WAV (starts with {head[:8].hex(' ')})")


class WavDecoder:
    """RIFF/WAVE: PCM 8/16/24/32-bit and float 32/64, any rate, 1-8 channels; unknown chunks skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header_done = False
        self._riff_checked = False
        self._rate = 0
        self._channels = 0
        self._sample_width = 0
        self._is_float = False
        self._data_left: int | None = None  # None: the header gave no usable size
        self._skip = 0  # bytes of an unknown chunk still to skip
        self._declared_ms: int | None = None

    @property
    def declared_duration_ms(self) -> int | None:
        return self._declared_ms

    def push(self, data: bytes) -> list[DecodedAudio]:
        self._buffer += data
        if not self._header_done:
            self._parse_header()
            if not self._header_done:
                return []
        return self._take_samples()

    def finish(self) -> list[DecodedAudio]:
        if not self._header_done:
            raise DecodeError("WAV file ended before its audio data began")
        blocks = self._take_samples()
        if self._data_left:
            raise DecodeError(f"WAV file truncated: {self._data_left} bytes of audio data missing")
        return blocks

    def _parse_header(self) -> None:
        buf = self._buffer
        if not self._riff_checked:
            if len(buf) < 12:
                return
            if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
                raise UnsupportedFormatError("not a RIFF/WAVE file")
            del buf[:12]
            self._riff_checked = True
        while True:
            if self._skip:
                skipped = min(self._skip, len(buf))
                del buf[:skipped]
                self._skip -= skipped
                if self._skip:
                    return
            if len(buf) < 8:
                return
            chunk_id, size = bytes(buf[:4]), struct.unpack("<I", buf[4:8])[0]
            if chunk_id == b"fmt ":
                if len(buf) < 8 + size:
                    return
                self._parse_fmt(bytes(buf[8 : 8 + size]))
                del buf[: 8 + size + (size & 1)]
            elif chunk_id == b"data":
                if not self._rate:
                    raise DecodeError("WAV data chunk before its fmt chunk")
                del buf[:8]
                self._data_left = None if size in _UNKNOWN_SIZES else size
                if self._data_left is not None:
                    frames = self._data_left // (self._sample_width * self._channels)
                    self._declared_ms = frames * 1000 // self._rate
                self._header_done = True
                return
            else:
                del buf[:8]
                self._skip = size + (size & 1)  # chunks are padded to even sizes

    def _parse_fmt(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise DecodeError("WAV fmt chunk too short")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]  # first two bytes of the sub-format GUID
        if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT):
            raise UnsupportedFormatError(f"WAV encoding {tag} is not supported (PCM or float only)")
        if not 1 <= channels <= _MAX_CHANNELS or not 8000 <= rate <= 192000:
            raise UnsupportedFormatError(f"WAV with {channels} channels at {rate} Hz is not supported")
        supported = (8, 16, 24, 32) if tag == _WAVE_FORMAT_PCM else (32, 64)
        if bits not in supported:
            raise UnsupportedFormatError(
                f"WAV with {bits}-bit {'float' if tag == 3 else 'PCM'} is not supported"
            )
        self._rate, self._channels = rate, channels
        self._sample_width, self._is_float = bits // 8, tag == _WAVE_FORMAT_FLOAT

    def _take_samples(self) -> list[DecodedAudio]:
        frame_bytes = self._sample_width * self._channels
        available = len(self._buffer)
        if self._data_left is not None:
            available = min(available, self._data_left)
        usable = available - available % frame_bytes
        if usable == 0:
            return []
        raw = bytes(self._buffer[:usable])
        del self._buffer[:usable]
        if self._data_left is not None:
            self._data_left -= usable
            if self._data_left < frame_bytes:  # what follows the data chunk is not audio
                self._data_left = 0
                self._buffer.clear()
        return [DecodedAudio(self._to_float(raw).reshape(-1, self._channels), self._rate)]

    def _to_float(self, raw: bytes) -> npt.NDArray[np.float32]:
        width = self._sample_width
        if self._is_float:
            return np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
        if width == 1:  # 8-bit WAV is unsigned
            return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        if width == 3:  # widen 24-bit little-endian to int32 by placing it in the top bytes
            triplets = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
            wide = np.zeros((len(triplets), 4), dtype=np.uint8)
            wide[:, 1:] = triplets
            return wide.view("<i4").reshape(-1).astype(np.float32) / 2147483648.0
        dtype, scale = ("<i2", 32768.0) if width == 2 else ("<i4", 2147483648.0)
        return np.frombuffer(raw, dtype=dtype).astype(np.float32) / scale


class Mp3Decoder:
    """MPEG audio through PyAV's push parser; an ID3v2 tag in front is skipped (the decoder rejects it)."""

    def __init__(self) -> None:
        import av  # imported here: WAV-only users and the pure-audio tests do not need FFmpeg

        self._av = av
        self._codec = av.CodecContext.create("mp3", "r")
        self._pending = bytearray()
        self._tag_left: int | None = None  # None until we know whether an ID3 tag comes first
        self._frames = 0

    @property
    def declared_duration_ms(self) -> int | None:
        return None  # MPEG streams state no length (a Xing/LAME header may; not read yet)

    def push(self, data: bytes) -> list[DecodedAudio]:
        if self._tag_left is None or self._tag_left:
            data = self._skip_id3(data)
            if not data:
                return []
        return self._decode(data)

    def finish(self) -> list[DecodedAudio]:
        blocks = self._decode(None)
        if self._frames == 0:
            raise DecodeError("no MP3 audio frames found")
        return blocks

    def _skip_id3(self, data: bytes) -> bytes:
        if self._tag_left is None:
            self._pending += data
            if len(self._pending) < 10:
                return b""
            head, data = bytes(self._pending), b""
            self._pending.clear()
            if head[:3] == b"ID3":
                size = 0
                for byte in head[6:10]:  # four "syncsafe" bytes, 7 bits each
                    size = (size << 7) | (byte & 0x7F)
                footer = 10 if head[5] & 0x10 else 0
                self._tag_left = 10 + size + footer
            else:
                self._tag_left = 0
            data = head
        skipped = min(self._tag_left, len(data))
        self._tag_left -= skipped
        return data[skipped:]

    def _decode(self, data: bytes | None) -> list[DecodedAudio]:
        blocks = []
        try:
            packets: list[Any] = list(self._codec.parse(data if data is not None else b""))
            if data is None:
                packets.append(None)  # flush the decoder
            for packet in packets:
                for frame in self._codec.decode(packet):
                    blocks.append(self._to_block(frame))
        except self._av.error.FFmpegError as err:
            raise DecodeError(f"MP3 decoding failed: {err}") from None
        self._frames += len(blocks)
        return blocks

    def _to_block(self, frame: object) -> DecodedAudio:
        array = frame.to_ndarray()  # type: ignore[attr-defined]
        planar = frame.format.is_planar  # type: ignore[attr-defined]
        channels = len(frame.layout.channels)  # type: ignore[attr-defined]
        samples = array if planar else array.reshape(-1, channels).T  # -> (channels, frames)
        if samples.dtype.kind == "i":
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
        return DecodedAudio(np.ascontiguousarray(samples.T, dtype=np.float32), int(frame.sample_rate))  # type: ignore[attr-defined]
