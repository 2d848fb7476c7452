"""Run as a script: one room receives another's data packets on a LiveKit server; prints JSON with
the packets received and the SDK's log records that crossed into Python meanwhile, by level.

    python tests/support/log_census.py URL RECEIVER_TOKEN SENDER_TOKEN PACKETS

A process of its own, because the SDK loads its native library once per process: the test runs it
once on the wheel's library and once on the bridge's quiet copy (``LIVEKIT_LIB_PATH``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys

import livekit.rtc._ffi_client as ffi_client
from livekit import rtc

LEVELS = {0: "error", 1: "warn", 2: "info", 3: "debug", 4: "trace"}


async def census(url: str, receiver_token: str, sender_token: str, packets: int) -> dict[str, object]:
    records: collections.Counter[str] = collections.Counter()
    to_python_level = ffi_client.to_python_level

    def counting(level: int) -> object:  # the SDK's callback calls it once per forwarded log record
        records[LEVELS.get(level, str(level))] += 1
        return to_python_level(level)  # type: ignore[arg-type]

    receiver, sender = rtc.Room(), rtc.Room()
    received = 0

    def on_data(_: rtc.DataPacket) -> None:
        nonlocal received
        received += 1

    receiver.on("data_received", on_data)
    await receiver.connect(url, receiver_token)
    await sender.connect(url, sender_token)
    await asyncio.sleep(1.0)  # connected, data channels open: count the packets' records only
    ffi_client.to_python_level = counting  # type: ignore[assignment]
    for _ in range(packets):
        await sender.local_participant.publish_data(bytes(3200), reliable=True)
        await asyncio.sleep(0.02)
    for _ in range(100):
        if received >= packets:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)  # records are forwarded up to 1 s late
    ffi_client.to_python_level = to_python_level
    await sender.disconnect()
    await receiver.disconnect()
    return {"received": received, "records": dict(records)}


if __name__ == "__main__":
    url, receiver_token, sender_token, count = sys.argv[1:5]
    print(json.dumps(asyncio.run(census(url, receiver_token, sender_token, int(count)))))
