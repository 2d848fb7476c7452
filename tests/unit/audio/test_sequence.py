"""Sequence bytes on phone packets: splitting, and the loss/reorder/duplicate counts per sender."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from bridge.audio import SequenceTracker, split_sequence_byte

PCM_100MS = bytes(range(256)) * 12 + bytes(128)  # 3200 bytes: 100 ms of 16 kHz mono s16le


def track(seqs: Iterable[int]) -> SequenceTracker:
    tracker = SequenceTracker()
    for seq in seqs:
        tracker.observe(seq)
    return tracker


def counts(tracker: SequenceTracker) -> tuple[int, int, int, int]:
    return tracker.received, tracker.lost, tracker.reordered, tracker.duplicates


# --- split_sequence_byte ---------------------------------------------------------------------------


def test_split_odd_packet_strips_the_leading_sequence_byte() -> None:
    seq, pcm = split_sequence_byte(bytes([7]) + PCM_100MS)
    assert seq == 7
    assert pcm == PCM_100MS
    assert type(pcm) is bytes


def test_split_even_packet_is_plain_pcm_returned_without_a_copy() -> None:
    seq, pcm = split_sequence_byte(PCM_100MS)
    assert seq is None
    assert pcm is PCM_100MS


def test_split_edge_sizes() -> None:
    assert split_sequence_byte(b"") == (None, b"")
    assert split_sequence_byte(b"\xff") == (255, b"")
    assert split_sequence_byte(b"\x00\x01\x02") == (0, b"\x01\x02")


# --- SequenceTracker -------------------------------------------------------------------------------


def test_new_tracker_counts_nothing() -> None:
    assert counts(SequenceTracker()) == (0, 0, 0, 0)


def test_in_order_packets_count_only_as_received() -> None:
    assert counts(track(range(200))) == (200, 0, 0, 0)


def test_first_packet_may_have_any_sequence_number() -> None:
    assert counts(track([200, 201, 202])) == (3, 0, 0, 0)


def test_in_order_across_the_wrap_from_255_to_0() -> None:
    assert counts(track([253, 254, 255, 0, 1, 2])) == (6, 0, 0, 0)


def test_gap_counts_each_skipped_packet_as_lost() -> None:
    assert counts(track([0, 1, 5])) == (3, 3, 0, 0)


def test_gap_across_the_wrap_counts_lost() -> None:
    assert counts(track([254, 255, 1])) == (3, 1, 0, 0)
    assert counts(track([250, 5])) == (2, 10, 0, 0)


def test_late_packet_uncounts_its_loss_exactly_once() -> None:
    tracker = track([0, 1, 3])
    assert counts(tracker) == (3, 1, 0, 0)
    tracker.observe(2)  # arrives after 3: late, so no longer lost
    assert counts(tracker) == (4, 0, 1, 0)
    tracker.observe(2)  # the same late packet again: a duplicate, and `lost` must not go negative
    assert counts(tracker) == (5, 0, 1, 1)


def test_late_packet_across_the_wrap_uncounts_its_loss() -> None:
    tracker = track([254, 1])  # 255 and 0 missing
    assert tracker.lost == 2
    tracker.observe(0)
    tracker.observe(255)
    assert counts(tracker) == (4, 0, 2, 0)


def test_packet_late_by_127_numbers_is_still_recognised() -> None:
    tracker = track([0, 128])  # 1..127 missing (a forward step of 127: the largest read as "newer")
    assert tracker.lost == 127
    tracker.observe(1)  # 127 behind the newest
    assert counts(tracker) == (3, 126, 1, 0)


def test_step_of_128_or_more_reads_as_an_older_packet() -> None:
    # 8 bits cannot tell "128 lost" from "late by 128"; the tracker documents that it assumes "late".
    tracker = track([0, 1, 130])  # expected 2, so 130 is 128 ahead: read as 128 behind
    assert counts(tracker) == (3, 0, 1, 0)


def test_repeat_of_the_newest_packet_is_a_duplicate() -> None:
    assert counts(track([0, 1, 1, 2])) == (4, 0, 0, 1)


def test_repeat_of_an_older_in_order_packet_is_a_duplicate_not_reordered() -> None:
    assert counts(track([0, 1, 2, 3, 1])) == (5, 0, 0, 1)


def test_swapped_pair_counts_one_reordered_and_no_loss() -> None:
    assert counts(track([0, 2, 1, 3])) == (4, 0, 1, 0)


def test_packet_from_before_the_first_one_is_reordered_without_touching_lost() -> None:
    tracker = track([10, 11])
    tracker.observe(9)
    assert counts(tracker) == (3, 0, 1, 0)
    tracker.observe(9)
    assert counts(tracker) == (4, 0, 1, 1)


@pytest.mark.parametrize("seq", [-1, 256, 1000])
def test_observe_rejects_values_that_are_not_a_byte(seq: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        SequenceTracker().observe(seq)


def test_counters_are_read_only() -> None:
    tracker = SequenceTracker()
    with pytest.raises(AttributeError):
        tracker.lost = 3  # type: ignore[misc]


def test_long_run_with_a_known_pattern_of_drops_swaps_delays_and_duplicates() -> None:
    total = 10_000
    dropped = {i for i in range(total) if i % 97 == 50}
    order = [i for i in range(total) if i not in dropped]
    # Swap neighbours every 50 packets: the second-sent arrives first, so one late packet per swap.
    swaps = 0
    for pos in range(10, len(order) - 1, 50):
        order[pos], order[pos + 1] = order[pos + 1], order[pos]
        swaps += 1
    # Every 1 000 packets hold one back by 40 places (sequence numbers wrap many times meanwhile).
    delays = 0
    for pos in range(500, len(order) - 100, 1000):
        if pos % 50 in (10, 11) or (pos + 40) % 50 in (10, 11):
            continue
        order.insert(pos + 40, order.pop(pos))
        delays += 1
    # Every 333 packets send one twice in a row.
    dups = 0
    arrivals: list[int] = []
    for pos, index in enumerate(order):
        arrivals.append(index)
        if pos % 333 == 200:
            arrivals.append(index)
            dups += 1

    tracker = track(index % 256 for index in arrivals)

    assert delays == 10 and swaps > 100 and dups == 30  # the pattern is what it claims to be
    assert counts(tracker) == (len(arrivals), len(dropped), swaps + delays, dups)


def reference_counts(arrivals: list[int]) -> tuple[int, int, int, int]:
    """The same counts from unbounded packet indices: what the 8-bit tracker must reproduce."""
    seen: set[int] = set()
    newest = arrivals[0] - 1
    first = arrivals[0]
    reordered = duplicates = 0
    for index in arrivals:
        if index in seen:
            duplicates += 1
        elif index < newest:
            reordered += 1
        seen.add(index)
        newest = max(newest, index)
    lost = sum(1 for index in range(first, newest + 1) if index not in seen)
    return len(arrivals), lost, reordered, duplicates


@pytest.mark.parametrize("seed", range(5))
def test_random_loss_jitter_and_duplicates_match_an_unbounded_reference(seed: int) -> None:
    rng = random.Random(seed)
    # Lossy network model: 5 % loss, 1 % duplicates, arrival jitter of up to 30 packets.
    sent = [i for i in range(1, 20_000) if rng.random() >= 0.05]
    arrivals = [0] + [i for _, i in sorted((i + rng.uniform(0, 30), i) for i in sent)]
    arrivals = [x for i in arrivals for x in ([i, i] if rng.random() < 0.01 else [i])]

    tracker = track(index % 256 for index in arrivals)

    assert counts(tracker) == reference_counts(arrivals)
    assert tracker.lost > 0 and tracker.reordered > 0 and tracker.duplicates > 0
