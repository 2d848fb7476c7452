"""The SDK patch in livekit_io/ffi_filter.py still applies to the pinned SDK, and filters right.

If this fails after an SDK upgrade, the patch no longer applies (the bridge still works, at the
cost of every room seeing every other room's events): update ffi_filter.py or drop it.
"""

from __future__ import annotations

from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

from bridge.livekit_io.ffi_filter import _own_events_only


def test_the_sdk_still_has_the_internals_the_patch_needs() -> None:
    queue = FfiClient.instance.queue
    assert hasattr(queue, "_lock") and isinstance(queue._subscribers, list)


def test_only_own_room_events_pass_but_callbacks_and_other_kinds_do() -> None:
    accept = _own_events_only(7)
    own, foreign = ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent()
    own.room_event.room_handle = 7
    foreign.room_event.room_handle = 8
    callback = ffi_pb2.FfiEvent()
    callback.publish_data.async_id = 1
    media = ffi_pb2.FfiEvent()
    media.audio_stream_event.stream_handle = 3
    assert accept(own) and not accept(foreign)
    assert accept(callback) and not accept(media)
