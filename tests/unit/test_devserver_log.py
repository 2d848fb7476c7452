"""What the dev server's log tells a test about a participant the server kept (devserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bridge.testing.devserver import LocalLiveKitServer, leave_lost_on_the_wire


@contextmanager
def server_that_logged(lines: list[str]) -> Iterator[LocalLiveKitServer]:
    """A server never started, whose log file holds ``lines``: only its log readers are used."""
    server = LocalLiveKitServer()
    try:
        server.log_path.write_text("\n".join(lines))
        yield server
    finally:
        server.close()


def test_a_leave_lost_on_the_wire_is_told_from_a_leave_the_server_read() -> None:
    """Lines as the server logged them (trimmed): a CI run where our leave was lost, and a clean leave."""
    lost = "\n".join(
        [
            'INFO livekit rtc/room.go:1272 participant active {"participant": "bridge-shutdown-phone-1"}',
            'WARN livekit service/rtcservice.go:565 error writing to websocket {"error": "broken pipe"}',
            'WARN livekit.transport rtc/transport.go:949 error reading data channel {"label": "_lossy"}',
        ]
    )
    clean = "\n".join(
        [
            'WARN livekit.transport rtc/transport.go:949 error reading data channel {"label": "_lossy"}',
            'INFO livekit rtc/participant.go:1475 participant closing {"participant": "leaver"}',
        ]
    )
    assert leave_lost_on_the_wire(lost)
    assert not leave_lost_on_the_wire(clean)
    assert not leave_lost_on_the_wire(lost + "\n" + clean)  # the server did read a leave
    # Only the last session of an identity counts: one that left cleanly, then joined and lost its leave.
    rejoined = 'INFO livekit service/roommanager.go:433 starting RTC session {"participant": "bridge-u"}'
    assert leave_lost_on_the_wire("\n".join([rejoined, clean, rejoined, lost]))
    assert not leave_lost_on_the_wire("\n".join([rejoined, lost, rejoined, clean]))


def test_log_lines_naming_keeps_one_room_when_asked() -> None:
    with server_that_logged(
        [
            'participant active {"room": "room-a", "participant": "bridge-u"}',
            'participant active {"room": "room-b", "participant": "bridge-u"}',
            'participant active {"room": "room-a", "participant": "phone-u"}',
        ]
    ) as server:
        assert server.log_lines_naming(["bridge-u"]).count("\n") == 1  # both rooms
        assert server.log_lines_naming(["bridge-u"], room="room-b") == (
            'participant active {"room": "room-b", "participant": "bridge-u"}'
        )


def test_leaves_count_as_lost_only_when_every_participant_left_lost_its_own() -> None:
    with server_that_logged(
        [
            'starting RTC session {"room": "room-a", "participant": "bridge-lost"}',
            'error writing to websocket {"room": "room-a", "participant": "bridge-lost"}',
            'starting RTC session {"room": "room-a", "participant": "bridge-stuck"}',
            'participant active {"room": "room-a", "participant": "bridge-stuck"}',
        ]
    ) as server:
        assert server.leaves_lost_on_the_wire({"room-a": ["bridge-lost"]})
        # One whose leave the server did not lose (still connected, say) is not excused by the other.
        assert not server.leaves_lost_on_the_wire({"room-a": ["bridge-lost", "bridge-stuck"]})
        assert not server.leaves_lost_on_the_wire({})
        assert "bridge-stuck" in server.log_of_participants({"room-a": ["bridge-lost", "bridge-stuck"]})
