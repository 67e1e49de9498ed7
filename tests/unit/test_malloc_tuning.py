"""Large freed blocks go back to the system at once (glibc), so a process's RSS follows what it holds."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import sys
from indexer.ops.malloc_tuning import release_large_blocks_promptly

def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

if sys.argv[1] == "tuned":
    assert release_large_blocks_promptly()
one = bytearray(4 << 20)
del one  # freeing one large block raises glibc's own mmap threshold above its size
before = rss_mb()
blocks = [bytearray(1 << 20) for _ in range(200)]  # 200 MB held at once, then freed
pin = bytearray(200 << 10)  # still alive above them, as later allocations are in a running process
peak = rss_mb()
del blocks
print(round(before), round(peak), round(rss_mb()))
"""


def _run(mode: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    before, peak, after = (int(v) for v in out.stdout.split())
    return before, peak, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_large_blocks_leave_the_resident_set():
    before, peak, after = _run("tuned")
    assert peak - before >= 190
    assert after - before < 20, (before, peak, after)
    # Without the settings the heap keeps them: what the test is about.
    before, peak, after = _run("default")
    assert peak - before >= 190 and after - before >= 150, (before, peak, after)
