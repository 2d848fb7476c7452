"""The SDK patch in livekit_io/ffi_filter.py still applies to the pinned SDK, and filters right.

If this fails after an SDK upgrade, the patch no longer applies (the bridge still works, at the
cost of every room seeing every other room's events): update ffi_filter.py or drop it.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import re
from pathlib import Path

from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

from bridge.livekit_io import ffi_filter
from bridge.livekit_io.ffi_filter import RoomDelivery, _own_events_only


def test_the_sdk_still_has_the_internals_the_patch_needs() -> None:
    queue = FfiClient.instance.queue
    assert hasattr(queue, "_lock") and isinstance(queue._subscribers, list)
    assert ffi_filter._FfiHandle is not None


def test_only_own_room_events_and_the_callbacks_the_listener_needs_pass() -> None:
    accept = _own_events_only(7)
    own, foreign = ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent()
    own.room_event.room_handle = 7
    foreign.room_event.room_handle = 8
    assert accept(own) and not accept(foreign)
    published, unpublished, rpc = ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent()
    published.publish_track.async_id = 1
    unpublished.unpublish_track.async_id = 2
    rpc.rpc_method_invocation.invocation_id = 3
    assert accept(published) and accept(unpublished) and accept(rpc)
    # Awaited through subscriptions of their own: no room's listener needs them.
    captured, sent, media = ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent(), ffi_pb2.FfiEvent()
    captured.capture_audio_frame.async_id = 4
    sent.publish_data.async_id = 5
    media.audio_stream_event.stream_handle = 6
    assert not accept(captured) and not accept(sent) and not accept(media)


def test_the_listener_callbacks_are_the_ones_the_sdk_routes_through_a_room() -> None:
    """If an SDK upgrade awaits another callback through the room's queue (or serves another one in the
    room's listener), ``LISTENER_CALLBACKS`` must grow, or that wait would never end."""
    package = Path(rtc.__file__).parent
    waits: list[str] = []
    subscriptions = 0
    for module in package.glob("*.py"):
        source = module.read_text()
        subscriptions += source.count("_room_queue.subscribe(")
        # Each wait subscribes to the room's queue, then matches its callback by async id.
        waits += re.findall(r"_room_queue\.subscribe\(\).*?\be\.(\w+)\.async_id", source, re.S)
    assert len(waits) == subscriptions, "a wait on the room's queue this test cannot read: check it by hand"
    waited = set(waits)
    served = set(re.findall(r'WhichOneof\("message"\) == "(\w+)"', inspect.getsource(rtc.Room._listen_task)))
    assert waited == {"publish_track", "unpublish_track"}
    assert served == {"rpc_method_invocation"}
    assert waited | served == ffi_filter.LISTENER_CALLBACKS


class _Handles:
    """Stands in for the SDK's FfiHandle: records which native buffers were released."""

    def __init__(self) -> None:
        self.released: list[int] = []

    def __call__(self, handle_id: int) -> _Handles._One:
        return _Handles._One(self, handle_id)

    class _One:
        def __init__(self, owner: _Handles, handle_id: int) -> None:
            self._owner, self._id = owner, handle_id

        def dispose(self) -> None:
            self._owner.released.append(self._id)


def _data_event(payload: ctypes.Array[ctypes.c_char], handle_id: int, identity: str) -> ffi_pb2.FfiEvent:
    event = ffi_pb2.FfiEvent()
    event.room_event.room_handle = 7
    packet = event.room_event.data_packet_received
    packet.participant_identity = identity
    packet.user.data.handle.id = handle_id
    packet.user.data.data.data_ptr = ctypes.addressof(payload)
    packet.user.data.data.data_len = len(payload.raw)
    return event


def _delivery(
    loop: asyncio.AbstractEventLoop,
) -> tuple[asyncio.Queue[ffi_pb2.FfiEvent], list[tuple[bytes, str]], RoomDelivery]:
    """A room's delivery on ``loop``: its listener's queue, what the session got, the delivery."""
    listener: asyncio.Queue[ffi_pb2.FfiEvent] = asyncio.Queue()
    received: list[tuple[bytes, str]] = []
    return listener, received, RoomDelivery(loop, listener, lambda data, who: received.append((data, who)))


def test_a_data_packet_with_nothing_queued_before_it_goes_straight_to_the_session(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    handles = _Handles()
    monkeypatch.setattr(ffi_filter, "_FfiHandle", handles)
    loop = asyncio.new_event_loop()
    try:
        listener, received, delivery = _delivery(loop)
        buffers = [
            ctypes.create_string_buffer(b"\x01pcm-one", 8),
            ctypes.create_string_buffer(b"\x02pcm-two", 8),
        ]

        # Nothing queued for the room's listener: the packet skips it, named as it was sent.
        delivery.call_soon_threadsafe(listener.put_nowait, _data_event(buffers[0], 41, "phone"))
        loop.run_until_complete(asyncio.sleep(0))
        assert received == [(b"\x01pcm-one", "phone")] and handles.released == [41]
        assert listener.empty() and delivery.direct == 1

        # A state event queued first: the next packet queues behind it, for the SDK to handle.
        state = ffi_pb2.FfiEvent()
        state.room_event.room_handle = 7
        state.room_event.participant_connected.info.info.identity = "phone"
        delivery.call_soon_threadsafe(listener.put_nowait, state)
        delivery.call_soon_threadsafe(listener.put_nowait, _data_event(buffers[1], 42, "phone"))
        loop.run_until_complete(asyncio.sleep(0))
        assert listener.qsize() == 2 and len(received) == 1 and handles.released == [41]

        # Once the session stops listening, packets go the SDK's way whatever is queued.
        while not listener.empty():
            listener.get_nowait()
        delivery.detach()
        delivery.call_soon_threadsafe(listener.put_nowait, _data_event(buffers[0], 43, "phone"))
        loop.run_until_complete(asyncio.sleep(0))
        assert listener.qsize() == 1 and len(received) == 1 and delivery.direct == 1
    finally:
        loop.close()


def test_the_sdks_own_path_when_direct_data_is_off(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ffi_filter, "DIRECT_DATA", False)
    loop = asyncio.new_event_loop()
    try:
        listener, received, delivery = _delivery(loop)
        buffer = ctypes.create_string_buffer(b"\x01pcm", 4)
        delivery.call_soon_threadsafe(listener.put_nowait, _data_event(buffer, 41, "phone"))
        loop.run_until_complete(asyncio.sleep(0))
        assert listener.qsize() == 1 and not received
    finally:
        loop.close()
