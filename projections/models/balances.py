"""`balances`: one row per user address seen, with mirrored BTC, rBTC, wrBTC and prepaid fee balances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from projections.models.base import ZERO_ADDRESS, Log, Projection

# The batch travels as one comma-separated text per column, split and cast server-side: psycopg would dump
# Python lists element by element. An empty element is NULL; the sync time is epoch seconds.
_UPSERT = """
INSERT INTO balances AS b (user_address, last_sats, rbtc_balance, wrbtc_balance, fee_vault_wei,
                           last_sync_block, last_sync_time, last_sync_delta, last_sync_fee_wei, updated_block)
SELECT u, ls, r, w, f, sb, to_timestamp(st), sd, sf, ub
FROM unnest(string_to_array(%s, ','), string_to_array(%s, ',', '')::numeric[],
            string_to_array(%s, ',', '')::numeric[], string_to_array(%s, ',', '')::numeric[],
            string_to_array(%s, ',', '')::numeric[], string_to_array(%s, ',', '')::bigint[],
            string_to_array(%s, ',', '')::bigint[], string_to_array(%s, ',', '')::numeric[],
            string_to_array(%s, ',', '')::numeric[], string_to_array(%s, ',', '')::bigint[])
     AS x(u, ls, r, w, f, sb, st, sd, sf, ub)
ON CONFLICT (user_address) DO UPDATE SET
    rbtc_balance      = b.rbtc_balance + excluded.rbtc_balance,
    wrbtc_balance     = b.wrbtc_balance + excluded.wrbtc_balance,
    fee_vault_wei     = b.fee_vault_wei + excluded.fee_vault_wei,
    last_sats         = CASE WHEN excluded.last_sync_block IS NULL THEN b.last_sats ELSE excluded.last_sats END,
    last_sync_block   = coalesce(excluded.last_sync_block, b.last_sync_block),
    last_sync_time    = coalesce(excluded.last_sync_time, b.last_sync_time),
    last_sync_delta   = CASE WHEN excluded.last_sync_block IS NULL THEN b.last_sync_delta
                             ELSE excluded.last_sync_delta END,
    last_sync_fee_wei = CASE WHEN excluded.last_sync_block IS NULL THEN b.last_sync_fee_wei
                             ELSE excluded.last_sync_fee_wei END,
    updated_block     = greatest(b.updated_block, excluded.updated_block)
"""


@dataclass
class _Change:
    rbtc: int = 0
    wrbtc: int = 0
    fee_wei: int = 0
    last_sats: int = 0
    sync_block: int | None = None
    sync_time: int | None = None
    sync_delta: int | None = None
    sync_fee: int | None = None
    updated_block: int = 0


class BalancesProjection(Projection):
    name = "balances"
    tables = ("balances",)
    handles = frozenset(
        {
            ("oracle_aggregator", "Synced"),
            ("rbtc_synth", "Transfer"),
            ("vault_wrbtc", "Transfer"),
            ("fee_vault", "Deposited"),
            ("fee_vault", "Spent"),
            ("fee_vault", "Withdrawn"),
        }
    )

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        changes: dict[str, _Change] = {}

        def change(user: str, block: int) -> _Change:
            entry = changes.setdefault(user, _Change())
            entry.updated_block = max(entry.updated_block, block)
            return entry

        for lg in logs:
            args, block, kind = lg["args"], lg["block_number"], (lg["role"], lg["event"])
            if kind == ("oracle_aggregator", "Synced"):
                entry = change(args["user"], block)
                entry.last_sats = int(args["newBalanceSats"])
                entry.sync_block, entry.sync_time = block, lg["block_timestamp"]
                entry.sync_delta, entry.sync_fee = int(args["deltaSats"]), int(args["feeWei"])
            elif lg["event"] == "Transfer":
                amount = int(args["amount"])
                field = "rbtc" if lg["role"] == "rbtc_synth" else "wrbtc"
                if args["from"] != ZERO_ADDRESS:
                    entry = change(args["from"], block)
                    setattr(entry, field, getattr(entry, field) - amount)
                if args["to"] != ZERO_ADDRESS:
                    entry = change(args["to"], block)
                    setattr(entry, field, getattr(entry, field) + amount)
            else:
                sign = 1 if lg["event"] == "Deposited" else -1
                change(args["user"], block).fee_wei += sign * int(args["amount"])

        rows = [
            (
                user,
                c.last_sats,
                c.rbtc,
                c.wrbtc,
                c.fee_wei,
                c.sync_block,
                c.sync_time,
                c.sync_delta,
                c.sync_fee,
                c.updated_block,
            )
            for user, c in changes.items()
        ]
        if rows:
            # One statement for the whole batch: columns as arrays, unnested server-side.
            conn.execute(_UPSERT, [_joined(column) for column in zip(*rows, strict=True)])


def _joined(values: Sequence[object]) -> str:
    """Values as one comma-separated text (None as an empty element)."""
    return ",".join("" if v is None else str(v) for v in values)
