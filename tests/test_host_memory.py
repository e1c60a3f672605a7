"""`release_free_heap`: the heap pages freed after a compile go back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from efficienthrnet.training.host_memory import release_free_heap

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim"),
    reason="malloc_trim is glibc's; elsewhere release_free_heap does nothing",
)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@glibc_only
def test_freed_heap_pages_leave_the_resident_set():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 160 MB in 16 KB blocks (below the mmap threshold, so they live in the heap), touched so they
    # are resident, then one block after them, so the freed space is not at the heap's top, where
    # free() alone would give it back.
    blocks = [libc.malloc(16 * 1024) for _ in range(10_000)]
    for block in blocks:
        ctypes.memset(block, 1, 16 * 1024)
    pin = libc.malloc(16 * 1024)
    for block in blocks:
        libc.free(block)
    before = _rss_mb()
    assert release_free_heap() is True
    after = _rss_mb()
    libc.free(pin)
    assert before - after > 100, (before, after)


def test_release_is_safe_to_call_repeatedly():
    first, second = release_free_heap(), release_free_heap()
    assert first == second  # True with glibc, False where the C library has no malloc_trim
