"""C allocator settings for a process whose working set comes and goes in large pieces.

Each range moves a few megabytes at once (a JSON-RPC batch answer, a stored event's JSON, a page of stored
events as PostgreSQL returns it). glibc's allocator raises its mmap threshold after such a block is freed, so
the next ones come from the heap, and a heap rarely shrinks: the process keeps the high-water mark of every
transient piece. With a fixed threshold, blocks above 128 KiB are mapped and unmapped as they come and go,
free heap above 128 KiB is given back, and two arenas serve all threads (each thread of its own would hold
its own free memory). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
LARGE_BLOCK = 128 * 1024
ARENAS = 2


def release_large_blocks_promptly() -> bool:
    """Apply the settings (idempotent); False where the C library has no `mallopt`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (_M_MMAP_THRESHOLD, LARGE_BLOCK),
            (_M_TRIM_THRESHOLD, LARGE_BLOCK),
            (_M_ARENA_MAX, ARENAS),
        )
    )
