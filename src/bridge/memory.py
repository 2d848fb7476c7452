"""Where the process's memory is: Python objects, the C heap in use, and what the C heap holds free.

RSS alone cannot tell a leak from fragmentation. ``heap_usage`` splits it, cheaply enough for every
metrics scrape:

- ``python_blocks``: blocks the interpreter has allocated (``sys.getallocatedblocks``); grows only if
  Python objects are kept.
- ``malloc_in_use`` / ``malloc_free``: glibc's own totals over all arenas (``mallinfo2``). The
  livekit SDK's native core (Rust, system allocator) and large Python buffers allocate here. Growth
  of ``in_use`` is memory someone holds; growth of ``free`` is heap that was freed but cannot be
  given back (fragmentation across threads' arenas).
- ``malloc_mmap``: large blocks glibc maps on their own; given back as soon as they are freed.

On a libc without ``mallinfo2`` (musl, macOS, glibc < 2.33) only ``python_blocks`` is reported.

`python -m bench.soak` samples this split over time; docs/design/lessons.md has what it showed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

__all__ = ["heap_usage"]


class _Mallinfo2(ctypes.Structure):
    # struct mallinfo2 from <malloc.h>, glibc >= 2.33: ten size_t fields.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes obtained with sbrk (the main arena) ...
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmap-ed blocks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use, all arenas
            "fordblks",  # bytes free, all arenas
            "keepcost",
        )
    ]


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@cache
def _mallinfo2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    libc = _libc()
    function = getattr(libc, "mallinfo2", None) if libc is not None else None
    if function is None:
        return None
    function.restype = _Mallinfo2
    function.argtypes = []
    return function


def heap_usage() -> dict[str, int]:
    """``python_blocks`` always; ``malloc_in_use``, ``malloc_free``, ``malloc_mmap`` (bytes) on glibc."""
    usage = {"python_blocks": sys.getallocatedblocks()}
    mallinfo2 = _mallinfo2()
    if mallinfo2 is not None:
        info = mallinfo2()
        usage["malloc_in_use"] = int(info.uordblks)
        usage["malloc_free"] = int(info.fordblks)
        usage["malloc_mmap"] = int(info.hblkhd)
    return usage
