"""`transactions`: one row per Synced, Deposited, Withdrawn, Wrapped and Redeemed log."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import psycopg

from projections.models.base import Log, Projection, chain_time, copy_rows, emergency_txs

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
)
_VAULT_TYPES = {
    ("fee_vault", "Deposited"): ("DEPOSIT", 1),
    ("fee_vault", "Withdrawn"): ("WITHDRAW", -1),
    ("vault_wrbtc", "Wrapped"): ("WRAP", 1),
    ("vault_wrbtc", "Redeemed"): ("UNWRAP", -1),
}


class TransactionsProjection(Projection):
    name = "transactions"
    tables = ("transactions",)
    handles = frozenset({("oracle_aggregator", "Synced"), ("oracle_aggregator", "EmergencyBurn"), *_VAULT_TYPES})

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        emergencies = emergency_txs(logs)
        rows = []
        for lg in logs:
            kind, args = (lg["role"], lg["event"]), lg["args"]
            metadata = {"event": lg["event"], "emitter": lg["address"], "tx_index": lg["tx_index"]}
            if kind == ("oracle_aggregator", "Synced"):
                delta = int(args["deltaSats"])
                tx_type, amount, fee = ("MINT" if delta > 0 else "BURN"), abs(delta), int(args["feeWei"])
                emergency = lg["tx_hash"] in emergencies
                metadata["new_balance_sats"] = args["newBalanceSats"]
            elif kind in _VAULT_TYPES:
                tx_type, sign = _VAULT_TYPES[kind]
                amount, fee, emergency = int(args["amount"]), 0, False
                delta = sign * amount
            else:
                continue
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
                    orjson.dumps(metadata).decode(),
                )
            )
        if rows:
            copy_rows(conn, "transactions", COLUMNS, rows)
