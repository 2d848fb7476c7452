"""The hot path's upb AudioChunk is the same message on the wire as betterproto2's."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from bridge._gen.mentra.livekit.bridge import AudioChunk, JoinRoomResponse
from bridge.rpc.codec import BridgeCodec, CAudioChunk

FIELDS = {
    "pcm_data": bytes(range(256)) * 12,
    "sample_rate": 16000,
    "channels": 1,
    "timestamp_ms": 1_765_000_000_123,
    "user_id": "user-ü-1",
    "notice": "draining",
}


@pytest.mark.parametrize("fields", [FIELDS, {**FIELDS, "notice": ""}, {"user_id": "only"}])
def test_a_c_audio_chunk_encodes_to_the_bytes_betterproto2_reads_back(fields: dict[str, object]) -> None:
    codec = BridgeCodec()
    wire = codec.encode(CAudioChunk(**fields), AudioChunk)
    assert wire == bytes(AudioChunk(**fields))  # type: ignore[arg-type]
    assert AudioChunk.parse(wire) == AudioChunk(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("fields", [FIELDS, {**FIELDS, "track_id": 7}, {"user_id": "only"}])
def test_the_cloud_s_audio_chunks_are_read_by_upb_with_the_fields_the_bridge_reads(
    fields: dict[str, object],
) -> None:
    read = BridgeCodec().decode(bytes(AudioChunk(**fields)), AudioChunk)  # type: ignore[arg-type]
    assert type(read) is CAudioChunk
    expected = AudioChunk(**fields)  # type: ignore[arg-type]
    for name in ("pcm_data", "sample_rate", "channels", "timestamp_ms", "user_id", "track_id", "notice"):
        assert getattr(read, name) == getattr(expected, name), name


@pytest.mark.parametrize(
    "wire",
    [b"\x0a\x05ab", b"\xff\xff\xff", b"\x2a\x02\xff\xfe"],
    ids=["truncated bytes field", "bad tag", "user_id not UTF-8"],
)
def test_bytes_that_are_not_an_audio_chunk_are_refused_not_read_as_an_empty_one(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        BridgeCodec().decode(wire, AudioChunk)


def test_other_messages_still_go_through_betterproto2_and_its_type_check() -> None:
    codec = BridgeCodec()
    assert codec.encode(JoinRoomResponse(success=True), JoinRoomResponse) == bytes(
        JoinRoomResponse(success=True)
    )
    with pytest.raises(TypeError):
        codec.encode(CAudioChunk(), JoinRoomResponse)  # a C AudioChunk only where a call sends AudioChunks
