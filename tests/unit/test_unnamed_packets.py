"""UnnamedPackets: held in order, released once, bounded by age and by bytes (session/unnamed.py)."""

from __future__ import annotations

from bridge.session.unnamed import UnnamedPackets


def test_released_oldest_first_with_their_arrival_times_and_only_once() -> None:
    held = UnnamedPackets(max_age_ms=6000, max_bytes=1000)
    for at in (100, 200, 300):
        held.hold(bytes([at // 100]), at)
    assert held.release(400) == [(b"\x01", 100), (b"\x02", 200), (b"\x03", 300)]
    assert not held and held.release(400) == []
    assert (held.released, held.expired) == (3, 0)


def test_a_packet_older_than_the_hold_is_dropped_and_counted_not_released() -> None:
    held = UnnamedPackets(max_age_ms=6000, max_bytes=1000)
    held.hold(b"old", 1000)
    held.hold(b"new", 6500)
    assert held.release(7001) == [(b"new", 6500)]  # "old" is 6001 ms old by then
    assert (held.released, held.expired) == (1, 1)


def test_a_packet_exactly_at_the_age_limit_is_still_released() -> None:
    held = UnnamedPackets(max_age_ms=6000, max_bytes=1000)
    held.hold(b"edge", 1000)
    assert held.release(7000) == [(b"edge", 1000)]


def test_the_bytes_held_are_bounded_dropping_the_oldest() -> None:
    held = UnnamedPackets(max_age_ms=6000, max_bytes=10)
    for index in range(5):
        held.hold(bytes([index]) * 4, 100 + index)  # 20 bytes offered, 10 fit: the last two stay
    assert [payload[0] for payload, _ in held.release(200)] == [3, 4]
    assert held.expired == 3
