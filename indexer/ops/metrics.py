"""Prometheus metrics of one indexer process, fed by the Indexer's hooks (see `Metrics.hooks`).

Each `Metrics` owns its own registry, so several can live in one process (tests). Components are
`follower` and `projection:NAME`. Lag in seconds is measured against the chain as this process saw it:
the time since the follower first saw a head above the component's indexed block (0 when caught up).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from indexer.follow.follower import FollowerProgress
from indexer.runtime.hooks import Hooks
from indexer.store.events import BlocksReverted, LogsIngested
from indexer.store.status import projection_component
from projections.engine.runner import ProjectionPosition

log = structlog.get_logger("metrics")

PREFIX = "rbtc_indexer"
FOLLOWER = "follower"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DEPTH_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 64, 128, 256)


component = projection_component


class HeadTimes:
    """When each chain head was first seen, to turn "behind head" into seconds."""

    def __init__(self, limit: int = 4096):
        self._seen: deque[tuple[int, float]] = deque(maxlen=limit)

    def saw(self, head: int, now: float) -> None:
        if head >= 0 and (not self._seen or head > self._seen[-1][0]):
            self._seen.append((head, now))

    def latest(self) -> int | None:
        return self._seen[-1][0] if self._seen else None

    def seconds_behind(self, indexed: int, now: float) -> float:
        """Seconds since a head above `indexed` was first seen; 0 if none was."""
        for head, seen in self._seen:
            if head > indexed:
                return max(0.0, now - seen)
        return 0.0

    def forget_upto(self, block: int) -> None:
        """Drop heads every component has passed, keeping the newest."""
        while len(self._seen) > 1 and self._seen[0][0] <= block:
            self._seen.popleft()


class Metrics:
    """The indexer's Prometheus metrics and the hook callbacks that move them."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._heads = HeadTimes()
        self._indexed: dict[str, int] = {}
        self._seen_counts = {"logs": 0, "undecodable": 0}
        self._ready_floor = -1
        self._lag: dict[str, dict[str, float]] = {}
        r = self.registry
        self.head_block = Gauge(f"{PREFIX}_head_block", "Chain head block seen by the follower.", registry=r)
        self.finalized_block = Gauge(f"{PREFIX}_finalized_block", "Finalized block seen by the follower.", registry=r)
        self.indexed_block = Gauge(
            f"{PREFIX}_indexed_block", "Last block processed by a component.", ["component"], registry=r
        )
        self.lag_blocks = Gauge(
            f"{PREFIX}_lag_blocks",
            "Blocks between the head and a component's indexed block.",
            ["component"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            f"{PREFIX}_lag_seconds",
            "Seconds since the chain first showed a block the component has not processed.",
            ["component"],
            registry=r,
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 once caught up with the head (the /readyz state).", registry=r)
        self.block_to_row = Histogram(
            f"{PREFIX}_block_to_row_latency_seconds",
            "Seconds from the follower seeing a block to its rows being committed.",
            ["projection"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpc_requests = Counter(
            f"{PREFIX}_rpc_requests",
            "JSON-RPC HTTP requests (a batch counts once).",
            ["method", "endpoint"],
            registry=r,
        )
        self.rpc_errors = Counter(
            f"{PREFIX}_rpc_errors",
            "Failed JSON-RPC HTTP requests by kind of failure.",
            ["method", "endpoint", "kind"],
            registry=r,
        )
        self.rpc_latency = Histogram(
            f"{PREFIX}_rpc_request_duration_seconds",
            "JSON-RPC HTTP request duration.",
            ["method", "endpoint"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.getlogs_range = Gauge(
            f"{PREFIX}_getlogs_block_range", "Current eth_getLogs range size in blocks.", registry=r
        )
        self.reorgs = Counter(
            f"{PREFIX}_reorgs", "Blocks-reverted events appended (reason: reorg or replay).", ["reason"], registry=r
        )
        self.reorg_depth = Histogram(
            f"{PREFIX}_reorg_depth_blocks",
            "Blocks reverted per reorg or replay.",
            ["reason"],
            buckets=DEPTH_BUCKETS,
            registry=r,
        )
        self.logs_appended = Counter(f"{PREFIX}_logs_appended", "Watched logs appended to the event store.", registry=r)
        self.undecodable_logs = Counter(
            f"{PREFIX}_undecodable_logs", "Appended logs that could not be decoded.", registry=r
        )
        self.events_applied = Counter(
            f"{PREFIX}_projection_events_applied", "Logs applied to a projection's tables.", ["projection"], registry=r
        )
        self.verify_runs = Counter(
            f"{PREFIX}_verify_runs",
            "Automatic verifications by outcome (equal, differences, error).",
            ["outcome"],
            registry=r,
        )
        self.verify_differences = Gauge(
            f"{PREFIX}_verify_differences", "Differences the last completed verification found.", registry=r
        )
        self.verify_block = Gauge(f"{PREFIX}_verify_block", "Block of the last completed verification.", registry=r)
        self.verify_users = Gauge(f"{PREFIX}_verify_users_checked", "Users the last verification checked.", registry=r)
        self.verify_seconds = Gauge(
            f"{PREFIX}_verify_duration_seconds", "Duration of the last completed verification.", registry=r
        )

    # -- setup ----------------------------------------------------------------------------------------

    def declare(self, follower: bool, projections: Iterable[str]) -> None:
        """Create the labelled series of the components this process runs, so they are scraped from the start."""
        names = ([FOLLOWER] if follower else []) + [component(p) for p in projections]
        for name in names:
            self.indexed_block.labels(name)
            self.lag_blocks.labels(name)
            self.lag_seconds.labels(name)
        for p in projections:
            self.events_applied.labels(p)
            self.block_to_row.labels(p)
        if follower:
            for reason in ("reorg", "replay"):
                self.reorgs.labels(reason)
        for outcome in ("equal", "differences", "error"):
            self.verify_runs.labels(outcome)

    # -- hook callbacks -------------------------------------------------------------------------------

    def on_append(self, progress: FollowerProgress, event: LogsIngested | BlocksReverted) -> None:
        """After the follower appended to the store."""
        if isinstance(event, BlocksReverted):
            self.reorgs.labels(event.reason).inc()
            self.reorg_depth.labels(event.reason).observe(event.to_block - event.from_block + 1)
        self.observe_follower(progress)

    def on_batch(
        self, projection: str, tracking: ProjectionPosition, applied_logs: int, observed_at: list[float]
    ) -> None:
        """After a projection committed a batch."""
        now = self._clock()
        for seen in observed_at:
            self.block_to_row.labels(projection).observe(max(0.0, now - seen))
        if applied_logs:
            self.events_applied.labels(projection).inc(applied_logs)
        with self._lock:
            self._indexed[component(projection)] = tracking.indexed_block
            self._refresh_lag(now)

    def on_ready(self) -> None:
        """A ready pass: every projection applied all that was stored when the previous pass ran.

        Projections only see blocks with logs. At a ready pass they are also current for the empty blocks the
        follower had indexed by the previous pass, so their indexed block is raised to that.
        """
        self.ready.set(1)
        with self._lock:
            floor = self._ready_floor
            self._ready_floor = self._indexed.get(FOLLOWER, -1)
            for name, block in list(self._indexed.items()):
                if name != FOLLOWER and block < floor:
                    self._indexed[name] = floor
            self._refresh_lag(self._clock())

    def projections_reached(self, block: int) -> None:
        """Every projection has applied the store up to `block` (a bounded run that ended cleanly)."""
        with self._lock:
            for name, indexed in list(self._indexed.items()):
                if name != FOLLOWER and indexed < block:
                    self._indexed[name] = block
            self._refresh_lag(self._clock())

    def on_verify(self, result: Any, error: BaseException | None) -> None:
        """After each automatic verification (`result` is a VerifyResult, or None when it failed)."""
        if result is None:
            self.verify_runs.labels("error").inc()
            return
        self.verify_runs.labels("equal" if result.equal else "differences").inc()
        self.verify_differences.set(len(result.differences))
        self.verify_block.set(result.block.number)
        self.verify_users.set(result.users_checked)
        self.verify_seconds.set(result.seconds)

    def on_rpc(self, method: str, endpoint: str, seconds: float, error_kind: str | None) -> None:
        """After each JSON-RPC HTTP request."""
        self.rpc_requests.labels(method, endpoint).inc()
        self.rpc_latency.labels(method, endpoint).observe(seconds)
        if error_kind:
            self.rpc_errors.labels(method, endpoint, error_kind).inc()

    # -- polled state ---------------------------------------------------------------------------------

    def observe_follower(self, progress: FollowerProgress, span: int | None = None) -> None:
        """Copy the follower's progress into the gauges and counters (called on appends and periodically)."""
        with self._lock:
            now = self._clock()
            if progress.head >= 0:
                self.head_block.set(progress.head)
                self._heads.saw(progress.head, now)
            if progress.finalized >= 0:
                self.finalized_block.set(progress.finalized)
            if progress.indexed_block >= 0:
                self._indexed[FOLLOWER] = progress.indexed_block
            self._count("logs", progress.logs_appended, self.logs_appended)
            self._count("undecodable", progress.undecodable_logs, self.undecodable_logs)
            if span is not None:
                self.getlogs_range.set(span)
            self._refresh_lag(now)

    def indexed(self) -> dict[str, int]:
        """Each component's indexed block as the metrics know it."""
        with self._lock:
            return dict(self._indexed)

    def lag(self) -> dict[str, dict[str, float]]:
        """Each component's lag in blocks and seconds (for /status)."""
        with self._lock:
            return {name: dict(values) for name, values in self._lag.items()}

    def _count(self, key: str, total: int, counter: Counter) -> None:
        delta = total - self._seen_counts[key]
        if delta > 0:
            counter.inc(delta)
        self._seen_counts[key] = max(total, self._seen_counts[key])

    def _refresh_lag(self, now: float) -> None:
        head = self._heads.latest()
        for name, block in self._indexed.items():
            self.indexed_block.labels(name).set(block)
            entry: dict[str, float] = {"indexed_block": block}
            if head is not None:
                entry["lag_blocks"] = max(0, head - block)
                entry["lag_seconds"] = round(self._heads.seconds_behind(block, now), 3)
                self.lag_blocks.labels(name).set(entry["lag_blocks"])
                self.lag_seconds.labels(name).set(entry["lag_seconds"])
            self._lag[name] = entry
        if self._indexed:
            self._heads.forget_upto(min(self._indexed.values()))

    # -- hooks ----------------------------------------------------------------------------------------

    def hooks(self, *others: Hooks) -> Hooks:
        """Hooks that move these metrics, then call the same callbacks of `others`."""
        mine = Hooks(
            on_append=self.on_append,
            on_batch=self.on_batch,
            on_ready=self.on_ready,
            rpc_observer=self.on_rpc,
            on_verify=self.on_verify,
        )
        return combine(mine, *others)


def combine(*hooks: Hooks | None) -> Hooks:
    """One Hooks calling each given Hooks' callbacks in order; a failing callback is logged, never raised."""
    parts = [h for h in hooks if h is not None]

    def chain(name: str) -> Callable[..., None] | None:
        callbacks = [getattr(h, name) for h in parts if getattr(h, name) is not None]
        if not callbacks:
            return None

        failed: set[int] = set()

        def call(*args: Any) -> None:
            for i, callback in enumerate(callbacks):
                try:
                    callback(*args)
                except Exception:  # observability must never stop the indexer; say so once per callback
                    if i not in failed:
                        failed.add(i)
                        log.exception(
                            "hook callback failed",
                            hook=name,
                            callback=getattr(callback, "__qualname__", repr(callback)),
                        )

        return call

    return Hooks(
        on_append=chain("on_append"),
        on_batch=chain("on_batch"),
        on_ready=chain("on_ready"),
        rpc_observer=chain("rpc_observer"),
        on_verify=chain("on_verify"),
    )
