"""The room's SDK handlers: what the SDK's EventEmitter passes them, and what inspecting them costs;
and its disconnect when the session stops waiting for it."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import trio
from livekit import rtc
from trio_asyncio import aio_as_trio

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


class SlowSdkRoom:
    """Stands in for ``rtc.Room`` while it disconnects: takes 0.2 s, then fails if told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.disconnected = False

    def isconnected(self) -> bool:
        return True

    def off(self, event: str, handler: object) -> None:
        pass

    async def disconnect(self) -> None:
        await asyncio.sleep(0.2)
        if self.fail:
            raise RuntimeError("the native disconnect failed")
        self.disconnected = True


async def test_a_disconnect_the_session_stops_waiting_for_still_finishes(aio_loop: object) -> None:
    """The session's cleanup is bounded (session/core.py); cut short, the SDK's disconnect used to be
    cancelled with it, and the server could keep a participant nobody listens to."""
    room = SlowSdkRoom()
    link = RoomLink(on_data=lambda data, identity: None, events=None)  # type: ignore[arg-type]
    link._room = room  # type: ignore[assignment]
    with trio.move_on_after(0.05):
        await aio_as_trio(link.aclose)()
    assert not room.disconnected and link._room is None
    await trio.sleep(0.4)
    assert room.disconnected


async def test_a_disconnect_nobody_waits_for_any_more_logs_its_failure(
    aio_loop: object, caplog: pytest.LogCaptureFixture
) -> None:
    link = RoomLink(on_data=lambda data, identity: None, events=None)  # type: ignore[arg-type]
    link._room = SlowSdkRoom(fail=True)  # type: ignore[assignment]
    with trio.move_on_after(0.05):
        await aio_as_trio(link.aclose)()
    await trio.sleep(0.4)
    assert "room disconnect failed: the native disconnect failed" in caplog.text
