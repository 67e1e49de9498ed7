"""`oracle_operations_log`: one row per oracle action visible on chain.

- MINT / BURN: an ordinary Synced (one row per Synced log, whatever else its transaction holds).
- EMERGENCY_BURN: an OracleAggregator EmergencyBurn; the Synced of the same user that follows it in the same
  transaction is part of that one action and yields no row of its own.
- DEPOSIT: a FeeVault Deposited in a transaction sent to the OracleAggregator (`registerAndPrepay`); `fee_wei`
  holds the wei prepaid and `amount_sats` is NULL. Needs receipts (the transaction's `to`).

The frontend's column names are columns too: `id` (`tx_hash:log_index`, the same across replays and
rebuilds), `timestamp` and `created_at` (chain time of the block), `action` (= operation_type). Columns only
the off-chain oracle knows (`consensus_reached`, `sources_used`, bitcoin address, node, consensus data) stay NULL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from projections.models.base import Log, Projection, chain_time, copy_rows, emergency_synced, tx_facts

COLUMNS = (
    "tx_hash",
    "log_index",
    "block_number",
    "block_timestamp",
    "operation_type",
    "user_address",
    "amount_sats",
    "fee_wei",
    "id",
    "timestamp",
    "action",
    "created_at",
)


def operation_rows(logs: Sequence[Log]) -> list[tuple[Any, ...]]:
    """The rows these logs add, in COLUMNS order."""
    emergencies = emergency_synced(logs)
    rows = []
    for lg in logs:
        args = lg["args"]
        amount: int | None
        if lg["event"] == "EmergencyBurn":
            operation, amount, fee = "EMERGENCY_BURN", int(args["burnedAmount"]), 0
        elif lg["event"] == "Synced":
            if (lg["tx_hash"], lg["log_index"]) in emergencies:
                continue
            delta = int(args["deltaSats"])
            operation, amount, fee = ("MINT" if delta > 0 else "BURN"), abs(delta), int(args["feeWei"])
        elif lg["event"] == "Deposited" and tx_facts(lg).get("to_role") == "oracle_aggregator":
            operation, amount, fee = "DEPOSIT", None, int(args["amount"])
        else:
            continue
        time = chain_time(lg["block_timestamp"])
        rows.append(
            (
                lg["tx_hash"],
                lg["log_index"],
                lg["block_number"],
                time,
                operation,
                args["user"],
                amount,
                fee,
                f"{lg['tx_hash']}:{lg['log_index']}",
                time,
                operation,
                time,
            )
        )
    return rows


class OracleOperationsProjection(Projection):
    name = "oracle_operations_log"
    tables = ("oracle_operations_log",)
    handles = frozenset(
        {("oracle_aggregator", "Synced"), ("oracle_aggregator", "EmergencyBurn"), ("fee_vault", "Deposited")}
    )

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        rows = operation_rows(logs)
        if rows:
            copy_rows(conn, "oracle_operations_log", COLUMNS, rows)
