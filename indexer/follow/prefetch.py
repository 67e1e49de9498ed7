"""The next backfill range in flight while the current one is decoded, enriched and appended.

A prefetched range is used only by a round that starts exactly where it starts and may reach at least as far;
any other round (after a reorg, a replay, a moved stream) discards it. It is validated like every fetched range,
and the follower still checks its first block's parent against the cursor, so a range fetched before a reorg
is never appended onto the other fork. One fetch runs at a time: the fetcher's adaptive span is never shared.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

from indexer.fetch.fetcher import FetchedRange, LogFetcher


@dataclass(frozen=True)
class _Pending:
    start: int
    end: int
    future: Future[FetchedRange]


class RangePrefetcher:
    """Fetches ranges for the follower, the next backfill range possibly ahead in a background thread."""

    def __init__(self, fetcher: LogFetcher, *, enabled: bool = True):
        self.fetcher = fetcher
        self.enabled = enabled
        self._pending: _Pending | None = None
        self.used = 0  # prefetched ranges handed to a round, for tests

    def fetch(self, start: int, end: int, *, all_headers: bool) -> FetchedRange:
        """Logs from `start` up to at most `end`: the prefetched range if it fits this round, else fetched now.
        A failed prefetch fails this round (and is not used again)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.start == start and pending.end <= end and not all_headers:
                fetched = pending.future.result()
                self.used += 1
                return fetched
            _settle(pending.future)
        return self.fetcher.fetch(start, end, all_headers=all_headers)

    def ahead(self, start: int, end: int) -> None:
        """Start fetching the backfill range start..end (or its first span) in the background."""
        self.discard()
        if not self.enabled or start > end:
            return
        future: Future[FetchedRange] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self.fetcher.fetch(start, end, all_headers=False))
            except BaseException as exc:  # handed to the round that takes the range
                future.set_exception(exc)

        # A daemon thread: a fetch still retrying when the process ends must not hold the exit.
        threading.Thread(target=work, name="prefetch", daemon=True).start()
        self._pending = _Pending(start, end, future)

    def discard(self) -> None:
        """Drop the range in flight, waiting for its fetch to end, so that the next fetch runs alone."""
        pending, self._pending = self._pending, None
        if pending is not None:
            _settle(pending.future)

    def close(self) -> None:
        """Abandon the range in flight without waiting (the follower is stopping; its RPC client gives up)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.future.cancel()


def _settle(future: Future[FetchedRange]) -> None:
    if not future.cancel():
        future.exception()  # waits; its error belonged to a round that will not happen
