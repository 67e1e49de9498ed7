"""The long-running service around an Indexer: metrics, HTTP endpoints, systemd notifications, progress bar.

`Service(indexer).run(only, to_block)` wires its hooks into the Indexer, runs it in the calling (main) thread,
and keeps a small monitor thread that copies the follower's progress into the metrics, draws the backfill bar,
tells systemd the status and decides readiness where the Indexer has no ready pass (`--only follower`).
When systemd hears READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 is described in indexer/sdnotify.py.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, TextIO

import structlog

from indexer.errors import ExitCode
from indexer.follow.follower import Follower, FollowerProgress
from indexer.ops.http import OpsServer
from indexer.ops.metrics import Metrics
from indexer.ops.progress import BackfillProgress, wanted
from indexer.ops.systemd import Heartbeat, Notifier, Watchdog, watchdog_period
from indexer.runtime.app import Indexer
from indexer.runtime.hooks import Hooks
from indexer.runtime.plan import RunPlan
from indexer.store.status import read_status

log = structlog.get_logger("service")

STALE_AFTER_MIN = 60.0  # seconds without any loop activity before the process counts as hung
STATUS_EVERY = 5.0  # seconds between STATUS= updates within one phase
EXTEND_EVERY, EXTEND_BY = 15.0, 60.0  # start-timeout extensions while a healthy backfill runs


class Service:
    """Runs an Indexer with the operational extras a production service needs."""

    def __init__(
        self, indexer: Indexer, *, env: Mapping[str, str] | None = None, stderr: TextIO | None = None, tick: float = 0.5
    ):
        self.indexer = indexer
        self.config = indexer.config
        self.env = os.environ if env is None else env
        self.stderr = stderr or sys.stderr
        self.tick = tick
        self.metrics = Metrics()
        self.notifier = Notifier.from_env(self.env)
        self.watchdog_interval = watchdog_period(self.env) or self.config.indexer.watchdog_interval
        self.heartbeat = Heartbeat(
            max(STALE_AFTER_MIN, 4 * self.watchdog_interval, 3 * self.config.chain.request_timeout)
        )
        self.ready = threading.Event()
        self.http: OpsServer | None = None
        self.running = False
        self.plan = RunPlan(True, ())
        self.to_block: int | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._phase = ""
        self._status = ""
        self._status_sent_at = 0.0
        self._extended_at = 0.0
        self._rate_sample: tuple[float, int] | None = None
        self._logs_rate = 0.0
        self.max_lag = self.config.indexer.ready_max_lag_blocks
        self.stall_timeout = self.config.indexer.stall_timeout
        self._progress_mark: int | None = None  # the follower's indexed block when it last moved
        self._progress_at = time.monotonic()
        self._stalled = False
        self._stall_lock = threading.Lock()

    # -- run --------------------------------------------------------------------------------------------

    def run(self, plan: RunPlan | None, to_block: int | None) -> int:
        """Run the indexer until it stops; return its exit code."""
        self.plan = plan or RunPlan.everything()
        self.to_block = to_block
        self.metrics.declare(self.plan.follower, self.plan.projections)
        if self.config.http.enabled:
            server = OpsServer(
                self.config.http.listen,
                self.metrics.registry,
                alive=self.alive,
                ready=self.is_ready,
                status=self.status_document,
            )
            try:
                self.http = server.start()
            except (OSError, ValueError) as exc:
                log.error("cannot serve the HTTP endpoints", listen=self.config.http.listen, error=str(exc))
                return ExitCode.ERROR
        base = self.indexer.hooks
        beat = self._beat
        mine = Hooks(on_append=beat, on_batch=beat, on_ready=self._on_ready, rpc_observer=beat)
        self.indexer.hooks = self.metrics.hooks(mine, base)
        progress = BackfillProgress(self.stderr) if wanted(self.stderr, self.config.log.format) else None
        watchdog = Watchdog(self.notifier, self.watchdog_interval, self.alive) if self.notifier.enabled else None
        monitor = threading.Thread(target=self._monitor, args=(progress,), name="service-monitor", daemon=True)
        self.running = True
        self.heartbeat.beat()
        self.notifier.status("starting")
        if watchdog:
            watchdog.start()
        monitor.start()
        code: int | None = None
        outcome = "stopped: interrupted"
        try:
            code = self.indexer.run(self.plan, to_block)
            outcome = f"stopped: exit code {code} ({ExitCode.describe(code)})"
            return code
        except Exception as exc:
            outcome = f"stopped: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.running = False
            if code == ExitCode.OK and to_block is not None:
                self.metrics.projections_reached(to_block)
                self._mark_ready("bounded run complete")
            self._send_stopping(outcome, final=True)
            self._done.set()
            monitor.join(timeout=5)
            if watchdog:
                watchdog.stop()
            if progress:
                progress.close()
            if self.http:
                self.http.stop()
            self.notifier.close()
            self.indexer.hooks = base

    # -- state for the endpoints ------------------------------------------------------------------------

    def alive(self) -> bool:
        """The main loops are running, showed activity recently, and the follower is not stuck behind the head
        (/healthz and the watchdog): RPC retries keep the loops busy, so activity alone proves nothing."""
        return self.running and self.heartbeat.fresh() and not self.stalled()

    def is_ready(self) -> bool:
        """Caught up now (/readyz): ready once since the start, every component within `ready_max_lag_blocks`
        of the head, the follower not stuck, and not shutting down."""
        return self.ready.is_set() and not self._stopping and not self.stalled() and self.within_lag()

    def within_lag(self) -> bool:
        """Every component is at most `ready_max_lag_blocks` behind the head the follower last saw."""
        follower = self.indexer.state.follower
        if follower is not None and follower.progress.head >= 0:
            if follower.progress.head - follower.progress.indexed_block > self.max_lag:
                return False
        return all(v.get("lag_blocks", 0) <= self.max_lag for v in self.metrics.lag().values())

    def stalled(self) -> bool:
        """The follower is behind the head and has not moved for `stall_timeout` seconds."""
        follower = self.indexer.state.follower
        if follower is None or follower.progress.head < 0:
            return False
        with self._stall_lock:
            return self._stalled_now(follower.progress)

    def _stalled_now(self, p: FollowerProgress) -> bool:
        now = time.monotonic()
        if p.indexed_block != self._progress_mark or p.head - p.indexed_block <= self.max_lag:
            self._progress_mark, self._progress_at = p.indexed_block, now
        stalled = now - self._progress_at > self.stall_timeout
        if stalled != self._stalled:
            self._stalled = stalled
            if stalled:
                log.error(
                    "follower made no progress while behind the head; reporting unhealthy",
                    seconds=round(now - self._progress_at, 1),
                    indexed_block=p.indexed_block,
                    head=p.head,
                    last_error=p.last_error,
                )
            else:
                log.info("follower moves again", indexed_block=p.indexed_block, head=p.head)
        return stalled

    def status_document(self) -> dict[str, Any]:
        """The `status --json` document plus this process' live view (/status)."""
        try:
            document: dict[str, Any] = read_status(self.indexer.dsn, self.indexer.schema)
        except Exception as exc:  # the database may be down; the live part still answers
            document = {"schema": self.indexer.schema, "error": f"{type(exc).__name__}: {exc}"}
        follower = self.indexer.state.follower
        document["live"] = {
            "chain_id": self.config.chain.chain_id,
            "running": self.running,
            "alive": self.alive(),
            "ready": self.is_ready(),
            "heartbeat_age_seconds": round(self.heartbeat.age(), 3),
            "projections_caught_up": self.indexer.state.projections_caught_up,
            "follower": asdict(follower.progress) if follower is not None else None,
            "components": self.metrics.lag(),
            "logs_per_second": round(self._logs_rate, 1),
        }
        return document

    # -- hooks ------------------------------------------------------------------------------------------

    def _beat(self, *_: object) -> None:
        self.heartbeat.beat()

    def _on_ready(self) -> None:
        self.heartbeat.beat()
        self._mark_ready("caught up with the head")

    def _mark_ready(self, why: str) -> None:
        with self._lock:
            if self.ready.is_set():
                return
            self.ready.set()
        self.metrics.ready.set(1)
        follower = self.indexer.state.follower
        if follower is not None:
            self.metrics.observe_follower(follower.progress)
        self._phase = self._phase_name()
        self.notifier.ready(self._status_text())
        log.info("indexer ready", reason=why, status=self._status_text())

    def _send_stopping(self, text: str, *, final: bool = False) -> None:
        """STOPPING=1 with a status the first time; later only the status (the run's outcome)."""
        with self._lock:
            first = not self._stopping
            self._stopping = True
        if first:
            self.notifier.stopping(text)
        elif final:
            self.notifier.status(text)

    # -- monitor ----------------------------------------------------------------------------------------

    def _monitor(self, progress: BackfillProgress | None) -> None:
        while not self._done.wait(self.tick):
            try:
                self._monitor_once(progress)
            except Exception:  # never let the monitor die silently mid-run
                log.exception("service monitor failed a round")

    def _monitor_once(self, progress: BackfillProgress | None) -> None:
        if self.indexer.stop.is_set() and not self._stopping:
            self._send_stopping("stopping: shutdown requested")
        if self._stopping:
            return
        follower = self._refresh()
        self.metrics.ready.set(1 if self.is_ready() else 0)
        if follower is not None:
            p = follower.progress
            if progress is not None:
                target = p.head if self.to_block is None else min(p.head, self.to_block)
                progress.update(p.indexed_block, target, p.logs_appended, p.caught_up)
            if not self.plan.projections and p.caught_up:
                self._mark_ready("follower caught up with the head")
        now = time.monotonic()
        if (
            not self.ready.is_set()
            and self.notifier.enabled
            and self.heartbeat.fresh()
            and now - self._extended_at >= EXTEND_EVERY
        ):
            self.notifier.extend_timeout(EXTEND_BY)
            self._extended_at = now
        phase, text = self._phase_name(), self._status_text()
        if phase != self._phase or (text != self._status and now - self._status_sent_at >= STATUS_EVERY):
            self._phase, self._status, self._status_sent_at = phase, text, now
            self.notifier.status(text)

    def _refresh(self) -> Follower | None:
        """Copy the follower's progress into the metrics; return the follower (or None)."""
        follower = self.indexer.state.follower
        if follower is None:
            return None
        p = follower.progress
        span = getattr(getattr(getattr(follower, "fetcher", None), "span", None), "value", None)
        self.metrics.observe_follower(p, span)
        now = time.monotonic()
        if self._rate_sample is not None and now - self._rate_sample[0] >= 1.0:
            self._logs_rate = (p.logs_appended - self._rate_sample[1]) / (now - self._rate_sample[0])
            self._rate_sample = (now, p.logs_appended)
        elif self._rate_sample is None:
            self._rate_sample = (now, p.logs_appended)
        return follower

    def _phase_name(self) -> str:
        if self.ready.is_set():
            return "following"
        follower = self.indexer.state.follower
        return "starting" if follower is None or follower.progress.head < 0 else "backfilling"

    def _status_text(self) -> str:
        follower = self.indexer.state.follower
        if follower is None or follower.progress.head < 0:
            return "projections current" if self.ready.is_set() else "starting"
        p = follower.progress
        lag = self.metrics.lag().get("follower", {})
        behind = max(0, p.head - p.indexed_block)
        if not self.ready.is_set():
            return f"backfilling: block {p.indexed_block} of {p.head} ({behind} behind), {self._logs_rate:.0f} logs/s"
        worst = max((v.get("lag_blocks", 0) for v in self.metrics.lag().values()), default=behind)
        return (
            f"following: head {p.head}, indexed {p.indexed_block}, lag {int(worst)} blocks / "
            f"{lag.get('lag_seconds', 0.0):.1f}s"
        )
