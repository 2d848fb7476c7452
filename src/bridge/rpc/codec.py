"""grpclib's protobuf codec, with the audio hot paths in C.

Every message is a betterproto2 dataclass, except AudioChunks, which are upb messages (the generated
``livekit_bridge_pb2``, protobuf's C implementation) both ways:

- the chunks a StreamAudio call sends to the cloud: ``send_all`` builds them as upb messages and this
  codec serializes them as they are. 31 µs per 100 ms chunk with betterproto2, 1.7 µs with upb, byte
  for byte the same encoding; betterproto2's share was 5 % of the bridge's Python samples at N=10
  (docs/design/lessons.md);
- the chunks the cloud sends (talkback) are parsed by upb: 16 µs with betterproto2, 0.4 µs with upb,
  with the same field names for the code that reads them. upb also refuses what is not an AudioChunk
  (a truncated field, a string that is not UTF-8), which betterproto2 read as an empty or partial
  message; the server answers that with INVALID_ARGUMENT (rpc/server.py).
"""

from __future__ import annotations

from typing import Any

from grpclib.encoding.proto import ProtoCodec

from .._gen import livekit_bridge_pb2
from .._gen.mentra.livekit.bridge import AudioChunk

__all__ = ["BridgeCodec", "CAudioChunk"]

CAudioChunk: Any = livekit_bridge_pb2.AudioChunk  # type: ignore[attr-defined]
"""The upb class of AudioChunk: fields and wire encoding are the proto's, as for betterproto2's."""


class BridgeCodec(ProtoCodec):
    def encode(self, message: Any, message_type: Any) -> bytes:
        if type(message) is CAudioChunk and message_type is AudioChunk:
            return bytes(message.SerializeToString())
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type is AudioChunk:
            return CAudioChunk.FromString(data)
        return super().decode(data, message_type)
