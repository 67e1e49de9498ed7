"""`transactions`: one row per Synced, Deposited, Withdrawn, Wrapped and Redeemed log.

`is_emergency_burn` marks only the Synced that follows the same user's EmergencyBurn in its transaction.
Gas used, effective gas price, sender and `to` come from the transaction's receipt (NULL without receipts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from projections.models.base import (
    Log,
    Projection,
    as_int,
    chain_time,
    copy_rows,
    emergency_synced,
    json_value,
    tx_facts,
)

COLUMNS = (
    "tx_hash",
    "log_index",
    "block_number",
    "block_timestamp",
    "user_address",
    "tx_type",
    "amount",
    "delta",
    "fee_wei",
    "is_emergency_burn",
    "status",
    "metadata",
    "gas_used",
    "gas_price",
    "tx_from",
    "tx_to",
)
_VAULT_TYPES = {
    ("fee_vault", "Deposited"): ("DEPOSIT", 1),
    ("fee_vault", "Withdrawn"): ("WITHDRAW", -1),
    ("vault_wrbtc", "Wrapped"): ("WRAP", 1),
    ("vault_wrbtc", "Redeemed"): ("UNWRAP", -1),
}


def transaction_rows(logs: Sequence[Log]) -> list[tuple[Any, ...]]:
    """The rows these logs add, in COLUMNS order."""
    emergencies = emergency_synced(logs)
    rows = []
    for lg in logs:
        kind, args = (lg["role"], lg["event"]), lg["args"]
        metadata = {"event": lg["event"], "emitter": lg["address"], "tx_index": lg["tx_index"]}
        if kind == ("oracle_aggregator", "Synced"):
            delta = int(args["deltaSats"])
            tx_type, amount, fee = ("MINT" if delta > 0 else "BURN"), abs(delta), int(args["feeWei"])
            emergency = (lg["tx_hash"], lg["log_index"]) in emergencies
            metadata["new_balance_sats"] = args["newBalanceSats"]
        elif kind in _VAULT_TYPES:
            tx_type, sign = _VAULT_TYPES[kind]
            amount, fee, emergency = int(args["amount"]), 0, False
            delta = sign * amount
        else:
            continue
        tx = tx_facts(lg)
        rows.append(
            (
                lg["tx_hash"],
                lg["log_index"],
                lg["block_number"],
                chain_time(lg["block_timestamp"]),
                args["user"],
                tx_type,
                amount,
                delta,
                fee,
                emergency,
                "confirmed",
                json_value(metadata),
                as_int(tx.get("gas_used")),
                as_int(tx.get("gas_price")),
                tx.get("from"),
                tx.get("to"),
            )
        )
    return rows


class TransactionsProjection(Projection):
    name = "transactions"
    tables = ("transactions",)
    handles = frozenset({("oracle_aggregator", "Synced"), ("oracle_aggregator", "EmergencyBurn"), *_VAULT_TYPES})

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        rows = transaction_rows(logs)
        if rows:
            copy_rows(conn, "transactions", COLUMNS, rows)
