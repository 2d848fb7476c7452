"""The traffic of bench.load, which every process of it shares: the packet format and the talkback
schedule. Only numpy here: the worker processes import it, and their idle RSS is measured.

Packets (what a phone sends every 100 ms, lossy): ``bytes([counter % 256]) + pcm``, where ``pcm`` is
3200 bytes (100 ms of 16 kHz mono s16le) whose first 16 bytes are ``HEADER``: the send time
(``time.time_ns()``, CLOCK_REALTIME, which every process on the machine shares), the phone's index
and its packet counter. The bridge strips the sequence byte and forwards ``pcm`` unchanged, so the
cloud reads the same header at offset 0; the floor's handler reads it at offset 1.

Talkback: once a second a publisher (the cloud through the bridge, or the floor directly) sends a
100 ms 1 kHz tone burst; in ``continuous`` mode the other nine 100 ms chunks of each second are
silence, in ``bursts`` mode nothing is sent between bursts.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import numpy as np

HEADER = struct.Struct("<QII")
"""send time (ns since the epoch), phone index, packet counter: the first bytes of every packet's PCM."""
PCM_BYTES = 3200
PERIOD_S = 0.1
TONE_EVERY = 10
"""One 100 ms tone burst every this many chunks (once a second)."""


def tone_chunk(rate: int, freq: float = 1000.0, amplitude: float = 0.5) -> bytes:
    """100 ms of a sine burst at ``rate`` (int16 mono bytes)."""
    t = np.arange(rate // 10, dtype=np.float64) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


def silence_chunk(rate: int) -> bytes:
    return bytes(2 * (rate // 10))


def noise_body(index: int) -> bytes:
    """The PCM after the header of phone ``index``'s packets: seeded noise, the same every run."""
    noise = np.random.default_rng(index).integers(-3000, 3000, PCM_BYTES // 2, dtype=np.int16)
    return noise.tobytes()[HEADER.size :]


async def ticks(start: float, period: float = PERIOD_S) -> AsyncIterator[tuple[int, float]]:
    """``(counter, due time)`` every ``period`` from ``start`` (loop time), sleeping until each is due;
    a late tick comes at once, and the schedule does not shift: senders keep their cadence."""
    loop = asyncio.get_running_loop()
    counter = 0
    while True:
        due = start + counter * period
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield counter, due
        counter += 1


async def talkback_slots(start: float, mode: str, tone_ns: list[int]) -> AsyncIterator[bool]:
    """The talkback schedule both sides follow (bridge via the cloud client, floor directly): every
    100 ms from ``start`` (loop time) it yields whether to send the tone burst (once a second) or
    silence; in ``bursts`` mode it skips the silent slots. Burst send times go into ``tone_ns``."""
    async for counter, _due in ticks(start):
        is_tone = counter % TONE_EVERY == 0
        if not is_tone and mode == "bursts":
            continue  # nothing between bursts: the queue runs empty, as between utterances
        if is_tone:
            tone_ns.append(time.time_ns())
        yield is_tone
