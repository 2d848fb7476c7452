"""The hot path's upb AudioChunk is the same message on the wire as betterproto2's."""

from __future__ import annotations

import pytest

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
    assert codec.decode(wire, AudioChunk) == AudioChunk(**fields)  # type: ignore[arg-type]


def test_other_messages_still_go_through_betterproto2_and_its_type_check() -> None:
    codec = BridgeCodec()
    assert codec.encode(JoinRoomResponse(success=True), JoinRoomResponse) == bytes(
        JoinRoomResponse(success=True)
    )
    with pytest.raises(TypeError):
        codec.encode(CAudioChunk(), JoinRoomResponse)  # a C AudioChunk only where a call sends AudioChunks
