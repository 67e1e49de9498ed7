"""The event store's single-writer guarantee: an append from a stale cursor stores nothing and says so."""

from __future__ import annotations

import pytest

from indexer.store import db
from indexer.store.event_store import ConcurrentAppend, CursorAdvance, EventStore
from indexer.store.events import BlocksReverted


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
