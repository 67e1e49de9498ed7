"""`yield_scales_participants`: one row per user who joined the YieldScalesPool (reference §4.7).

Rules, one per event, folded in chain order over the rows a batch touches:
- ParticipantJoined on no row or an inactive row starts a membership: type, active, contribution (holder) or
  virtual USDT (trader) = the amount, joined_at = last_activity_at = block time, tier 0; the lifetime
  `yield_claimed` and the dispute flag are kept.
- ParticipantJoined of a trader on an active trader row is a top-up: virtual USDT += amount.
- Any other join on an active row (a holder join, or a change of type; the pool reverts both) is taken as the
  chain's word: the row takes the event's type and amount, keeps joined_at, and a warning is logged.
- ParticipantLeft ends the membership: inactive, contribution and virtual USDT 0, tier 0.
- ContributionUpdated (observed from `updateRBTCContribution` calldata) on an active holder: contribution = the
  new value, tier recomputed from joined_at, activity now.
- EmergencyBurnTriggered on an active row: a holder's contribution 0 and tier recomputed; activity now.
- YieldClaimed: yield_claimed += amount, activity now. BalanceDisputed: disputed. DisputeStateObserved (an
  eth_call read of `isDisputed`, made when the follower could, not at the resolving transaction): the observed
  flag only; `updated_block` stays the block of the last event about the participant.
Events about users with no row change nothing; on an inactive row only joins and dispute facts do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from projections.models.base import Log, Projection, chain_time

log = structlog.get_logger("projections.yield_scales")

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


def _new_membership(row: dict[str, Any] | None, lg: Log, kind: int, amount: int) -> dict[str, Any]:
    now = lg["block_timestamp"]
    return {
        "user_address": lg["args"]["user"],
        "participant_type": kind,
        "loyalty_tier": 0,
        "is_active": True,
        "virtual_usdt": amount if kind == TRADER else 0,
        "rbtc_contributed": amount if kind == HOLDER else 0,
        "yield_claimed": int(row["yield_claimed"]) if row else 0,
        "yield_earned": 0,
        "joined_s": now,
        "active_s": now,
        "is_disputed": bool(row["is_disputed"]) if row else False,
        "updated_block": lg["block_number"],
    }


def fold_participant(rows: dict[str, dict[str, Any]], lg: Log) -> bool:
    """Apply one pool event or observation to `rows` (user -> row); return whether a row changed."""
    args, now, event = lg["args"], lg["block_timestamp"], lg["event"]
    user = args["user"]
    row = rows.get(user)
    if event == "ParticipantJoined":
        kind, amount = int(args["participantType"]), int(args["amount"])
        if row is None or not row["is_active"]:
            rows[user] = _new_membership(row, lg, kind, amount)
            return True
        if kind == TRADER and row["participant_type"] == TRADER:
            row["virtual_usdt"] = int(row["virtual_usdt"]) + amount
        else:
            log.warning(
                "join for an active participant taken as its new type and amount",
                user=user,
                block=lg["block_number"],
                tx=lg["tx_hash"],
                participant_type=kind,
            )
            row["participant_type"] = kind
            row["virtual_usdt"] = amount if kind == TRADER else 0
            row["rbtc_contributed"] = amount if kind == HOLDER else 0
        row["active_s"] = now
    elif row is None:
        return False  # events about users who never joined change nothing
    elif event == "DisputeStateObserved":
        # Read by eth_call when the follower could (not at the resolving transaction): the flag only.
        changed: bool = row["is_disputed"] != bool(args["disputed"])
        row["is_disputed"] = bool(args["disputed"])
        return changed
    elif event == "BalanceDisputed":
        row["is_disputed"] = True
    elif not row["is_active"]:
        return False  # a membership that ended: only a new join or dispute facts change it
    elif event == "YieldClaimed":
        row["yield_claimed"] = int(row["yield_claimed"]) + int(args["amount"])
        row["active_s"] = now
    elif event == "ParticipantLeft":
        row.update(is_active=False, virtual_usdt=0, rbtc_contributed=0, loyalty_tier=0)
    elif event == "ContributionUpdated":
        if row["participant_type"] != HOLDER:
            return False
        row["rbtc_contributed"] = int(args["newContribution"])
        row["loyalty_tier"] = loyalty_tier(row["joined_s"], now)
        row["active_s"] = now
    elif event == "EmergencyBurnTriggered":
        if row["participant_type"] == HOLDER:
            row["rbtc_contributed"] = 0
            row["loyalty_tier"] = loyalty_tier(row["joined_s"], now)
        row["active_s"] = now
    else:
        return False
    row["updated_block"] = max(row["updated_block"], lg["block_number"])
    return True


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
                "ContributionUpdated",
                "DisputeStateObserved",
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
        return fold_participant(rows, lg)

    @staticmethod
    def _row(row: dict[str, Any]) -> tuple[Any, ...]:
        values = dict(row, joined_at=chain_time(row["joined_s"]), last_activity_at=chain_time(row["active_s"]))
        return tuple(values[c] for c in COLUMNS)
