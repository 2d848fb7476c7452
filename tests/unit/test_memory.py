"""bridge.memory tells Python objects, C heap in use and freed C heap apart."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

import pytest

from bridge.memory import heap_usage

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "malloc_in_use" not in heap_usage(),
    reason="mallinfo2 is glibc's (>= 2.33)",
)


def test_python_blocks_count_objects_that_are_kept() -> None:
    # No collection in between: one that the 20 000 allocations trigger frees earlier tests' garbage,
    # and CI once saw 19 999 more blocks.
    gc.collect()
    gc.disable()
    try:
        before = heap_usage()["python_blocks"]
        kept = [object() for _ in range(20_000)]
        during = heap_usage()["python_blocks"]
        del kept
        after = heap_usage()["python_blocks"]
    finally:
        gc.enable()
    assert during - before >= 20_000
    assert during - after >= 20_000


@glibc_only
def test_c_heap_in_use_grows_with_malloc_and_free_grows_when_it_is_freed() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = heap_usage()
    # 200 blocks of 16 KiB: below glibc's mmap threshold, so they come from the arena.
    blocks = [libc.malloc(16 * 1024) for _ in range(200)]
    during = heap_usage()
    for block in blocks[:-1]:  # keep the last one so the freed ones are not the arena's top
        libc.free(block)
    after = heap_usage()
    libc.free(blocks[-1])
    assert during["malloc_in_use"] - before["malloc_in_use"] >= 200 * 16 * 1024
    assert during["malloc_in_use"] - after["malloc_in_use"] >= 199 * 16 * 1024
    assert after["malloc_free"] - during["malloc_free"] >= 199 * 16 * 1024
