"""A playback's event stream: STARTED, coalesced PROGRESS, exactly one terminal event."""

from __future__ import annotations

import trio
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import PlayAudioEventEventType
from bridge.playback import ErrorCode, PlaybackEvents, PlaybackStats
from bridge.playback import PlaybackEventKind as K
from bridge.rpc.requests import play_audio_event


async def _drain(events: PlaybackEvents) -> list[object]:
    return [event async for event in events]


async def test_unread_progress_is_coalesced_and_only_the_first_terminal_event_counts(
    aio_loop: object,
) -> None:
    events = PlaybackEvents("r1")
    events.emit_started()
    for position in (100, 200, 300):
        events.emit_progress(position, 1000)
    assert events.complete(1000)
    assert not events.fail(ErrorCode.STOPPED, "too late")
    with trio.fail_after(2):
        received = await aio_as_trio(_drain)(events)
    assert [e.kind for e in received] == [K.STARTED, K.PROGRESS, K.COMPLETED]  # type: ignore[attr-defined]
    assert received[1].position_ms == 300  # type: ignore[attr-defined]


def test_failed_carries_its_code_in_the_error_and_the_metadata_on_the_wire() -> None:
    events = PlaybackEvents("r2")
    assert events.fail(ErrorCode.HTTP_STATUS, "404 Not Found", position_ms=0)
    assert events.terminal is not None and events.failure_code == "http_status"
    wire = play_audio_event(events.terminal)
    assert wire.type is PlayAudioEventEventType.FAILED and wire.request_id == "r2"
    assert wire.error == "http_status: 404 Not Found" and wire.metadata == {"code": "http_status"}
    completed = PlaybackEvents("r3")
    assert completed.complete(1500) and completed.failure_code is None
    assert completed.terminal is not None
    done = play_audio_event(completed.terminal)
    assert (done.type, done.duration_ms, done.error, done.metadata) == (
        PlayAudioEventEventType.COMPLETED,
        1500,
        "",
        {},
    )


def test_stats_count_cancelled_apart_from_failed() -> None:
    stats = PlaybackStats()
    for code in (None, ErrorCode.STOPPED, ErrorCode.INTERRUPTED, ErrorCode.TIMEOUT, ErrorCode.INTERNAL):
        stats.record_end(code, 1000)
    assert (stats.completed, stats.cancelled, stats.failed, stats.bridge_errors) == (1, 2, 2, 1)
