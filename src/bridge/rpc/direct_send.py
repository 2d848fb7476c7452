"""One gRPC message written at once, from the caller's callback: a private-API shortcut of grpclib 0.4.9.

A mic packet reaches the cloud through the session's queue and the StreamAudio call's send loop: the
packet's callback queues it and wakes the loop (an asyncio future, a task step), the loop goes
through grpclib's ``send_message`` (its event dispatch, the codec, ``send_data``'s flow-control
wait), then parks again. When the loop is parked, nothing is queued before the packet, so the
callback can write it itself: the same HTTP/2 DATA frame grpclib writes, with the same bookkeeping,
and no trip through the loop: 198 against 214 µs of the loop's CPU per chunk, wakeup and ``send()``
included (``python -m bench.cloud_send``, 20 calls at 200 chunks/s; docs/design/lessons.md).

``DirectSender.try_send`` writes only when grpclib would write the message as one frame right away:
the call has sent its headers and not its trailers, the transport is not paused, and the flow-control
window and the peer's frame size take the whole message. Otherwise it returns False and the message
takes the queue, so the send loop meets every wait and every error as before. Other grpclib versions
get no shortcut (``supported``), and tests/unit/test_direct_send.py fails on them.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

import grpclib
from h2.exceptions import H2Error

__all__ = ["PATCHED_VERSION", "DirectSender", "supported"]

log = logging.getLogger(__name__)

PATCHED_VERSION = "0.4.9"
_MESSAGE_PREFIX = struct.Struct(">?I")
"""gRPC's length prefix: not compressed, then the message's length (grpclib.stream.send_message)."""


def supported() -> bool:
    """Whether this grpclib is the one whose private state ``DirectSender`` keeps up to date."""
    return grpclib.__version__ == PATCHED_VERSION


class DirectSender:
    """Writes a server stream's messages without awaiting, when grpclib would not have waited either."""

    def __init__(self, server_stream: Any) -> None:
        """``server_stream``: the grpclib.server.Stream of a call that streams its replies."""
        self._server_stream = server_stream
        self._stream = server_stream._stream  # grpclib.protocol.Stream: the h2 stream and transport
        self.sent = 0
        """Messages written here rather than through grpclib's ``send_message``."""

    def try_send(self, message: bytes) -> bool:
        """Write one encoded message as grpclib's ``send_message`` would; False (nothing written) when
        that would have to wait or fail. Never raises."""
        server_stream, stream = self._server_stream, self._stream
        if not server_stream._send_initial_metadata_done or server_stream._send_trailing_metadata_done:
            return False
        connection = stream.connection
        transport = stream._transport
        if not connection.write_ready.is_set() or transport.is_closing():
            return False
        data = _MESSAGE_PREFIX.pack(False, len(message)) + message
        h2_connection = stream._h2_connection
        size = len(data)
        try:
            if size > min(
                h2_connection.local_flow_control_window(stream.id), h2_connection.max_outbound_frame_size
            ):
                return False
            h2_connection.send_data(stream.id, data)
        except H2Error:  # the stream is closed or reset: the send loop meets it and ends the call
            return False
        try:
            transport.write(h2_connection.data_to_send())
        except Exception:  # h2 has the frame; the connection is going, and the call with it
            log.debug("a direct write failed", exc_info=True)
        now = time.monotonic()
        stream.data_sent += size
        connection.data_sent += size
        connection.data_send_process()
        server_stream._messages_sent += 1
        connection.messages_sent += 1
        connection.last_message_sent = now
        self.sent += 1
        return True
