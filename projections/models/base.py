"""What a projection is: one read model, its tables, the events it handles, and how it applies them.

A projection only writes its own tables for a list of logs (whole blocks, in chain order). Exactly-once
delivery, batching, tracking and reorg undo are the runner's job, not the projection's: any table with a
primary key gets undo for free through the journal trigger attached in sql/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg

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


def chain_time(seconds: int) -> datetime:
    """A block timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def copy_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Bulk-insert rows with COPY (row triggers, such as the undo journal, still fire)."""
    column_list = ", ".join(f'"{c}"' for c in columns)
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def emergency_txs(logs: Sequence[Log]) -> set[str]:
    """Transactions that carry an OracleAggregator EmergencyBurn (their Synced is the emergency one)."""
    return {lg["tx_hash"] for lg in logs if lg["event"] == "EmergencyBurn" and lg["role"] == "oracle_aggregator"}
