"""Streaming decoders for MP3 and WAV: bytes in as they arrive, PCM out as soon as it can be.

Why not pydub: it needs the whole file (and an ffmpeg binary) before giving the first sample, so a
60 s TTS file would be silent until fully downloaded. PyAV's parser/decoder takes arbitrary network
pieces and yields PCM after the first few KiB (`python -m bench.playback_latency` measures it); WAV needs no
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
    "Mp3InfoHeader",
    "StreamDecoder",
    "UnsupportedFormatError",
    "WavDecoder",
    "open_decoder",
    "read_mp3_info_header",
    "sniff_format",
]

SNIFF_BYTES = 12
"""Bytes ``sniff_format`` needs to decide."""

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming WAV writers put these in size fields they cannot know
_MAX_CHANNELS = 8
_FMT_BYTES_READ = 40  # WAVE_FORMAT_EXTENSIBLE's fmt chunk; the rest of a longer one is skipped unread

_MP3_DECODER_DELAY = 528 + 1  # samples FFmpeg's mp3 decoder lags its input by (libavformat/mp3dec.c)
_MP3_INFO_BYTES = 4 + 32 + 144  # enough of the first frame for every header field we read
_MP3_SYNC_SEARCH_BYTES = 4096  # junk before the first frame beyond this: give up on the header
_MP3_MAX_PAD_FRAMES = 3  # LAME delay/padding are under 2 frames; more is corruption, not padding
_MPEG1_RATES = (44100, 48000, 32000)
_MPEG_RATE_SHIFT = {0b11: 0, 0b10: 1, 0b00: 2}  # MPEG-1, MPEG-2 (half rates), MPEG-2.5 (quarter)
_XING_FRAMES, _XING_BYTES, _XING_TOC, _XING_QUALITY = 1, 2, 4, 8
_LAME_ENCODERS = (b"LAME", b"Lavf", b"Lavc")  # FFmpeg trusts delay/padding only from these


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


@dataclass(frozen=True, slots=True)
class Mp3InfoHeader:
    """What a Xing/Info (with LAME tag) or VBRI header in the first MPEG frame says about the stream.

    The frame holding it carries no audio (it decodes as one frame of silence).
    """

    rate: int
    samples_per_frame: int
    frames: int | None
    """Audio frames in the stream, the header frame itself not counted."""
    delay: int | None = None
    """Encoder delay in samples (LAME tag); None when not stated or implausible."""
    padding: int | None = None
    """Samples the encoder appended at the end (LAME tag); None like ``delay``."""

    @property
    def duration_ms(self) -> int | None:
        if not self.frames:
            return None
        samples = self.frames * self.samples_per_frame - (self.delay or 0) - (self.padding or 0)
        return samples * 1000 // self.rate


def read_mp3_info_header(frame: bytes) -> Mp3InfoHeader | None:
    """The info header of ``frame`` (bytes from a layer III frame sync on), or None if it has none."""
    if len(frame) < 4 or not _is_mpeg_frame_sync(frame):
        return None
    version, layer, rate_index = frame[1] >> 3 & 3, frame[1] >> 1 & 3, frame[2] >> 2 & 3
    if layer != 0b01 or rate_index == 3:  # layer III only; rate index 3 is reserved
        return None
    rate = _MPEG1_RATES[rate_index] >> _MPEG_RATE_SHIFT[version]
    mpeg1, mono = version == 0b11, frame[3] >> 6 == 0b11
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    spf = 1152 if mpeg1 else 576
    xing_at = 4 + side_info
    if frame[xing_at : xing_at + 4] in (b"Xing", b"Info"):
        return _read_xing(frame, xing_at, rate, spf)
    if frame[36:40] == b"VBRI" and _read_be(frame, 40, 2) == 1:  # always 32 bytes after the header
        return Mp3InfoHeader(rate, spf, _read_be(frame, 36 + 14, 4) or None)
    return None


def _read_xing(frame: bytes, at: int, rate: int, spf: int) -> Mp3InfoHeader:
    flags = _read_be(frame, at + 4, 4) or 0
    pos, frames = at + 8, None
    if flags & _XING_FRAMES:
        frames, pos = _read_be(frame, pos, 4) or None, pos + 4
    # The LAME tag follows the optional fields, as FFmpeg reads it: Xing + 120 when all are present.
    pos += 4 * bool(flags & _XING_BYTES) + 100 * bool(flags & _XING_TOC) + 4 * bool(flags & _XING_QUALITY)
    delays = _read_be(frame, pos + 21, 3) if frame[pos : pos + 4] in _LAME_ENCODERS else None
    if delays is None:
        return Mp3InfoHeader(rate, spf, frames)
    delay, padding = delays >> 12, delays & 0xFFF
    limit = _MP3_MAX_PAD_FRAMES * spf
    if delay > limit or padding > limit or (frames and delay + padding > frames * spf):
        return Mp3InfoHeader(rate, spf, frames)  # corrupt: trimming by it could swallow the audio
    return Mp3InfoHeader(rate, spf, frames, delay, padding)


def _read_be(data: bytes, at: int, size: int) -> int | None:
    """The big-endian integer at ``at``, or None if ``data`` ends first."""
    return int.from_bytes(data[at : at + size], "big") if len(data) >= at + size else None


def _first_frame_sync(data: bytes) -> int | None:
    at = data.find(b"\xff")
    while 0 <= at < len(data) - 1:
        if _is_mpeg_frame_sync(data[at : at + 2]):
            return at
        at = data.find(b"\xff", at + 1)
    return None


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
    """RIFF/WAVE: PCM 8/16/24/32-bit and float 32/64, any rate, 1-8 channels; unknown chunks skipped.

    Memory stays small whatever the file says: unknown chunks are skipped as they arrive, only the
    first ``_FMT_BYTES_READ`` bytes of a fmt chunk are kept, and once the data chunk has ended what
    follows is dropped as it arrives. Between pushes the buffer holds less than 8 + 40 bytes of
    header or one sample frame of audio.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data_done = False  # the data chunk has ended: the rest of the file is not audio
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
        if self._data_done:
            return []
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
                kept = min(size, _FMT_BYTES_READ)  # a lying size must not make us buffer the file
                if len(buf) < 8 + kept:
                    return
                self._parse_fmt(bytes(buf[8 : 8 + kept]))
                del buf[: 8 + kept]
                self._skip = size - kept + (size & 1)
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
        raw = bytes(self._buffer[:usable])
        del self._buffer[:usable]
        if self._data_left is not None:
            self._data_left -= usable
            if self._data_left < frame_bytes:  # what follows the data chunk is not audio
                self._data_left = 0
                self._data_done = True
                self._buffer.clear()
        if not raw:
            return []
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
    """MPEG audio through PyAV's push parser; an ID3v2 tag in front is skipped (the decoder rejects it).

    Gapless as FFmpeg's mp3 demuxer makes it: a Xing/Info or VBRI header frame is not output, and a LAME
    tag's encoder delay (plus the decoder's own) and end padding are trimmed. Working at codec level we
    see that header only as bytes, so ``read_mp3_info_header`` reads it from the first frame.
    """

    def __init__(self) -> None:
        import av  # imported here: WAV-only users and the pure-audio tests do not need FFmpeg

        self._av = av
        self._codec = av.CodecContext.create("mp3", "r")
        self._pending = bytearray()
        self._tag_left: int | None = None  # None until we know whether an ID3 tag comes first
        self._frames = 0
        self._head = bytearray()  # the first bytes after the tag, until the info header is read
        self._header_read = False
        self._info: Mp3InfoHeader | None = None
        self._unsorted: list[DecodedAudio] = []  # decoded before the header said what to trim
        self._skip_left = 0  # samples still to drop at the start
        self._tail_hold = 0  # samples kept back until finish(), which drops them as end padding
        self._tail: list[DecodedAudio] = []

    @property
    def declared_duration_ms(self) -> int | None:
        return self._info.duration_ms if self._info is not None else None

    def push(self, data: bytes) -> list[DecodedAudio]:
        if self._tag_left is None or self._tag_left:
            data = self._skip_id3(data)
            if not data:
                return []
        if not self._header_read:
            self._read_header(data, final=False)
        return self._trim(self._decode(data))

    def finish(self) -> list[DecodedAudio]:
        if not self._header_read:
            self._read_header(b"", final=True)
        blocks = self._trim(self._decode(None))
        if self._frames == 0:
            raise DecodeError("no MP3 audio frames found")
        self._tail.clear()  # the encoder's padding
        return blocks

    def _read_header(self, data: bytes, *, final: bool) -> None:
        self._head += data
        sync = _first_frame_sync(bytes(self._head[:_MP3_SYNC_SEARCH_BYTES]))
        if not final:
            if sync is None and len(self._head) < _MP3_SYNC_SEARCH_BYTES:
                return
            if sync is not None and len(self._head) < sync + _MP3_INFO_BYTES:
                return
        if sync is not None:
            self._info = read_mp3_info_header(bytes(self._head[sync : sync + _MP3_INFO_BYTES]))
        self._head = bytearray()
        self._header_read = True
        info = self._info
        if info is None:
            return
        self._skip_left = info.samples_per_frame  # the header frame decodes as one frame of silence
        if info.delay is not None:
            self._skip_left += info.delay + _MP3_DECODER_DELAY
        if info.padding is not None:
            self._tail_hold = max(info.padding - _MP3_DECODER_DELAY, 0)

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

    def _trim(self, blocks: list[DecodedAudio]) -> list[DecodedAudio]:
        if not self._header_read:
            self._unsorted += blocks
            return []
        blocks, self._unsorted = self._unsorted + blocks, []
        return self._hold_tail(self._skip_start(blocks))

    def _skip_start(self, blocks: list[DecodedAudio]) -> list[DecodedAudio]:
        kept = []
        for block in blocks:
            cut = min(self._skip_left, len(block.samples))
            self._skip_left -= cut
            if cut < len(block.samples):
                kept.append(DecodedAudio(block.samples[cut:], block.rate) if cut else block)
        return kept

    def _hold_tail(self, blocks: list[DecodedAudio]) -> list[DecodedAudio]:
        """Release all but the last ``_tail_hold`` samples: only finish() knows which ones are last."""
        if not self._tail_hold:
            return blocks
        self._tail += blocks
        excess = sum(len(block.samples) for block in self._tail) - self._tail_hold
        ready = []
        while excess > 0:
            front = self._tail[0]
            if len(front.samples) <= excess:
                ready.append(self._tail.pop(0))
                excess -= len(front.samples)
            else:
                ready.append(DecodedAudio(front.samples[:excess], front.rate))
                self._tail[0] = DecodedAudio(front.samples[excess:], front.rate)
                excess = 0
        return ready

    def _to_block(self, frame: object) -> DecodedAudio:
        array = frame.to_ndarray()  # type: ignore[attr-defined]
        planar = frame.format.is_planar  # type: ignore[attr-defined]
        channels = len(frame.layout.channels)  # type: ignore[attr-defined]
        samples = array if planar else array.reshape(-1, channels).T  # -> (channels, frames)
        if samples.dtype.kind == "i":
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
        return DecodedAudio(np.ascontiguousarray(samples.T, dtype=np.float32), int(frame.sample_rate))  # type: ignore[attr-defined]
