"""Wiring: from a Config to the RPC client, event store, follower and projection workers, and `run`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import psycopg
import structlog

from indexer.chain.heads import HeadSubscription, websocket_urls
from indexer.chain.rpc import RpcClient, RpcUnavailable
from indexer.config import Config
from indexer.decode.decoder import LogDecoder
from indexer.errors import AlreadyRunning, ExitCode, ReorgBelowFinality, exit_code_of
from indexer.fetch.fetcher import AdaptiveSpan, LogFetcher
from indexer.follow.enrichment import Enricher
from indexer.follow.follower import MAX_LOGS_PER_EVENT, Follower
from indexer.runtime.hooks import Hooks
from indexer.runtime.plan import RunPlan
from indexer.runtime.projection_process import ProjectionProcess, ProjectionProcessFailed, caught_up
from indexer.store import db
from indexer.store.event_store import EVENTS_TABLE, EventStore
from indexer.store.locks import AdvisoryLock, follower_lock, projection_lock
from indexer.store.range_hints import RangeHints
from indexer.store.replay_queue import ReplayRequestQueue
from indexer.store.status import write_error
from indexer.verify.periodic import PeriodicVerifier
from projections.engine import registry
from projections.engine.rebuild import RebuildAbandoned, rebuild
from projections.engine.runner import (
    NeedsRebuild,
    ProjectionApplier,
    ProjectionPosition,
    read_positions,
    wait_for_events,
)
from projections.models.base import Projection

log = structlog.get_logger("indexer")
LOCK_CHECK_EVERY = 1.0  # seconds between checks that the advisory locks are still held
LOCK_REGAIN_GRACE = 30.0  # seconds a lost lock may stay held elsewhere (a dying session) before the run stops
CHILD_POLL = 0.1  # seconds between looks at the projection process's progress


@dataclass
class RunState:
    """What `run` is doing, for status endpoints and readiness."""

    follower: Follower | None = None
    projections_caught_up: bool = False
    failure: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class Indexer:
    """One configured indexer: its store, chain access, and the workers `run` starts."""

    def __init__(self, config: Config, *, stop: threading.Event | None = None, hooks: Hooks | None = None):
        self.config = config
        self.dsn = config.database.url
        self.schema = config.database.schema_
        self.stop = stop or threading.Event()
        self.hooks = hooks or Hooks()
        self.state = RunState()
        self.range_hints = RangeHints(self.dsn, self.schema, config.chain.chain_id)
        self.log_format: str | None = None  # a command-line override, handed on to a projection process
        self.lock_wait = 0.0  # seconds to wait for a projection lock (a projection process: its predecessor's)
        self._last_rpc_report = -1e9

    # -- building blocks ----------------------------------------------------------------------------

    @cached_property
    def store(self) -> EventStore:
        store = EventStore(self.dsn, self.schema, self.config.database.pool_size)
        store.create_tables()
        return store

    @cached_property
    def rpc(self) -> RpcClient:
        chain = self.config.chain
        return RpcClient(
            chain.rpc_urls,
            timeout=chain.request_timeout,
            observer=self.hooks.rpc_observer,
            stop=self.stop,
            on_failure=self._report_rpc_failure,
            chain_id=chain.chain_id,
        )

    @cached_property
    def decoder(self) -> LogDecoder:
        return LogDecoder((role, c.address, self.config.abi_path(role, c)) for role, c in self.config.watched())

    def migrate(self) -> list[int]:
        """Apply pending migrations and create the event store's table."""
        applied = db.migrate(self.dsn, self.schema)
        _ = self.store
        return applied

    def follower(self) -> Follower:
        chain = self.config.chain
        span = AdaptiveSpan(
            self.range_hints.learned() or chain.initial_block_range,
            chain.max_block_range,
            on_change=self.range_hints.remember,
        )
        return Follower(
            chain_id=chain.chain_id,
            rpc=self.rpc,
            store=self.store,
            fetcher=LogFetcher(
                self.rpc,
                self.config.start_blocks(),
                span,
                completeness=chain.completeness,
                fetch_receipts=self.config.indexer.receipts,
                watched_topics=self.decoder.topics0(),
            ),
            enricher=Enricher(self.rpc, self.decoder.roles, receipts=self.config.indexer.receipts),
            decoder=self.decoder,
            start_block=self.config.start_block(),
            confirmations=chain.confirmations,
            use_finalized_tag=chain.use_finalized_tag,
            poll_interval=chain.poll_interval,
            prefetch=chain.prefetch,
            stop=self.stop,
            on_append=self.hooks.on_append,
            replay_requests=ReplayRequestQueue(self.dsn, self.schema, chain.chain_id),
        )

    def heads(self) -> HeadSubscription | None:
        """The newHeads subscription that wakes the follower (started), or None when it is switched off."""
        chain = self.config.chain
        urls = chain.ws_urls or websocket_urls(chain.rpc_urls)
        if not chain.subscribe_heads or not urls:
            return None
        return HeadSubscription(urls, stop=self.stop, connect_timeout=chain.request_timeout).start()

    def runner(self, conn: psycopg.Connection, projections: list[Projection]) -> ProjectionApplier:
        return ProjectionApplier(
            self.store,
            conn,
            projections,
            journal_schema=self.schema,
            table_schema=self.schema,
            page_size=max(1, self.config.indexer.batch_size // MAX_LOGS_PER_EVENT),  # stored events hold up to that
            stop=self.stop,
            on_batch=self.hooks.on_batch,
        )

    # -- run ----------------------------------------------------------------------------------------

    def run(self, plan: RunPlan | None = None, to_block: int | None = None) -> int:
        """Run the plan's components (default: everything) until stopped, or until `to_block` is applied."""
        plan = plan or RunPlan.everything()
        want_follower = plan.follower
        projections = registry.build(list(plan.projections)) if plan.projections else []
        self.migrate()
        in_child = self._projections_in_child(want_follower, projections)
        locks: list[AdvisoryLock] = []
        try:
            if want_follower:
                lock = follower_lock(self.dsn, self.schema, self.config.chain.chain_id)
                lock.acquire_or_fail("chain follower")
                locks.append(lock)
            for p in [] if in_child else projections:  # a projection process takes its own locks
                lock = projection_lock(self.dsn, self.schema, p.name)
                if not lock.acquire_or_fail(f"projection {p.name}", wait=self.lock_wait, stop=self.stop):
                    log.info("stopped while waiting for its locks", lock=lock.key)
                    return ExitCode.OK
                locks.append(lock)
            keeper_stop = threading.Event()
            keeper = threading.Thread(target=self._keep_locks, args=(locks, keeper_stop), name="locks", daemon=True)
            keeper.start()
            try:
                return self._run_workers(want_follower, projections, to_block, in_child)
            finally:
                keeper_stop.set()
                keeper.join(timeout=10)
        finally:
            for lock in locks:
                lock.release()

    def _keep_locks(self, locks: list[AdvisoryLock], done: threading.Event) -> None:
        """Every LOCK_CHECK_EVERY seconds: re-take a lock lost with its connection. One still held elsewhere
        after LOCK_REGAIN_GRACE seconds (not just our own session dying on the server) stops the run with
        exit 4. While the database is away nobody can write, nor take it."""
        refused_since: dict[str, float] = {}
        while not done.wait(LOCK_CHECK_EVERY):
            for lock in locks:
                try:
                    if lock.ensure():
                        log.warning("advisory lock was lost with its connection; re-taken", lock=lock.key)
                    refused_since.pop(lock.key, None)
                except AlreadyRunning as exc:
                    first = refused_since.setdefault(lock.key, time.monotonic())
                    if time.monotonic() - first < LOCK_REGAIN_GRACE:
                        log.warning("advisory lock lost and held elsewhere; retrying", lock=lock.key)
                        continue
                    log.error("stopping: the single-writer lock was lost", error=str(exc))
                    self.state.failure = exc
                    self.stop.set()
                    return
                except db.TRANSIENT_ERRORS:
                    continue

    def _projections_in_child(self, want_follower: bool, projections: list[Projection]) -> bool:
        """Whether this run's projections go to a child process (`indexer.projection_process`): only beside the
        follower, and only with a configuration file the child can read."""
        if not (self.config.indexer.projection_process and want_follower and projections):
            return False
        if not Path(self.config.source).is_file():
            log.warning("projections run in this process: the configuration is not a file", source=self.config.source)
            return False
        return True

    def _run_workers(
        self, want_follower: bool, projections: list[Projection], to_block: int | None, in_child: bool = False
    ) -> int:
        periodic = None  # built before any thread starts: it refuses a configuration verify cannot read
        if self.config.indexer.verify_interval and want_follower and len(projections) == len(registry.NAMES):
            periodic = PeriodicVerifier(
                self.config, self.rpc, registry.NAMES, self.stop, self.state.ready, on_verify=self.hooks.on_verify
            )
        follower_done = threading.Event()
        threads = []
        heads: HeadSubscription | None = None
        if want_follower:
            follower = self.follower()
            follower.heads = heads = self.heads()
            self.state.follower = follower

            def follow() -> None:
                follower.check_chain()
                follower.run(to_block)

            threads.append(self._thread("follower", follow, follower_done))
        else:
            follower_done.set()
        if projections and in_child:
            threads.append(self._thread("projections", lambda: self._supervise(projections, to_block), None))
        elif projections:
            threads.append(
                self._thread("projections", lambda: self._project(projections, to_block, follower_done), None)
            )
        if periodic is not None:
            threads.append(self._thread("verify", periodic.run, None))
        log.info(
            "indexer running",
            schema=self.schema,
            chain=self.config.chain.chain_id,
            follower=want_follower,
            projections=[p.name for p in projections],
            projection_process=in_child,
            to_block=to_block,
        )
        try:
            while any(t.is_alive() for t in threads):
                if self.state.failure is not None:
                    self.stop.set()
                for t in threads:
                    t.join(timeout=0.2)
        finally:
            if heads is not None:
                heads.close()
        failure = self.state.failure
        if isinstance(failure, ReorgBelowFinality):
            self._record_error("follower", str(failure))
            log.error("stopping: reorg below finality", error=str(failure))
        elif failure is not None:
            log.error("stopping after an error", error=f"{type(failure).__name__}: {failure}")
        else:
            log.info("indexer stopped cleanly")
        return exit_code_of(failure)

    def _thread(self, name: str, target: Callable[[], None], done: threading.Event | None) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced to the main thread, which stops the others
                if not (isinstance(exc, RpcUnavailable) and self.stop.is_set()):
                    self.state.failure = exc
                    self.stop.set()
            finally:
                if done is not None:
                    done.set()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    def _project(self, projections: list[Projection], to_block: int | None, follower_done: threading.Event) -> None:
        """Keep projections current; reconnect (with backoff) whenever the database goes away."""
        delay = 0.5
        while not self.stop.is_set():
            try:
                if self._project_connected(projections, to_block, follower_done):
                    return
            except db.TRANSIENT_ERRORS as exc:
                log.warning("projections lost the database, reconnecting", error=db.first_line(exc))
                self.stop.wait(delay)
                delay = min(10.0, delay * 2)
                self.store.try_recover()

    def _project_connected(
        self, projections: list[Projection], to_block: int | None, follower_done: threading.Event
    ) -> bool:
        """Run projections on one set of connections; True when a bounded run is complete."""
        with (
            db.connection(self.dsn, self.schema, autocommit=True) as conn,
            db.connection(self.dsn, self.schema, autocommit=True) as listener,
        ):
            listener.execute(f'LISTEN "{EVENTS_TABLE}"')
            runner = self.runner(conn, projections)
            while not self.stop.is_set():
                finished_follower = follower_done.is_set() and self._follower_reached(to_block)
                try:
                    read = runner.run_until_caught_up()
                except NeedsRebuild as exc:
                    stale = set(runner.needing_rebuild()) | {exc.projection}
                    targets = [p for p in projections if p.name in stale]
                    log.warning("projections need a rebuild", projections=sorted(stale), error=str(exc))
                    try:
                        rebuild(self.dsn, self.schema, self.store, targets, stop=self.stop, decoder=self.decoder)
                    except RebuildAbandoned as abandoned:
                        log.warning("rebuild abandoned; the live tables were left as they were", error=str(abandoned))
                    continue
                if read == 0:
                    runner.mark_caught_up(self.config.chain.chain_id)
                self.state.projections_caught_up = read == 0 or self.state.projections_caught_up
                if self._follower_caught_up():
                    self.state.ready.set()
                    if self.hooks.on_ready:
                        self.hooks.on_ready()
                if to_block is not None and finished_follower and read == 0:
                    return True
                wait_for_events(listener, 0.5)
        return False

    def _supervise(self, projections: list[Projection], to_block: int | None) -> None:
        """Run the projections in a child process until it ends; a child ending on its own (but for a bounded
        run's exit 0) fails the run with the child's exit code."""
        names = [p.name for p in projections]
        child = ProjectionProcess(self.config.source, names, to_block, self.log_format).start()
        seen: dict[str, ProjectionPosition] = {}
        conn: psycopg.Connection | None = None
        try:
            while True:
                code = child.exit_code()
                if code is not None:
                    if self.stop.is_set() or (code == 0 and to_block is not None):
                        log.info("projection process ended", exit_code=code)
                        return
                    raise ProjectionProcessFailed(code)
                if self.stop.is_set():
                    child.stop()
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = db.connect(self.dsn, self.schema, autocommit=True)
                    self._observe_child(conn, names, seen)
                except db.TRANSIENT_ERRORS as exc:
                    log.warning("cannot read the projection process's progress", error=db.first_line(exc))
                    if conn is not None:
                        conn.close()
                self.stop.wait(CHILD_POLL)
        finally:
            child.stop()
            if conn is not None:
                conn.close()

    def _observe_child(self, conn: psycopg.Connection, names: list[str], seen: dict[str, ProjectionPosition]) -> None:
        """Feed the child's committed progress to the hooks (metrics, heartbeat) and decide readiness, as the
        projection loop does in one process."""
        for name, position in read_positions(conn, names).items():
            before = seen.get(name)
            if before is None or before.notification_id != position.notification_id:
                applied = 0 if before is None else max(0, position.events_applied - before.events_applied)
                if self.hooks.on_batch:
                    self.hooks.on_batch(name, position, applied, [])
                seen[name] = position
        if caught_up(conn, names):
            self.state.projections_caught_up = True
            if self._follower_caught_up():
                self.state.ready.set()
                if self.hooks.on_ready:
                    self.hooks.on_ready()

    def _follower_caught_up(self) -> bool:
        follower = self.state.follower
        return follower is None or follower.progress.caught_up

    def _follower_reached(self, to_block: int | None) -> bool:
        if to_block is None:
            return False
        cursor = self.store.cursor(self.config.chain.chain_id, self.config.start_block())
        return cursor.indexed_block >= to_block

    def _report_rpc_failure(self, message: str) -> None:
        """Record the latest RPC failure in sync_status, at most every few seconds."""
        now = time.monotonic()
        if now - self._last_rpc_report < 5.0:
            return
        self._last_rpc_report = now
        self._record_error("follower", f"RPC: {message}")

    def _record_error(self, component: str, message: str) -> None:
        try:
            with db.connection(self.dsn, self.schema, autocommit=True) as conn:
                write_error(conn, component, message)
        except db.DatabaseUnavailable:
            log.error("could not record the error in sync_status", error=message)
