"""`emergency_burns`: one row per OracleAggregator EmergencyBurn log."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from projections.models.base import Log, Projection, chain_time, copy_rows

COLUMNS = ("tx_hash", "log_index", "block_number", "timestamp", "user_address", "burned_amount", "reason")


class EmergencyBurnsProjection(Projection):
    name = "emergency_burns"
    tables = ("emergency_burns",)
    handles = frozenset({("oracle_aggregator", "EmergencyBurn")})

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        rows = [
            (
                lg["tx_hash"],
                lg["log_index"],
                lg["block_number"],
                chain_time(lg["block_timestamp"]),
                lg["args"]["user"],
                int(lg["args"]["burnedAmount"]),
                lg["args"]["reason"],
            )
            for lg in logs
        ]
        if rows:
            copy_rows(conn, "emergency_burns", COLUMNS, rows)
