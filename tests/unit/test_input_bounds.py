"""What a caller can make the bridge keep is bounded: messages, tombstones, per-stream state."""

from __future__ import annotations

import struct
import tracemalloc
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from bridge._gen.mentra.livekit.bridge import AudioChunk, BridgeStatusRequest
from bridge.config import BridgeConfig
from bridge.errors import InvalidRequestError
from bridge.limits import MAX_ID_CHARS, MAX_REASON_CHARS
from bridge.metrics import BridgeMetrics
from bridge.playback import PlaybackStats
from bridge.registry import _TOMBSTONE_BYTES, SessionRegistry
from bridge.rpc import server as rpc_server
from bridge.rpc.requests import RequestTranslator
from bridge.rpc.stream_link import CloudPcmConverter
from bridge.session import CloseReason


class _FakeH2Stream:
    """Stands for grpclib's protocol-level stream: hands out the bytes of ``wire``, records reads."""

    def __init__(self, wire: bytes, limit: int) -> None:
        self._wire = wire
        self.reads: list[int] = []
        self.connection = SimpleNamespace(max_message_bytes=limit)

    async def recv_data(self, size: int) -> bytes:
        self.reads.append(size)
        data, self._wire = self._wire[:size], self._wire[size:]
        return data


class _Codec:
    def decode(self, data: bytes, message_type: type[Any]) -> Any:
        return message_type.parse(data)


def _framed(message: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    return struct.pack(">?I", compressed, len(message) if declared is None else declared) + message


async def test_a_message_over_the_limit_is_refused_before_its_body_is_read() -> None:
    stream = _FakeH2Stream(_framed(b"", declared=2**32 - 1), limit=1024 * 1024)
    with pytest.raises(GRPCError) as caught:
        await rpc_server._bounded_recv_message(stream, _Codec(), AudioChunk)
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert "4294967295 bytes is larger than the limit of 1048576" in str(caught.value.message)
    assert stream.reads == [5]  # the 5-byte prefix only: nothing of the body was asked for


async def test_a_moderately_oversized_message_is_read_and_dropped_in_pieces_then_refused() -> None:
    # So the client can finish sending and read the status; never more than 64 KiB held at once.
    stream = _FakeH2Stream(_framed(b"x" * 300_000), limit=100_000)
    with pytest.raises(GRPCError) as caught:
        await rpc_server._bounded_recv_message(stream, _Codec(), AudioChunk)
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert stream.reads[0] == 5 and max(stream.reads[1:]) <= 64 * 1024 and sum(stream.reads[1:]) == 300_000


async def test_messages_within_the_limit_decode_and_compressed_ones_are_unimplemented() -> None:
    body = bytes(AudioChunk(pcm_data=b"\x01\x02" * 100, user_id="u"))
    stream = _FakeH2Stream(_framed(body), limit=1024)
    message = await rpc_server._bounded_recv_message(stream, _Codec(), AudioChunk)
    assert message is not None and message.user_id == "u" and len(message.pcm_data) == 200
    with pytest.raises(GRPCError) as caught:
        await rpc_server._bounded_recv_message(
            _FakeH2Stream(_framed(body, compressed=True), 1024), _Codec(), AudioChunk
        )
    assert caught.value.status is Status.UNIMPLEMENTED
    truncated = _FakeH2Stream(_framed(body)[:-10], limit=1024)
    with pytest.raises(GRPCError, match="ended before its declared length"):
        await rpc_server._bounded_recv_message(truncated, _Codec(), BridgeStatusRequest)


def test_grpclib_servers_read_messages_through_the_bound() -> None:
    import grpclib.server

    assert grpclib.server.recv_message is rpc_server._bounded_recv_message  # type: ignore[attr-defined]


def test_a_stream_keeps_one_resampler_per_track_however_many_rates_it_sends() -> None:
    converter = CloudPcmConverter(out_rate=48000)
    for rate in range(8000, 48001, 97):  # 413 distinct rates on one track
        converter.convert(AudioChunk(pcm_data=b"\x00\x00" * 160, sample_rate=rate, channels=1, track_id=3))
    assert converter.resampler_count == 1
    for track in range(16):
        converter.convert(AudioChunk(pcm_data=b"\x00\x00" * 160, sample_rate=22050, track_id=track))
    assert converter.resampler_count == 16


def _ended_session(user_id: str, detail: str) -> Any:
    return SimpleNamespace(
        user_id=user_id,
        close_reason=CloseReason.LEFT,
        close_detail=detail,
        status=SimpleNamespace(last_disconnect_at_ms=1),
    )


async def test_tombstones_are_bounded_in_bytes_and_their_strings_in_length() -> None:
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(
            BridgeConfig(),
            nursery,
            SimpleNamespace(stats=PlaybackStats()),  # type: ignore[arg-type]
            BridgeMetrics(),
        )
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for index in range(9_000):  # under the count cap: only the byte budget can stop them
                user = f"{index:06d}".ljust(MAX_ID_CHARS, "u")
                registry._forget(_ended_session(user, "r" * 100_000))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert registry.tombstone_bytes <= _TOMBSTONE_BYTES
        assert len(registry._tombstones) < 9_000
        newest = registry.tombstone(f"{8_999:06d}".ljust(MAX_ID_CHARS, "u"))
        assert newest is not None and len(newest.reason) <= MAX_REASON_CHARS
        assert registry.tombstone(f"{0:06d}".ljust(MAX_ID_CHARS, "u")) is None  # oldest forgotten first
        assert grown < 2 * _TOMBSTONE_BYTES, grown  # the estimate is within 2x of what is really held
        with pytest.raises(InvalidRequestError, match="user_id is 257 characters long; the limit is 256"):
            RequestTranslator.user_id("u" * (MAX_ID_CHARS + 1))
