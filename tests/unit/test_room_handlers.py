"""The room's SDK handlers: what the SDK's EventEmitter passes them, and what inspecting them costs."""

from __future__ import annotations

import inspect

from livekit import rtc

from bridge.livekit_io.room import RoomLink, cheap_to_inspect


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def one(self, packet: object) -> None:
        self.calls.append((packet,))

    def three(self, track: object, publication: object, participant: object) -> None:
        self.calls.append((track, publication, participant))


def test_the_sdk_emitter_passes_a_wrapped_handler_what_the_method_takes() -> None:
    recorder = Recorder()
    emitter: rtc.EventEmitter[str] = rtc.EventEmitter()
    emitter.on("one", cheap_to_inspect(recorder.one))
    emitter.on("three", cheap_to_inspect(recorder.three))

    # The emitter trims the arguments to the handler's positional parameters, as for the method.
    emitter.emit("one", "packet", "extra")
    emitter.emit("three", "track", "publication", "participant")

    assert recorder.calls == [("packet",), ("track", "publication", "participant")]


def test_inspecting_a_wrapped_handler_returns_its_stored_signature() -> None:
    """What makes it cheap: inspect.signature returns the stored object instead of rebuilding one,
    as it does for every call on a bound method."""
    recorder = Recorder()
    handler = cheap_to_inspect(recorder.three)

    assert inspect.signature(handler) is inspect.signature(handler)
    assert inspect.signature(recorder.three) is not inspect.signature(recorder.three)
    assert list(inspect.signature(handler).parameters) == ["track", "publication", "participant"]


def test_every_room_handler_is_registered_wrapped() -> None:
    link = RoomLink(on_data=lambda data, identity: None, events=None)  # type: ignore[arg-type]
    handlers = link._handlers
    assert "data_received" in handlers
    for event, handler in handlers.items():
        assert inspect.signature(handler) is inspect.signature(handler), event
