"""Session-level advisory locks: one writer per store, one worker per projection, held for a process' life."""

from __future__ import annotations

import psycopg

from indexer.errors import AlreadyRunning
from indexer.store import db


class AdvisoryLock:
    """A Postgres advisory lock held on its own connection until released (or the process dies)."""

    def __init__(self, dsn: str, schema: str, key: str):
        self.dsn, self.schema, self.key = dsn, schema, key
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; False if another session holds it."""
        conn = db.connect(self.dsn, self.schema, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,)).fetchone()
        if row and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def acquire_or_fail(self, what: str) -> None:
        """Take the lock or raise AlreadyRunning naming what holds it."""
        if not self.try_acquire():
            raise AlreadyRunning(f"another rbtc-indexer process already runs the {what} on schema {self.schema}")

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
