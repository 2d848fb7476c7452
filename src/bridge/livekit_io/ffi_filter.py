"""Deliver each room only its own events, and its data packets straight to the session: a
private-API patch of the livekit SDK (1.2.1).

The SDK's ``FfiQueue.put`` hands every event of the process to every subscriber whose filter
accepts it, through ``loop.call_soon_threadsafe``; a ``Room`` subscribes with a filter that accepts
every room event, its own and every other room's, and every callback of the process, then its
``_listen_task`` discards the foreign ones after a queue round trip each. With N sessions each data
packet wakes N listeners. Swapping the room's filter for one that checks the room handle cut CPU per
room from 5.7 % to 4.6 % at N=10 in the team's measurements (shared/STACK-NOTES.md), and the saving
grows with N. The filter also keeps out the callbacks no listener needs (``LISTENER_CALLBACKS``):
each talkback frame's capture callback had woken every room's listener.

A data packet whose room has nothing queued before it then skips the room's listener task:
``RoomDelivery``, which stands in for the loop in the room's subscription, copies its payload,
releases its native buffer and calls the session's handler with the sender's identity as the event
carries it. That is the SDK's own work for the packet (its ``_on_room_event``) without the queue,
the task step, the ``DataPacket`` and the event emitter: ~100 µs less of the main thread's CPU per
packet at N=20, ~190-240 µs of the whole process's (``python -m bench.direct_data``). The
identity is the same either way: the SDK's native side leaves it empty until it has had the
sender's announcement (session/unnamed.py). A packet with anything queued before it in the room's
listener goes through the listener as before, so packets and state events keep their order.

It touches private SDK internals, so it is kept to this module: ``narrow_to_own_events`` returns
None (and the room works as before) when the SDK no longer looks as expected, and
tests/unit/test_ffi_filter.py fails loudly in that case. The SDK version is pinned in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from typing import Any

from livekit import rtc

_FfiHandle: Any
try:
    from livekit.rtc._ffi_client import FfiHandle as _FfiHandle
except ImportError:  # the SDK moved it: narrow_to_own_events then leaves the room as it is
    _FfiHandle = None

__all__ = ["LISTENER_CALLBACKS", "RoomDelivery", "narrow_to_own_events"]

DataHandler = Callable[[bytes, str], None]

DIRECT_DATA = True
"""Data packets skip the room's listener when they can (tests turn it off to run the SDK's path)."""

log = logging.getLogger(__name__)

LISTENER_CALLBACKS = frozenset({"publish_track", "unpublish_track", "rpc_method_invocation"})
"""The events other than room events that a room's listener needs: the local participant waits for
its publish and unpublish callbacks through the room's queue (the SDK's ``LocalParticipant``), and
the listener serves RPC invocations. Every other callback (each AudioSource capture, each
``publish_data``, stats, disconnect) is awaited through a subscription of its own; the SDK's filter
offers them to every room too, so with N rooms each talkback frame's capture callback woke N
listeners that only passed it on. tests/unit/test_ffi_filter.py checks this list against the SDK."""
_warned = False


def _own_events_only(room_handle: int) -> Any:
    def accept(event: Any) -> bool:
        which = event.WhichOneof("message")
        if which == "room_event":
            return bool(event.room_event.room_handle == room_handle)
        return which in LISTENER_CALLBACKS

    return accept


def _user_data(event: Any) -> Any:
    """The ``UserPacket`` of a data packet event, or None for any other event."""
    if event.WhichOneof("message") != "room_event":
        return None
    room_event = event.room_event
    if room_event.WhichOneof("message") != "data_packet_received":
        return None
    packet = room_event.data_packet_received
    return packet if packet.WhichOneof("value") == "user" else None


class RoomDelivery:
    """Stands in for the loop in the room's FFI subscription: the SDK calls
    ``call_soon_threadsafe(queue.put_nowait, event)`` on it from the FFI thread."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, listener_queue: asyncio.Queue[Any], on_data: DataHandler | None
    ) -> None:
        self._loop = loop
        self._listener_queue = listener_queue
        self._on_data = on_data
        self.direct = 0
        """Data packets handed to the session without the room's listener."""

    def detach(self) -> None:
        """The session stops listening: from now on its packets go the SDK's way (to no handler)."""
        self._on_data = None

    def call_soon_threadsafe(self, put: Callable[[Any], None], event: Any) -> None:
        # One loop callback per event, in the order the FFI thread delivers them, as the SDK's own.
        self._loop.call_soon_threadsafe(self._deliver, put, event)

    def _deliver(self, put: Callable[[Any], None], event: Any) -> None:
        on_data = self._on_data
        if on_data is None or not DIRECT_DATA or not self._listener_queue.empty():
            put(event)  # the SDK's own path; also keeps a packet behind what is queued before it
            return
        packet = _user_data(event)
        if packet is None:
            put(event)
            return
        owned = packet.user.data
        try:
            payload = ctypes.string_at(owned.data.data_ptr, owned.data.data_len)
        finally:
            _FfiHandle(owned.handle.id).dispose()  # as the SDK does once it has copied the payload
        self.direct += 1
        try:
            on_data(payload, packet.participant_identity)
        except Exception:  # as the SDK's listener does: a handler's bug must not stop the loop
            log.exception("data packet handler failed")


def narrow_to_own_events(room: rtc.Room, on_data: DataHandler | None = None) -> RoomDelivery | None:
    """Call once after ``room.connect()``. The room's delivery if it now receives only its own room
    events (and, with ``on_data``, its data packets directly); None if the SDK is not as expected."""
    global _warned
    try:
        from livekit.rtc._ffi_client import FfiClient

        if _FfiHandle is None:
            raise ImportError("livekit.rtc._ffi_client.FfiHandle")

        queue = FfiClient.instance.queue
        own_queue = room._ffi_queue
        handle = room._ffi_handle.handle  # type: ignore[union-attr]
        with queue._lock:
            for index, (subscriber, loop, _) in enumerate(queue._subscribers):
                if subscriber is own_queue:
                    delivery = RoomDelivery(loop, own_queue, on_data)
                    queue._subscribers[index] = (subscriber, delivery, _own_events_only(handle))
                    return delivery
    except (AttributeError, ImportError, TypeError, ValueError) as err:
        if not _warned:
            log.error("livekit SDK internals changed, per-room event filter not applied: %s", err)
            _warned = True
        return None
    if not _warned:
        log.error("livekit SDK internals changed: the room's event subscription was not found")
        _warned = True
    return None
