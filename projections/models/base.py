"""What a projection is: one read model, its tables, the events it handles, and how it applies them.

A projection only writes its own tables for a list of logs (whole blocks, in chain order). Exactly-once
delivery, batching, tracking and reorg undo are the runner's job, not the projection's: any table with a
primary key gets undo for free through the journal trigger attached in sql/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

import orjson
import psycopg
from psycopg.types.json import Jsonb

from indexer.records import HandledLog

Log = HandledLog
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class Projection(ABC):
    """One read model."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    handles: ClassVar[frozenset[tuple[str, str]]]  # (contract role, event name)

    @abstractmethod
    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        """Write the effects of these logs, in order, to this projection's tables (unqualified names)."""


@lru_cache(maxsize=4096)  # the logs of a block share its timestamp; datetimes are immutable
def chain_time(seconds: int) -> datetime:
    """A block timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def copy_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Bulk-insert rows with binary COPY (row triggers, such as the undo journal, still fire). Each value is
    dumped as its column's type, which the catalog names: a jsonb column takes a `json_value`."""
    column_list = ", ".join(f'"{c}"' for c in columns)
    types = _column_types(conn, table, tuple(columns))
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({column_list}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


# Type oids of (table, columns) per connection; a table's column types do not change while a process runs.
_types_seen: WeakKeyDictionary[psycopg.Connection, dict[tuple[str, tuple[str, ...]], list[int]]] = WeakKeyDictionary()


def _column_types(conn: psycopg.Connection, table: str, columns: tuple[str, ...]) -> list[int]:
    known = _types_seen.setdefault(conn, {})
    if (table, columns) not in known:
        found: dict[str, int] = dict(
            conn.execute(
                "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
                (table,),
            ).fetchall()
        )
        known[(table, columns)] = [found[c] for c in columns]
    return known[(table, columns)]


def json_value(value: Any) -> Jsonb:
    """A value for a jsonb column (serialised with orjson)."""
    return Jsonb(value, dumps=_json_text)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def emergency_synced(logs: Sequence[Log]) -> set[tuple[str, int]]:
    """(tx_hash, log_index) of every emergency Synced: the next Synced of the same user after that user's
    OracleAggregator EmergencyBurn in the same transaction (reference §4.5). Other users' Synced logs in the
    same transaction are ordinary syncs. `logs` must hold whole transactions in log order."""
    flagged: set[tuple[str, int]] = set()
    pending: set[tuple[str, str]] = set()  # (tx_hash, user) with an EmergencyBurn not yet matched
    for lg in logs:
        if lg["role"] != "oracle_aggregator" or lg.get("source"):
            continue
        key = (lg["tx_hash"], lg["args"]["user"])
        if lg["event"] == "EmergencyBurn":
            pending.add(key)
        elif lg["event"] == "Synced" and key in pending:
            pending.discard(key)
            flagged.add((lg["tx_hash"], lg["log_index"]))
    return flagged


def tx_facts(lg: Log) -> dict[str, Any]:
    """The receipt facts stored with a log (from, to, to_role, gas_used, gas_price), empty without receipts."""
    return dict(lg.get("tx") or {})


def as_int(value: Any) -> int | None:
    """A decimal string (or None) as an int (or None)."""
    return None if value is None else int(value)
