"""Reads that wait: `?min_block=N` holds a request until the tables it reads reflect block N, woken by the hub's
notifications, and gives up with TablesBehind after a bounded wait. Against a replica the hub (listening on the
primary) may hear of a commit before the replica has replayed it; the reader then re-checks briefly until the
replica's own snapshot shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from indexer.serve.hub import PushHub
from indexer.serve.snapshot import ProjectionMark, ReadDatabase, Snapshot, TablesBehind

T = TypeVar("T")
REPLICA_RECHECK = 0.01  # seconds between re-checks while a replica catches up with a commit the primary announced


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """What a read returned and what its snapshot reflected."""

    value: T
    mark: ProjectionMark | None  # lowest block among the projections read (None: none committed yet)
    version: int


class Reader:
    def __init__(self, db: ReadDatabase, hub: PushHub, max_wait: float):
        self.db = db
        self.hub = hub
        self.max_wait = max_wait

    async def read(
        self, projections: Sequence[str], fn: Callable[[Snapshot], Awaitable[T]], min_block: int | None = None
    ) -> Read[T]:
        """Run `fn` in one snapshot in which every one of `projections` reflects at least `min_block`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while True:
            async with self.db.snapshot() as snap:
                mark = snap.block_of(projections)
                complete = all(p in snap.marks for p in projections)
                reached = mark.block if mark is not None and complete else -1
                if min_block is None or reached >= min_block:
                    return Read(await fn(snap), mark, snap.version)
            left = deadline - loop.time()
            if left <= 0:
                raise TablesBehind(min_block, reached, self.max_wait)
            heard = [self.hub.marks[p].block if p in self.hub.marks else -1 for p in projections]
            if heard and min(heard) >= min_block:
                await asyncio.sleep(min(left, REPLICA_RECHECK))
            else:
                # Bounded by one second as well, in case a notification was lost with a dropped connection.
                await self.hub.wait_change(min(left, 1.0))
