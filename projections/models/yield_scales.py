"""`yield_scales_participants`: one row per user who joined the YieldScalesPool (reference §4.7).

The same ParticipantJoined marks a first join and a trader top-up, so each batch loads the rows it touches,
folds the events over them in order, and writes them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from projections.models.base import Log, Projection, chain_time

COLUMNS = (
    "user_address",
    "participant_type",
    "loyalty_tier",
    "is_active",
    "virtual_usdt",
    "rbtc_contributed",
    "yield_claimed",
    "yield_earned",
    "joined_at",
    "last_activity_at",
    "is_disputed",
    "updated_block",
)
_UPSERT = (
    f"INSERT INTO yield_scales_participants ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT (user_address) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
)
GOLD_AFTER_S = 31_536_000
SILVER_AFTER_S = 15_552_000
HOLDER, TRADER = 0, 1


def loyalty_tier(joined_at: int, now: int) -> int:
    """The pool's tier rule: Gold after 365 days, Silver after 180, else Bronze."""
    elapsed = now - joined_at
    return 2 if elapsed >= GOLD_AFTER_S else 1 if elapsed >= SILVER_AFTER_S else 0


class YieldScalesProjection(Projection):
    name = "yield_scales_participants"
    tables = ("yield_scales_participants",)
    handles = frozenset(
        {
            ("yield_scales_pool", event)
            for event in (
                "ParticipantJoined",
                "ParticipantLeft",
                "YieldClaimed",
                "BalanceDisputed",
                "EmergencyBurnTriggered",
            )
        }
    )

    def apply(self, conn: psycopg.Connection, logs: Sequence[Log]) -> None:
        users = sorted({lg["args"]["user"] for lg in logs})
        if not users:
            return
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT *, extract(epoch FROM joined_at)::bigint AS joined_s, "
                "extract(epoch FROM last_activity_at)::bigint AS active_s "
                "FROM yield_scales_participants WHERE user_address = ANY(%s)",
                (users,),
            )
            rows: dict[str, dict[str, Any]] = {r["user_address"]: r for r in cur.fetchall()}
        touched: set[str] = set()
        for lg in logs:
            if self._fold(rows, lg):
                touched.add(lg["args"]["user"])
        if touched:
            with conn.cursor() as cur:
                cur.executemany(_UPSERT, [self._row(rows[u]) for u in sorted(touched)])

    @staticmethod
    def _fold(rows: dict[str, dict[str, Any]], lg: Log) -> bool:
        args, now, event = lg["args"], lg["block_timestamp"], lg["event"]
        row = rows.get(args["user"])
        if event == "ParticipantJoined":
            kind, amount = int(args["participantType"]), int(args["amount"])
            if row is None:
                rows[args["user"]] = {
                    "user_address": args["user"],
                    "participant_type": kind,
                    "loyalty_tier": 0,
                    "is_active": True,
                    "virtual_usdt": amount if kind == TRADER else 0,
                    "rbtc_contributed": amount if kind == HOLDER else 0,
                    "yield_claimed": 0,
                    "yield_earned": 0,
                    "joined_s": now,
                    "active_s": now,
                    "is_disputed": False,
                    "updated_block": lg["block_number"],
                }
                return True
            if kind == TRADER:
                row["virtual_usdt"] = int(row["virtual_usdt"]) + amount
        elif row is None:
            return False  # events about users who never joined change nothing
        elif event == "YieldClaimed":
            row["yield_claimed"] = int(row["yield_claimed"]) + int(args["amount"])
        elif event == "BalanceDisputed":
            row["is_disputed"] = True
        elif event == "ParticipantLeft":
            row["is_active"] = False
        elif event == "EmergencyBurnTriggered" and row["participant_type"] == HOLDER:
            row["rbtc_contributed"] = 0
            row["loyalty_tier"] = loyalty_tier(row["joined_s"], now)
        if event in ("ParticipantJoined", "YieldClaimed", "EmergencyBurnTriggered"):
            row["active_s"] = now
        row["updated_block"] = max(row["updated_block"], lg["block_number"])
        return True

    @staticmethod
    def _row(row: dict[str, Any]) -> tuple[Any, ...]:
        values = dict(row, joined_at=chain_time(row["joined_s"]), last_activity_at=chain_time(row["active_s"]))
        return tuple(values[c] for c in COLUMNS)
