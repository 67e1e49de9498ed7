"""The event store's single-writer guarantee (an append from a stale cursor stores nothing and says so), and its
reads."""

from __future__ import annotations

import pytest
from eventsourcing.postgres import PostgresApplicationRecorder

from indexer.records import DecodedLog
from indexer.store import db
from indexer.store.event_store import EVENTS_TABLE, ConcurrentAppend, CursorAdvance, EventStore
from indexer.store.events import BLOCKS_REVERTED, BlocksReverted, ChainEvent, LogsIngested


def test_an_append_from_a_stale_cursor_is_refused_and_stores_nothing(database_url: str, schema: str) -> None:
    db.migrate(database_url, schema)
    store = EventStore(database_url, schema, 3)
    try:
        store.create_tables()
        cursor = store.cursor(1, 10)
        event = BlocksReverted(chain_id=1, from_block=10, to_block=10, reason="test")
        moved = store.append(cursor, [event], CursorAdvance(0, 0, 9, None, 0))
        assert moved.stream_version == cursor.stream_version + 1
        # The same append again, from the cursor it started from: a second writer, or a retry after a lost reply.
        with pytest.raises(ConcurrentAppend):
            store.append(cursor, [event], CursorAdvance(0, 0, 9, None, 0))
        # A stale cursor whose version the store has not reached yet: the guard's SQLSTATE, not a duplicate key.
        ahead = type(cursor)(cursor.chain_id, cursor.stream_version + 5, 9, None, 0)
        with pytest.raises(ConcurrentAppend, match="cursor moved"):
            store.append(ahead, [event], CursorAdvance(0, 0, 9, None, 0))
        assert len(store.notifications(0, 100)) == 1
    finally:
        store.datastore.close()


def test_notifications_read_back_exactly_what_the_librarys_reader_returns(database_url: str, schema: str) -> None:
    """The store reads notifications with its own binary-format query: every selection (start inclusive or
    not, stop, topics, limit) equals the library's text-format reader's, state bytes included."""
    db.migrate(database_url, schema)
    store = EventStore(database_url, schema, 3)
    try:
        store.create_tables()
        cursor = store.cursor(1, 10)
        for i in range(6):
            event: ChainEvent
            if i % 3 == 2:
                event = BlocksReverted(chain_id=1, from_block=10 + i, to_block=10 + i, reason="test")
            else:
                event = LogsIngested(
                    chain_id=1,
                    from_block=10 + i,
                    to_block=10 + i,
                    to_hash="0x" + f"{i:02x}" * 32,
                    finalized=0,
                    head=20,
                    logs=[_log(10 + i, 0, "0x" + "00ff" * 40 * (i + 1))],
                )
            cursor = store.append(cursor, [event], CursorAdvance(0, 0, 10 + i, None, 0))
        library = PostgresApplicationRecorder(store.datastore, events_table_name=EVENTS_TABLE)
        ids = [n.id for n in library.select_notifications(None, 100)]
        assert len(ids) == 6
        cases = [
            dict(start=None, limit=100),
            dict(start=ids[1], limit=100),
            dict(start=ids[1], limit=100, inclusive_of_start=False),
            dict(start=ids[0], limit=2, inclusive_of_start=False),
            dict(start=ids[0], limit=100, stop=ids[3], inclusive_of_start=False),
            dict(start=0, limit=100, topics=[BLOCKS_REVERTED], inclusive_of_start=False),
            dict(start=ids[-1], limit=100, inclusive_of_start=False),
        ]
        for case in cases:
            ours, theirs = store.recorder.select_notifications(**case), library.select_notifications(**case)
            assert ours == theirs, case
            assert all(type(n.state) is bytes for n in ours)
        assert [n.id for n in store.notifications(ids[2], 2)] == ids[3:5]
        assert [n.id for n in store.reverted_notifications_after(0, ids[-1])] == [ids[2], ids[5]]
    finally:
        store.datastore.close()


def test_stored_states_are_compressed_with_lz4(database_url: str, schema: str) -> None:
    """The stored events' states are compressed with lz4, several times cheaper to write and read than
    PostgreSQL's default pglz for the same size here; creating the tables again keeps it so."""
    db.migrate(database_url, schema)
    store = EventStore(database_url, schema, 3)
    try:
        store.create_tables()
        store.create_tables()
        cursor = store.cursor(1, 10)
        logs = [_log(10, i, "0x" + "00ff" * 200) for i in range(200)]
        event = LogsIngested(chain_id=1, from_block=10, to_block=10, to_hash=None, finalized=0, head=10, logs=logs)
        store.append(cursor, [event], CursorAdvance(0, 0, 10, None, 0))
        with store.datastore.transaction(commit=False) as curs:
            curs.execute(f'SELECT pg_column_compression(state) AS method FROM "{schema}".{EVENTS_TABLE}')
            assert [r["method"] for r in curs.fetchall()] == ["lz4"]
    finally:
        store.datastore.close()


def _log(block: int, index: int, data: str) -> DecodedLog:
    """A log that did not decode (no ABI is needed to store it)."""
    return {
        "block_number": block,
        "block_hash": "0x" + "ab" * 32,
        "block_timestamp": 1_700_000_000 + block,
        "tx_hash": "0x" + f"{index:064x}",
        "tx_index": index,
        "log_index": index,
        "address": "0x" + "11" * 20,
        "topics": ["0x" + "22" * 32],
        "data": data,
        "role": None,
        "event": None,
        "args": None,
        "error": "unknown event",
    }
