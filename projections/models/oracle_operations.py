"""`oracle_operations_log`: one row per oracle action visible on chain (MINT, BURN, EMERGENCY_BURN).

The Synced of an emergency-burn transaction is part of that one action, so it yields no row of its own.
Columns only the off-chain oracle knows (bitcoin address, node, consensus data) stay NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from projections.models.base import Log, Projection, chain_time, copy_rows, emergency_txs

COLUMNS = (
    "tx_hash",
    "log_index",
    "block_number",
    "block_timestamp",
    "operation_type",
    "user_address",
    "amount_sats",
    "fee_wei",
)


class OracleOperationsProjection(Projection):
    name = "oracle_operations_log"
    tables = ("oracle_operations_log",)
    handles = frozenset({("oracle_aggregator", "Synced"), ("oracle_aggregator", "EmergencyBurn")})

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        emergencies = emergency_txs(logs)
        rows = []
        for lg in logs:
            args = lg["args"]
            if lg["event"] == "EmergencyBurn":
                operation, amount, fee = "EMERGENCY_BURN", int(args["burnedAmount"]), 0
            elif lg["tx_hash"] in emergencies:
                continue
            else:
                delta = int(args["deltaSats"])
                operation, amount, fee = ("MINT" if delta > 0 else "BURN"), abs(delta), int(args["feeWei"])
            rows.append(
                (
                    lg["tx_hash"],
                    lg["log_index"],
                    lg["block_number"],
                    chain_time(lg["block_timestamp"]),
                    operation,
                    args["user"],
                    amount,
                    fee,
                )
            )
        if rows:
            copy_rows(conn, "oracle_operations_log", COLUMNS, rows)
