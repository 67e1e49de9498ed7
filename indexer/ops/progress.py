"""A one-line backfill progress bar on stderr: blocks done, logs/s and an ETA.

Shown only when stderr is a terminal and log lines are not JSON (JSON logs mean a machine reads stderr);
it disappears once the follower has caught up with the head, and log lines then carry on alone.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

import structlog

from indexer.ops import logging_setup as logs

WIDTH = 28


def logs_are_json(configured: str) -> bool:
    """Whether log lines are JSON: structlog's configured renderer, else the `log.format` setting."""
    processors = structlog.get_config().get("processors") or []
    if processors:
        return isinstance(processors[-1], structlog.processors.JSONRenderer)
    return logs.is_json(configured)


def wanted(stream: TextIO, log_format: str) -> bool:
    """Whether a progress bar belongs on `stream`."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not logs_are_json(log_format)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def render(done: int, total: int, block: int, target: int, logs_rate: float, eta: float | None) -> str:
    """One line of the bar, e.g. `backfill [#####.....]  50.0% block 500/1000  1200 logs/s  ETA 0:00:42`."""
    fraction = min(1.0, done / total) if total > 0 else 1.0
    filled = int(round(fraction * WIDTH))
    bar = "#" * filled + "." * (WIDTH - filled)
    eta_text = _duration(eta) if eta is not None else "--:--:--"
    return f"backfill [{bar}] {fraction * 100:5.1f}% block {block}/{target} {logs_rate:7.0f} logs/s  ETA {eta_text}"


class BackfillProgress:
    """Redraws one stderr line from the follower's progress until it reaches the head."""

    def __init__(
        self, stream: TextIO | None = None, *, window: float = 10.0, clock: Callable[[], float] = time.monotonic
    ):
        self.stream = stream or sys.stderr
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int, int]] = deque()
        self._start_block: int | None = None
        self._shown = False
        self.finished = False

    def update(self, indexed: int, target: int, logs_total: int, caught_up: bool) -> None:
        """Redraw for the follower at `indexed` heading for `target`; finish the line once caught up."""
        if self.finished or indexed < 0 or target < 0:
            return
        done = caught_up or indexed >= target
        if done and not self._shown:
            self.finished = True  # nothing was drawn: there was no backfill to show
            return
        now = self._clock()
        if self._start_block is None:
            self._start_block = indexed
        self._samples.append((now, indexed, logs_total))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()
        first_t, first_block, first_logs = self._samples[0]
        elapsed = now - first_t
        logs_rate = (logs_total - first_logs) / elapsed if elapsed > 0 else 0.0
        block_rate = (indexed - first_block) / elapsed if elapsed > 0 else 0.0
        eta = 0.0 if done else (target - indexed) / block_rate if block_rate > 0 else None
        total = max(target, indexed) - self._start_block
        line = render(
            total if done else indexed - self._start_block, total, indexed, max(target, indexed), logs_rate, eta
        )
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = True
        if done:
            self.close()

    def close(self) -> None:
        """End the bar's line (once)."""
        if self._shown and not self.finished:
            self.stream.write("\n")
            self.stream.flush()
        self.finished = True
