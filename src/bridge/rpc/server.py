"""grpclib's Server, with the limits a server exposed to a network needs and grpclib lacks.

- **Streams per connection.** h2 advertises MAX_CONCURRENT_STREAMS = 100 and grpclib does not change
  it, so a cloud that keeps one StreamAudio per user on one connection would see its 101st call wait
  forever. The bridge advertises ``BRIDGE_MAX_STREAMS_PER_CONNECTION`` instead, in its first SETTINGS
  frame and in force from the start: h2 applies a raised limit only once the client acknowledges it,
  and treats a stream over the limit as an error of the whole connection, so a client that opened
  more than 100 calls on a fresh connection before reading the server's SETTINGS (HTTP/2 allows it)
  lost every call on that connection.
- **Message size.** grpclib reads a message's declared length and then buffers that many bytes
  (acknowledging flow control as it goes), so one call could make the process hold gigabytes. Here a
  message longer than ``BRIDGE_MAX_MESSAGE_BYTES`` ends its call with RESOURCE_EXHAUSTED before any of
  its body is read; a compressed message (which grpclib cannot decode) ends with UNIMPLEMENTED, and
  one that does not parse as its type with INVALID_ARGUMENT (grpclib would answer UNKNOWN).
- **Flow control.** grpclib's default inbound windows are 4 MiB per stream and per connection: a
  cloud could run ~2 minutes of 16 kHz audio ahead of real time before backpressure reached it, and
  one stream could fill the connection's whole window, stalling every other user's calls on that
  connection. Each stream gets HTTP/2's minimum, 64 KiB (~2 s of 16 kHz mono), and the connection
  16 MiB, so a stream that is not being read holds up only itself.
- **Health watches.** ``grpc.health.v1.Health/Watch`` needs no token and lives until the caller
  leaves: at most ``BRIDGE_MAX_HEALTH_WATCHES`` run at once, the next one is RESOURCE_EXHAUSTED.

grpclib has no setting for any of these; the private hooks used here are covered by
tests/integration/test_server.py and tests/integration/test_limits.py.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from typing import Any, TypeVar

import grpclib.server
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.service import Health
from grpclib.protocol import Connection, EventsProcessor, H2Protocol, _set_nodelay
from grpclib.server import Handler, Server
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings

from .codec import BridgeCodec

__all__ = ["BoundedHealth", "BridgeServer"]

T = TypeVar("T")

_DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""For grpclib servers in this process that are not a BridgeServer (gRPC's own default)."""


def _server_h2_connection(config: H2Configuration, max_streams: int) -> H2Connection:
    """An h2 server connection whose stream limit is ``max_streams`` from its first frame on."""
    h2_conn = H2Connection(config=config)
    # Its settings as h2 builds them, but for the limit: a value set later would wait for the ACK.
    h2_conn.local_settings = Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
        },
    )
    return h2_conn


class _Protocol(H2Protocol):
    max_streams = 100
    max_message_bytes = _DEFAULT_MAX_MESSAGE_BYTES

    def connection_made(self, transport: Any) -> None:
        """grpclib 0.4's H2Protocol.connection_made, with the bridge's own h2 connection."""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _set_nodelay(sock)
        h2_conn = _server_h2_connection(self.h2_config, self.max_streams)
        h2_conn.initiate_connection()
        initial = h2_conn.local_settings.initial_window_size
        if self.config.http2_connection_window_size != initial:
            h2_conn.increment_flow_control_window(self.config.http2_connection_window_size - initial)
        if self.config.http2_stream_window_size != initial:
            h2_conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size})
        self.connection = Connection(h2_conn, transport, config=self.config)
        # Read by _bounded_recv_message: the limit travels with the connection, not a global.
        self.connection.max_message_bytes = self.max_message_bytes  # type: ignore[attr-defined]
        self.connection.flush()
        self.connection.initialize()
        self.processor = EventsProcessor(self.handler, self.connection)


_DISCARD_CHUNK_BYTES = 64 * 1024
_DISCARD_UP_TO = 8
"""An oversized message up to this many times the limit is read and dropped (64 KiB at a time, never
held) before the call ends, so the client finishes sending and reads a RESOURCE_EXHAUSTED status;
a larger one ends the call at once (the client sees the stream reset)."""


async def _bounded_recv_message(stream: Any, codec: Any, message_type: type[T]) -> T | None:
    """grpclib.stream.recv_message, refusing a message without ever holding more than the limit."""
    meta = await stream.recv_data(5)
    if not meta:
        return None
    compressed, length = struct.unpack(">?I", meta)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
    limit = getattr(stream.connection, "max_message_bytes", _DEFAULT_MAX_MESSAGE_BYTES)
    if length > limit:
        if length <= _DISCARD_UP_TO * limit:
            left = length
            while left and (piece := await stream.recv_data(min(left, _DISCARD_CHUNK_BYTES))):
                left -= len(piece)
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED, f"message of {length} bytes is larger than the limit of {limit} bytes"
        )
    body = await stream.recv_data(length)
    if len(body) != length:
        raise GRPCError(Status.INVALID_ARGUMENT, "the message ended before its declared length")
    try:
        message: T = codec.decode(body, message_type)
    except Exception as err:  # upb's DecodeError, betterproto2's UnicodeDecodeError...: the client's bytes
        name = getattr(message_type, "__name__", "message")
        raise GRPCError(Status.INVALID_ARGUMENT, f"the message is not a valid {name}: {err}") from None
    return message


# grpclib's server Stream calls this module-level name for every message it receives.
grpclib.server.recv_message = _bounded_recv_message  # type: ignore[attr-defined]


STREAM_WINDOW_BYTES = 64 * 1024
CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024


class BridgeServer(Server):
    def __init__(
        self, handlers: Collection[Any], *, max_streams_per_connection: int, max_message_bytes: int
    ) -> None:
        windows = Configuration(
            http2_stream_window_size=STREAM_WINDOW_BYTES, http2_connection_window_size=CONNECTION_WINDOW_BYTES
        )
        super().__init__(handlers, codec=BridgeCodec(), config=windows)
        self._protocol_class = type(
            "BridgeH2Protocol",
            (_Protocol,),
            {"max_streams": max_streams_per_connection, "max_message_bytes": max_message_bytes},
        )

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = Handler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        protocol: H2Protocol = self._protocol_class(handler, self._config, self._h2_config)
        return protocol


class BoundedHealth(Health):
    """The standard health service, with a cap on Watch streams open at once."""

    def __init__(self, checks: Any, *, max_watches: int) -> None:
        super().__init__(checks)
        self._max_watches = max_watches
        self.watches = 0

    async def Watch(self, stream: Any) -> None:  # the gRPC method's name
        if self.watches >= self._max_watches:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"{self._max_watches} health watches are already open")
        self.watches += 1
        try:
            await super().Watch(stream)
        finally:
            self.watches -= 1
