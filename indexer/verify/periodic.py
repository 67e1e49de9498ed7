"""Verification inside `run`: every `indexer.verify_interval` blocks the tables advance, once caught up.

Failures never stop the daemon: each is recorded (verify_runs, the `verify` row of sync_status, so `status` and
`/status` show it), logged, and reported to the `on_verify` hook; a reorg during a run is simply tried again
at the next block the tables reach.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import structlog

from indexer.chain.rpc import RpcClient, RpcError
from indexer.config import Config
from indexer.errors import IndexerError
from indexer.verify.chain_state import BlockNotCanonical
from indexer.verify.records import VerifyResult
from indexer.verify.tables import snapshot
from indexer.verify.verifier import BlockChoice, Verifier

log = structlog.get_logger("verify")
POLL_SECONDS = 1.0
RETRY_FIRST, RETRY_MAX = 5.0, 300.0  # seconds before trying again after a failed run, doubling up to the max


class PeriodicVerifier:
    """Runs a Verifier each time the tables' block has moved `verify_interval` blocks past the last run."""

    def __init__(
        self,
        config: Config,
        rpc: RpcClient,
        projections: tuple[str, ...],
        stop: threading.Event,
        ready: threading.Event,
        *,
        on_verify: Callable[[VerifyResult | None, BaseException | None], None] | None = None,
    ):
        self.config = config
        self.interval = config.indexer.verify_interval
        self.projections = projections
        self.stop = stop
        self.ready = ready
        self.on_verify = on_verify
        self.verifier = Verifier(config, rpc, projections, stop=stop)  # refuses a config verify cannot read
        self.last_block: int | None = None
        self.failures = 0
        self.not_before = 0.0

    def run(self) -> None:
        """Until stopped: wait for readiness, then verify whenever the tables are far enough ahead."""
        while not self.stop.wait(POLL_SECONDS):
            if not self.ready.is_set() or time.monotonic() < self.not_before:
                continue
            try:
                block = self._tables_block()
            except (IndexerError, psycopg.Error) as exc:
                log.warning("verify could not read the tables' position", error=str(exc).splitlines()[0])
                continue
            if block is None or (self.last_block is not None and block < self.last_block + self.interval):
                continue
            self.verify_once()

    def verify_once(self) -> VerifyResult | None:
        """One verification at the block the tables reflect; failures are recorded and reported, not raised."""
        try:
            result = self.verifier.run(BlockChoice("at-indexed", None, wait_seconds=5.0))
        except BlockNotCanonical as exc:
            log.info("verify interrupted by a reorg, will retry", error=str(exc))
            self._failed(exc, RETRY_FIRST)
            return None
        except (IndexerError, RpcError, psycopg.Error) as exc:
            delay = min(RETRY_MAX, RETRY_FIRST * 2**self.failures)
            log.error(
                "verify failed",
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                retry_in_seconds=delay,
            )
            self._failed(exc, delay)
            return None
        self.last_block = result.block.number
        self.failures = 0
        if not result.equal:
            log.error(
                "verify found differences",
                block=result.block.number,
                differences=len(result.differences),
                by_column=result.by_column,
            )
        self._report(result, None)
        return result

    def _failed(self, error: BaseException, delay: float) -> None:
        self.failures += 1
        self.not_before = time.monotonic() + delay
        self._report(None, error)

    def _tables_block(self) -> int | None:
        with snapshot(
            self.config.database.url, self.config.database.schema_, self.config.chain.chain_id, self.projections
        ) as snap:
            return snap.consistency().block

    def _report(self, result: VerifyResult | None, error: BaseException | None) -> None:
        if self.on_verify is not None:
            self.on_verify(result, error)
