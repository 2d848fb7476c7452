"""Wall-clock milliseconds, the unit of the wire contract's timestamps."""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000
