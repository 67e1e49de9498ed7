"""Session-level advisory locks: one writer per store, one worker per projection, held for a process' life."""

from __future__ import annotations

import threading
import time

import psycopg
import structlog

from indexer.errors import AlreadyRunning
from indexer.store import db

log = structlog.get_logger("locks")


class AdvisoryLock:
    """A Postgres advisory lock held on its own connection until released (or the process dies)."""

    def __init__(self, dsn: str, schema: str, key: str):
        self.dsn, self.schema, self.key = dsn, schema, key
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; False if another session holds it."""
        conn = db.connect(self.dsn, self.schema, autocommit=True)
        # Operators (and tests) find the lock holder in pg_stat_activity by this name.
        conn.execute("SELECT set_config('application_name', %s, false)", (f"rbtc-indexer lock {self.key}"[:63],))
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,)).fetchone()
        if row and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def acquire_or_fail(self, what: str, wait: float = 0.0, stop: threading.Event | None = None) -> bool:
        """Take the lock, trying again for up to `wait` seconds, or raise AlreadyRunning naming what holds it.
        False (lock not taken) when `stop` is set while waiting: a stopped process never takes the lock."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + wait
        waiting = False
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise AlreadyRunning(f"another rbtc-indexer process already runs the {what} on schema {self.schema}")
            if not waiting:
                log.info("waiting for a lock another process holds", lock=self.key, up_to_s=wait)
                waiting = True
            if stop.wait(0.2):
                return False
        return True

    def ensure(self) -> bool:
        """Check the lock is still held; re-take it when its connection was lost (a database outage ends the
        session and its locks). True when it was re-taken now. Raises AlreadyRunning when another process took
        it meanwhile, DatabaseUnavailable while the database is away."""
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return False
            except psycopg.Error:
                self._conn.close()
                self._conn = None
        if not self.try_acquire():
            raise AlreadyRunning(
                f"lost the lock {self.key!r} with its database connection, and another process took it meanwhile"
            )
        return True

    @property
    def held(self) -> bool:
        """Held as far as this process knows (its connection has not been found broken)."""
        return self._conn is not None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.key,))
            except psycopg.Error:
                pass  # the session is gone (e.g. after a database restart), and its locks with it
            finally:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> AdvisoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def follower_lock(dsn: str, schema: str, chain_id: int) -> AdvisoryLock:
    return AdvisoryLock(dsn, schema, f"rbtc-follower:{schema}:{chain_id}")


def projection_lock(dsn: str, schema: str, name: str) -> AdvisoryLock:
    return AdvisoryLock(dsn, schema, f"rbtc-projection:{schema}:{name}")


def rebuild_lock(dsn: str, schema: str, name: str) -> AdvisoryLock:
    return AdvisoryLock(dsn, schema, f"rbtc-rebuild:{schema}:{name}")
