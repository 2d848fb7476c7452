"""The SDK patch in livekit_io/ffi_filter.py still applies to the pinned SDK, and filters right.

If this fails after an SDK upgrade, the patch no longer applies (the bridge still works, at the
cost of every room seeing every other room's events): update ffi_filter.py or drop it.
"""

from __future__ import annotations

import inspect
import re

from livekit.rtc import participant, room
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

from bridge.livekit_io.ffi_filter import ROOM_QUEUE_EVENTS, _own_events_only


def test_the_sdk_still_has_the_internals_the_patch_needs() -> None:
    queue = FfiClient.instance.queue
    assert hasattr(queue, "_lock") and isinstance(queue._subscribers, list)


def test_only_own_room_events_and_the_callbacks_a_room_waits_for_pass() -> None:
    accept = _own_events_only(7)
    own, foreign = ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent()
    own.room_event.room_handle = 7
    foreign.room_event.room_handle = 8
    published, capture, data_sent = ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent()
    published.publish_track.async_id = 1
    capture.capture_audio_frame.async_id = 2
    data_sent.publish_data.async_id = 3
    media = ffi_pb2.FfiEvent()
    media.audio_stream_event.stream_handle = 3
    assert accept(own) and not accept(foreign)
    assert accept(published)
    assert not accept(capture) and not accept(data_sent) and not accept(media)


def test_the_callbacks_let_through_are_exactly_those_the_sdk_awaits_through_the_room_queue() -> None:
    # LocalParticipant: ``queue = self._room_queue.subscribe()`` ... ``e.<callback>.async_id``.
    source = inspect.getsource(participant)
    through_room_queue = set()
    for match in re.finditer(r"self\._room_queue\.subscribe\(\)", source):
        awaited = re.search(r"lambda e: e\.(\w+)\.async_id", source[match.end() : match.end() + 600])
        assert awaited, "a room-queue subscription whose callback this test cannot read"
        through_room_queue.add(awaited.group(1))
    # Room._listen_task serves these non-room events itself.
    listener = inspect.getsource(room.Room._listen_task)
    served = set(re.findall(r'WhichOneof\("message"\) == "(\w+)"', listener))
    assert through_room_queue == {"publish_track", "unpublish_track"}
    assert served == {"rpc_method_invocation"}
    assert through_room_queue | served == ROOM_QUEUE_EVENTS
