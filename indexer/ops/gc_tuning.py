"""Garbage-collector settings for a process that moves hundreds of thousands of records per second.

Decoding, enrichment and projection allocate millions of short-lived dicts and lists that hold no reference
cycles; with CPython's default threshold (a young collection every 700 allocations) the collector runs
thousands of times per range, and every older-generation collection walks all objects still alive. The
objects alive once the command starts (modules, classes, configuration) are frozen out of collection, and
the young generation is collected every 50,000 allocations. Cycles are still collected, only later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 100)


def tune_for_throughput() -> None:
    """Freeze what is alive now and raise the collection thresholds (idempotent)."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
