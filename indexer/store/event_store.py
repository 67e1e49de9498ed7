"""The append-only event store: eventsourcing's PostgreSQL application recorder, plus the follower's cursor
and unfinalized-block window, written in the same transaction as the events they describe."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError, Notification, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import InterfaceError, OperationalError
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import FeatureNotSupported

from indexer.errors import Retryable
from indexer.store import db, replay_queue, status
from indexer.store import events as ev

EVENTS_TABLE = "stored_events"

log = structlog.get_logger("store")


CURSOR_MOVED = "RBI01"  # SQLSTATE raised by rbtc_advance_cursor (sql/010_cursor_guard_sqlstate.sql)


class ConcurrentAppend(Retryable):
    """Another writer advanced the stream first; nothing was appended."""


@dataclass(frozen=True)
class Cursor:
    """Where the follower stands: the stream version and the last block whose logs are all stored."""

    chain_id: int
    stream_version: int
    indexed_block: int
    indexed_hash: str | None
    finalized_block: int


@dataclass
class CursorAdvance:
    """The cursor change that goes with one append, plus the block window rows to add or drop."""

    expected_version: int
    new_version: int
    indexed_block: int
    indexed_hash: str | None
    finalized_block: int
    add_blocks: list[tuple[int, str, str]] = field(default_factory=list)  # (number, hash, parent_hash)
    drop_blocks_from: int | None = None
    head: int | None = None
    logs: int = 0
    undecodable: int = 0
    indexed_timestamp: int | None = None  # chain time of the indexed block, for sync_status.lag_seconds
    replay_request: int | None = None  # a queued replay request this append performs: marked done with it


class ChainRecorder(PostgresApplicationRecorder):
    """Application recorder that also moves the follower's cursor inside the append transaction."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append in one plain transaction. The library's version uses libpq pipeline mode, which can wait
        forever for a result when the connection dies mid-batch (a database restart); here the error surfaces
        and the caller retries."""
        with self.datastore.transaction(commit=True) as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return []
            self._lock_table(curs)
            self._notify_channel(curs)
            # One row per statement with the state as a binary parameter: appends carry a few large events,
            # which the library's composite-array insert would escape as text.
            ids = []
            for event in stored_events:
                curs.execute(
                    self._insert_one,
                    (event.originator_id, event.originator_version, event.topic, event.state),
                    binary=True,
                )
                row = curs.fetchone()
                assert row is not None  # INSERT … RETURNING yields one row
                ids.append(row["notification_id"])
            return ids

    def create_table(self) -> None:
        """The library's tables, with the states compressed by lz4 rather than pglz: on these JSON states it
        compresses alike and several times faster, on every append and every read."""
        super().create_table()
        table = f'"{self.datastore.schema}"."{self.events_table_name}"'
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "SELECT attcompression FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'state'",
                (table,),
            )
            row = curs.fetchone()
        if row is None or row["attcompression"] == "l":  # ALTER TABLE locks the table: only when needed
            return
        try:
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(f"ALTER TABLE {table} ALTER COLUMN state SET COMPRESSION lz4")
        except FeatureNotSupported as exc:  # a server built without lz4
            log.warning("stored events stay compressed with pglz", reason=db.first_line(exc))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's selection, read in binary format: in text format each state (hundreds of KB of
        JSON) would travel hex-encoded, twice its size, and be decoded while holding the interpreter lock."""
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("notification_id >= %s" if inclusive_of_start else "notification_id > %s")
            params.append(start)
        if stop is not None:
            where.append("notification_id <= %s")
            params.append(stop)
        if topics:
            where.append("topic = ANY(%s)")
            params.append(list(topics))
        params.append(limit)
        statement = (
            "SELECT notification_id, originator_id, originator_version, topic, state "
            f'FROM "{self.datastore.schema}"."{self.events_table_name}"'
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY notification_id LIMIT %s"
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True, binary=True)
            return [
                Notification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    @property
    def _insert_one(self) -> str:
        return (
            f'INSERT INTO "{self.datastore.schema}"."{self.events_table_name}" '
            "(originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s) RETURNING notification_id"
        )

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        advance: CursorAdvance | None = kwargs.get("advance")
        schema = self.datastore.schema
        chain_id: int | None = kwargs.get("chain_id")
        if advance is None or chain_id is None:
            return
        if advance.drop_blocks_from is not None:
            curs.execute(
                f"DELETE FROM {schema}.follower_blocks WHERE chain_id = %s AND number >= %s",
                (chain_id, advance.drop_blocks_from),
            )
        if advance.add_blocks:
            curs.executemany(
                f"INSERT INTO {schema}.follower_blocks (chain_id, number, hash, parent_hash) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (chain_id, number) DO UPDATE SET hash = excluded.hash, parent_hash = excluded.parent_hash",
                [(chain_id, n, h, p) for n, h, p in advance.add_blocks],
            )
        curs.execute(
            f"DELETE FROM {schema}.follower_blocks WHERE chain_id = %s AND number < %s",
            (chain_id, advance.finalized_block - 1),
        )
        # The follower's status row moves with the data it describes, so its counters survive any crash.
        status.write_follower(
            curs,
            schema,
            {
                "chain": chain_id,
                "head": advance.head,
                "fin": advance.finalized_block,
                "block": advance.indexed_block,
                "hash": advance.indexed_hash,
                "logs": advance.logs,
                "bad": advance.undecodable,
                "lag_s": _lag_seconds(advance),
            },
        )
        if advance.replay_request is not None:
            curs.execute(replay_queue.DONE_SQL.format(schema=schema), (advance.replay_request,))
        # Fails the whole transaction unless the cursor is still where this writer last saw it.
        curs.execute(
            f"SELECT {schema}.rbtc_advance_cursor(%s, %s, %s, %s, %s, %s)",
            (
                chain_id,
                advance.expected_version,
                advance.new_version,
                advance.indexed_block,
                advance.indexed_hash,
                advance.finalized_block,
            ),
        )


def _lag_seconds(advance: CursorAdvance) -> float | None:
    """Seconds the indexed block's chain time is behind the wall clock while the head is further on (0 at
    the head); None when unknown (a revert names no timestamp)."""
    if advance.head is not None and advance.indexed_block >= advance.head:
        return 0.0
    if advance.indexed_timestamp is None:
        return None
    return max(0.0, time.time() - advance.indexed_timestamp)


def datastore_for(dsn: str, schema: str, pool_size: int = 4) -> PostgresDatastore:
    """An eventsourcing datastore on the indexer's schema (pool of at least 2, see design §6)."""
    parts = conninfo_to_dict(dsn)
    return PostgresDatastore(
        dbname=str(parts.get("dbname", "postgres")),
        host=str(parts.get("host", "127.0.0.1")),
        port=str(parts.get("port", 5432)),
        user=str(parts.get("user", "postgres")),
        password=str(parts.get("password", "")),
        schema=schema,
        pool_size=max(2, pool_size),
        max_overflow=4,
        pre_ping=True,
        connect_timeout=5,
    )


class EventStore:
    """Appends chain events with the follower's cursor, and reads them back in notification order."""

    def __init__(self, dsn: str, schema: str, pool_size: int = 4):
        self._dsn, self._pool_size = dsn, pool_size
        self.schema = schema
        self._lock = threading.Lock()
        self.datastore = datastore_for(dsn, schema, pool_size)
        self.recorder = ChainRecorder(self.datastore, events_table_name=EVENTS_TABLE)

    def try_recover(self) -> bool:
        """After a database outage: replace the connection pool (whose reconnect backoff can outlast the
        outage by minutes) with a fresh one. False, with the old pool kept, while the database is still away."""
        with self._lock:
            datastore = datastore_for(self._dsn, self.schema, self._pool_size)
            try:
                recorder = ChainRecorder(datastore, events_table_name=EVENTS_TABLE)
                recorder.datastore.register_type_adapters()
            except db.TRANSIENT_ERRORS:
                datastore.close()
                return False
            old, self.datastore, self.recorder = self.datastore, datastore, recorder
            old.close()
            return True

    def create_tables(self) -> None:
        """Create the stored-events table (idempotent)."""
        self.recorder.create_table()

    def cursor(self, chain_id: int, start_block: int) -> Cursor:
        """The follower's cursor, created just before the start block if the chain is new."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO {self.schema}.follower_cursor (chain_id, stream_version, indexed_block) "
                "VALUES (%s, 0, %s) ON CONFLICT (chain_id) DO NOTHING",
                (chain_id, start_block - 1),
            )
            curs.execute(f"SELECT * FROM {self.schema}.follower_cursor WHERE chain_id = %s", (chain_id,))
            row = curs.fetchone()
        assert row is not None
        return Cursor(
            chain_id, row["stream_version"], row["indexed_block"], row["indexed_hash"], row["finalized_block"]
        )

    def window(self, chain_id: int) -> dict[int, tuple[str, str]]:
        """The unfinalized blocks the store knows: number -> (hash, parent_hash)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                f"SELECT number, hash, parent_hash FROM {self.schema}.follower_blocks WHERE chain_id = %s", (chain_id,)
            )
            return {r["number"]: (r["hash"], r["parent_hash"]) for r in curs.fetchall()}

    def append(self, cursor: Cursor, events: Sequence[ev.ChainEvent], advance: CursorAdvance) -> Cursor:
        """Append events and move the cursor in one transaction; raise ConcurrentAppend if it moved meanwhile."""
        stored = [ev.encode(e, cursor.stream_version + i + 1) for i, e in enumerate(events)]
        advance.expected_version = cursor.stream_version
        advance.new_version = cursor.stream_version + len(stored)
        try:
            self.recorder.insert_events(stored, advance=advance, chain_id=cursor.chain_id)
        except IntegrityError as exc:
            raise ConcurrentAppend(db.first_line(exc)) from None
        except Exception as exc:
            if db.sqlstate(exc) == CURSOR_MOVED:
                raise ConcurrentAppend(db.first_line(exc)) from None
            raise
        return Cursor(
            cursor.chain_id, advance.new_version, advance.indexed_block, advance.indexed_hash, advance.finalized_block
        )

    def notifications(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        """Stored events with notification id greater than `after`, in order (ids may have gaps)."""
        notifications: Sequence[Notification] = self.recorder.select_notifications(
            after, limit, stop=stop, inclusive_of_start=False
        )
        return notifications

    def reverted_notifications_after(self, after: int, stop: int) -> list[Notification]:
        """Every BlocksReverted event with after < notification id <= stop."""
        found: list[Notification] = []
        while True:
            page = self.recorder.select_notifications(
                after, 1000, stop=stop, topics=[ev.BLOCKS_REVERTED], inclusive_of_start=False
            )
            found.extend(page)
            if len(page) < 1000:
                return found
            after = page[-1].id

    def max_notification_id(self) -> int:
        """The highest notification id stored, 0 if none."""
        return self.recorder.max_notification_id() or 0
