"""`replay_requests`: deliberate replays asked for by `rbtc-indexer replay` while a daemon holds the writer lock.

This module owns every statement on the table. The CLI enqueues a request and waits for its outcome; the
running follower takes the oldest pending one, and the append that stores its revert marks it done in the same
transaction (`DONE_SQL`), so a request is never reported done before its revert is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import structlog

from indexer.store import db

log = structlog.get_logger("replay")

# Run inside the append transaction that stores the request's revert.
DONE_SQL = "UPDATE {schema}.replay_requests SET done_at = now(), failed_at = NULL, error = NULL WHERE id = %s"


@dataclass(frozen=True)
class ReplayRequest:
    """A queued `replay --from-block` for the running follower."""

    id: int
    from_block: int


@dataclass(frozen=True)
class ReplayOutcome:
    """What became of a request: done, failed for good, or still pending (with its last attempt's error)."""

    done: bool
    failed: bool
    error: str | None


def enqueue(conn: psycopg.Connection, chain_id: int, from_block: int) -> int:
    """Queue a replay of blocks >= from_block for the running daemon; return the request's id."""
    row = conn.execute(
        "INSERT INTO replay_requests (chain_id, from_block) VALUES (%s, %s) RETURNING id", (chain_id, from_block)
    ).fetchone()
    assert row is not None  # INSERT … RETURNING yields one row
    return int(row[0])


def outcome(conn: psycopg.Connection, request_id: int) -> ReplayOutcome:
    """The request's state now."""
    row = conn.execute("SELECT done_at, failed_at, error FROM replay_requests WHERE id = %s", (request_id,)).fetchone()
    if row is None:
        return ReplayOutcome(False, True, f"replay request {request_id} is gone")
    return ReplayOutcome(row[0] is not None, row[1] is not None, row[2])


class ReplayRequestQueue:
    """The queue as the follower's source of replays (it satisfies `indexer.follow.follower.ReplayRequests`).

    The follower asks before every step, so `next` keeps one connection between calls; a connection that
    fails is dropped (the error goes to the caller) and the next call connects again."""

    def __init__(self, dsn: str, schema: str, chain_id: int):
        self.dsn, self.schema, self.chain_id = dsn, schema, chain_id
        self._conn: psycopg.Connection | None = None

    def next(self) -> ReplayRequest | None:
        if self._conn is None:
            self._conn = db.connect(self.dsn, self.schema, autocommit=True)
        try:
            row = self._conn.execute(
                "UPDATE replay_requests SET taken_at = coalesce(taken_at, now()) WHERE id = (SELECT id FROM "
                "replay_requests WHERE done_at IS NULL AND failed_at IS NULL AND chain_id = %s ORDER BY id LIMIT 1) "
                "RETURNING id, from_block",
                (self.chain_id,),
            ).fetchone()
        except psycopg.Error:
            self.close()
            raise
        return ReplayRequest(int(row[0]), int(row[1])) if row else None

    def close(self) -> None:
        """Close the kept connection (the next `next` opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def done(self, request: ReplayRequest) -> None:
        self._set(request, "done_at = now(), error = NULL", None)

    def attempt_failed(self, request: ReplayRequest, error: str) -> None:
        self._set(request, "error = %s", error)

    def failed(self, request: ReplayRequest, error: str) -> None:
        self._set(request, "failed_at = now(), error = %s", error)

    def _set(self, request: ReplayRequest, assignments: str, error: str | None) -> None:
        params = (error, request.id) if error is not None else (request.id,)
        try:
            with db.connection(self.dsn, self.schema, autocommit=True) as conn:
                conn.execute(f"UPDATE replay_requests SET {assignments} WHERE id = %s", params)
        except db.TRANSIENT_ERRORS as exc:  # the request stays pending and is tried again
            log.warning("could not record a replay request's outcome", request=request.id, error=db.first_line(exc))
