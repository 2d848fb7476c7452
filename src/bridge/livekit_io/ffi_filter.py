"""Deliver each room only its own room events: a private-API patch of the livekit SDK (1.2.1).

The SDK's ``FfiQueue.put`` hands every event of the process to every subscriber whose filter
accepts it, through ``loop.call_soon_threadsafe``; a ``Room`` subscribes with a filter that accepts
every room event, its own and every other room's, then its ``_listen_task`` discards the foreign
ones after a queue round trip each. With N sessions each data packet wakes N listeners. Swapping the
room's filter for one that checks the room handle cut CPU per room from 5.7 % to 4.6 % at N=10 in
the team's measurements (shared/STACK-NOTES.md), and the saving grows with N.

It touches private SDK internals, so it is kept to this module: ``narrow_to_own_events`` returns
False (and the room works as before) when the SDK no longer looks as expected, and
tests/unit/test_ffi_filter.py fails loudly in that case. The SDK version is pinned in pyproject.toml.
"""

from __future__ import annotations

import logging
from typing import Any

from livekit import rtc

__all__ = ["narrow_to_own_events"]

log = logging.getLogger(__name__)

_MEDIA_STREAM_EVENTS = ("audio_stream_event", "video_stream_event")  # streams subscribe for these
_warned = False


def _own_events_only(room_handle: int) -> Any:
    def accept(event: Any) -> bool:
        which = event.WhichOneof("message")
        if which == "room_event":
            return bool(event.room_event.room_handle == room_handle)
        # Everything else as the SDK's own filter: callbacks the local participant waits for
        # (publish_track, publish_data, ...) arrive through the room's queue.
        return which not in _MEDIA_STREAM_EVENTS

    return accept


def narrow_to_own_events(room: rtc.Room) -> bool:
    """Call once after ``room.connect()``; True if the room now receives only its own room events."""
    global _warned
    try:
        from livekit.rtc._ffi_client import FfiClient

        queue = FfiClient.instance.queue
        own_queue = room._ffi_queue
        handle = room._ffi_handle.handle  # type: ignore[union-attr]
        with queue._lock:
            for index, (subscriber, loop, _) in enumerate(queue._subscribers):
                if subscriber is own_queue:
                    queue._subscribers[index] = (subscriber, loop, _own_events_only(handle))
                    return True
    except (AttributeError, ImportError, TypeError, ValueError) as err:
        if not _warned:
            log.error("livekit SDK internals changed, per-room event filter not applied: %s", err)
            _warned = True
        return False
    if not _warned:
        log.error("livekit SDK internals changed: the room's event subscription was not found")
        _warned = True
    return False
