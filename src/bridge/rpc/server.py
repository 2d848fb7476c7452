"""grpclib's Server, with an HTTP/2 stream limit that fits a cloud multiplexing all its users.

h2 advertises MAX_CONCURRENT_STREAMS = 100 and grpclib does not change it, so a cloud that keeps one
StreamAudio per user on one connection would see its 101st call wait forever. The bridge advertises
``BRIDGE_MAX_STREAMS_PER_CONNECTION`` instead. (grpclib has no setting for it: the two private
hooks used here are covered by tests/integration/test_server.py.)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from grpclib.protocol import H2Protocol
from grpclib.server import Handler, Server
from h2.settings import SettingCodes

__all__ = ["BridgeServer"]


class _Protocol(H2Protocol):
    max_streams = 100

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.connection._connection.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        self.connection.flush()


class BridgeServer(Server):
    def __init__(self, handlers: Collection[Any], *, max_streams_per_connection: int) -> None:
        super().__init__(handlers)
        self._protocol_class = type(
            "BridgeH2Protocol", (_Protocol,), {"max_streams": max_streams_per_connection}
        )

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = Handler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        protocol: H2Protocol = self._protocol_class(handler, self._config, self._h2_config)
        return protocol
