"""The callbacks the pipeline offers to observers (metrics, systemd notifications), as typed protocols.

A hook only observes: it must not raise into the pipeline (see `indexer.ops.metrics.combine`, which logs and
swallows failures) and must return quickly, since it runs on the follower's or a projection worker's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from indexer.chain.rpc import Observer as RpcObserver
from indexer.follow.follower import FollowerProgress
from indexer.store.events import ChainEvent
from indexer.verify.records import VerifyResult
from projections.engine.runner import ProjectionPosition


class AppendHook(Protocol):
    """Called after every append of the follower, with its progress and the event appended."""

    def __call__(self, progress: FollowerProgress, event: ChainEvent, /) -> None: ...


class BatchHook(Protocol):
    """Called after every committed projection batch: projection name, its position, logs applied, and the
    time each applied event was observed on chain (seconds since the epoch)."""

    def __call__(
        self, projection: str, position: ProjectionPosition, applied_logs: int, observed_at: list[float], /
    ) -> None: ...


class ReadyHook(Protocol):
    """Called once, when the follower has caught up and every projection has applied the store."""

    def __call__(self) -> None: ...


class VerifyHook(Protocol):
    """Called after each automatic verification inside `run`: its result, or the error that stopped it."""

    def __call__(self, result: VerifyResult | None, error: BaseException | None, /) -> None: ...


@dataclass
class Hooks:
    """Callbacks for observability; all optional."""

    on_append: AppendHook | None = None
    on_batch: BatchHook | None = None
    on_ready: ReadyHook | None = None
    rpc_observer: RpcObserver | None = None
    on_verify: VerifyHook | None = None
