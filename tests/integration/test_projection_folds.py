"""Each read model's fold on hand-written logs, against rows derived here from the protocol's rules.

The projections write PostgreSQL, so each test migrates a fresh schema and applies the logs through the
projection's own `apply`. The expected rows come from a checking model written from the domain reference (§4)
and the README's table descriptions, one rule per line; it never imports or mirrors projection code. Every column
of every row is compared. The same history is applied in one batch, block by block, and in uneven pieces (always
whole blocks, as the engine delivers them): a fold must not depend on where batches are cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from indexer.records import HandledLog
from indexer.store.db import connect, migrate
from projections.models.balances import BalancesProjection
from projections.models.base import Projection
from projections.models.emergency_burns import EmergencyBurnsProjection
from projections.models.oracle_operations import OracleOperationsProjection
from projections.models.transactions import TransactionsProjection
from projections.models.yield_scales import YieldScalesProjection
from tests.support.tables import read_tables

ZERO = "0x" + "00" * 20
ADDRESS = {
    "oracle_aggregator": "0x" + "a1" * 20,
    "rbtc_synth": "0x" + "b2" * 20,
    "fee_vault": "0x" + "c3" * 20,
    "vault_wrbtc": "0x" + "d4" * 20,
    "yield_scales_pool": "0x" + "e5" * 20,
}
AGG = ADDRESS["oracle_aggregator"]
U1, U2, U3, U4, U5 = ("0x" + f"{i:02x}" * 20 for i in (0x11, 0x22, 0x33, 0x44, 0x55))
FIXED_FEE = 10**15
AGG_REASON = "Insufficient fees"
POOL_REASON = "Insufficient fees or balance went to zero"
DAY = 86_400
SILVER_S = 180 * DAY  # 15,552,000 s (reference §4.7)
GOLD_S = 365 * DAY  # 31,536,000 s
T0 = 1_760_000_000


def mint_fee(delta: int) -> int:
    """Reference §4.3 with the live parameters: Δ × 10^10 wei + 10^15 wei."""
    return delta * 10**10 + FIXED_FEE


# --- hand-written history ---------------------------------------------------------------------------------------


@dataclass
class History:
    """Logs as the engine hands them to a projection: decoded, with block time, in chain order."""

    logs: list[HandledLog] = field(default_factory=list)
    block: int = 100
    time: int = T0
    _tx: int = 0
    _log_index: int = 0

    def next_block(self, seconds: int = 2) -> None:
        self.block += 1
        self.time += seconds
        self._tx = 0
        self._log_index = 0

    def at(self, block: int, time: int) -> None:
        """Jump to a later block and time."""
        assert block > self.block and time >= self.time
        self.block, self.time, self._tx, self._log_index = block, time, 0, 0

    def tx(self, *entries: tuple[str, str, dict[str, Any]]) -> str:
        """One transaction in the current block, its logs in the given order."""
        tx_hash = f"0x{self.block:032x}{self._tx:032x}"
        for role, event, args in entries:
            self.logs.append(
                HandledLog(
                    block_number=self.block,
                    block_hash=f"0x{self.block:064x}",
                    tx_hash=tx_hash,
                    tx_index=self._tx,
                    log_index=self._log_index,
                    address=ADDRESS[role],
                    topics=[],
                    data="0x",
                    block_timestamp=self.time,
                    role=role,
                    event=event,
                    args={k: str(v) if isinstance(v, int) else v for k, v in args.items()},
                    error=None,
                )
            )
            self._log_index += 1
        self._tx += 1
        return tx_hash


def deposited(user: str, wei: int) -> tuple[str, str, dict[str, Any]]:
    return ("fee_vault", "Deposited", {"user": user, "amount": wei})


def withdrawn(user: str, wei: int) -> tuple[str, str, dict[str, Any]]:
    return ("fee_vault", "Withdrawn", {"user": user, "amount": wei})


def sync(user: str, previous: int, new: int, time: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Reference §4.1: Transfer (mint or burn of |Δ|) · Spent(fee) · Synced."""
    delta = new - previous
    fee = mint_fee(delta) if delta > 0 else FIXED_FEE
    move = {"from": ZERO, "to": user} if delta > 0 else {"from": user, "to": ZERO}
    return [
        ("rbtc_synth", "Transfer", {**move, "amount": abs(delta)}),
        ("fee_vault", "Spent", {"user": user, "amount": fee, "by": AGG}),
        (
            "oracle_aggregator",
            "Synced",
            {"user": user, "newBalanceSats": new, "deltaSats": delta, "feeWei": fee, "height": 0, "timestamp": time},
        ),
    ]


def emergency(user: str, previous: int, time: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Reference §4.5: Transfer(burn of everything) · EmergencyBurn · Synced(0, −previous, fee 0)."""
    return [
        ("rbtc_synth", "Transfer", {"from": user, "to": ZERO, "amount": previous}),
        ("oracle_aggregator", "EmergencyBurn", {"user": user, "burnedAmount": previous, "reason": AGG_REASON}),
        (
            "oracle_aggregator",
            "Synced",
            {"user": user, "newBalanceSats": 0, "deltaSats": -previous, "feeWei": 0, "height": 0, "timestamp": time},
        ),
    ]


def pool(event: str, **args: Any) -> tuple[str, str, dict[str, Any]]:
    return ("yield_scales_pool", event, args)


def scales(time: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        pool("ScalesBalanceUpdated", usdtScale=100, rbtcScale=100, timestamp=time),
        pool("YieldCalculated", totalUSDTVirtual=0, totalRBTCSupply=1, currentYieldRate=5),
    ]


def oracle_history() -> History:
    """Fees, syncs, emergency burns (automatic, manual, several users in one transaction), and wrBTC."""
    h = History()
    h.tx(deposited(U1, 5 * FIXED_FEE))
    h.tx(deposited(U2, 20 * FIXED_FEE))  # a second transaction in the same block
    h.tx(deposited(U3, 10 * FIXED_FEE))
    h.next_block()
    h.tx(*sync(U1, 0, 150_000, h.time))
    h.next_block()
    h.tx(*sync(U1, 150_000, 100_000, h.time))
    h.tx(*sync(U3, 0, 300_000, h.time))
    h.next_block()
    # One batch transaction: U2 syncs up, then U3's burn cannot be paid and becomes an emergency burn.
    h.tx(*sync(U2, 0, 200_000, h.time), *emergency(U3, 300_000, h.time))
    # Another: U1's emergency burn first, then an ordinary burn of U2 in the same transaction.
    h.tx(*emergency(U1, 100_000, h.time), *sync(U2, 200_000, 150_000, h.time))
    h.next_block(seconds=60)
    h.tx(withdrawn(U3, 10 * FIXED_FEE - mint_fee(300_000)))
    h.tx(*emergency(U2, 150_000, h.time))  # the committee's executeEmergencyBurn
    h.next_block()
    h.tx(
        ("vault_wrbtc", "Transfer", {"from": ZERO, "to": U4, "amount": 5_000}),
        ("vault_wrbtc", "Wrapped", {"user": U4, "amount": 5_000}),
    )
    h.tx(("vault_wrbtc", "Transfer", {"from": U4, "to": U1, "amount": 1_000}))
    h.next_block()
    h.tx(
        ("vault_wrbtc", "Transfer", {"from": U1, "to": ZERO, "amount": 400}),
        ("vault_wrbtc", "Redeemed", {"user": U1, "amount": 400}),
    )
    h.tx(
        ("vault_wrbtc", "Transfer", {"from": U4, "to": ZERO, "amount": 100}),
        ("vault_wrbtc", "Slashed", {"user": U4, "amount": 100}),
    )
    h.tx(("vault_wrbtc", "Approval", {"owner": U4, "spender": U1, "amount": 777}))
    h.next_block(seconds=3600)
    # After an emergency burn the next positive sync re-mints the full amount (reference §4.2).
    h.tx(deposited(U1, 3 * FIXED_FEE), *sync(U1, 0, 60_000, h.time))
    h.next_block()
    # One transaction with an ordinary sync of U1 and then an emergency burn of U1: only the second Synced is
    # the emergency one.
    h.tx(*sync(U1, 60_000, 10_000, h.time), *emergency(U1, 10_000, h.time))
    h.next_block()
    h.tx(("fee_vault", "Spent", {"user": U4, "amount": 7, "by": AGG}))  # a user first seen through Spent
    return h


def pool_history() -> History:
    """Joins, a trader's top-ups, claims, a dispute, emergency burns at the tier boundaries, leaving, and events
    about users who never joined."""
    h = History(block=500, time=T0 + 10 * DAY)
    h.tx(*scales(h.time), pool("ParticipantJoined", user=U1, participantType=0, amount=60_000))
    joined_u1 = h.time
    h.next_block()
    h.tx(*scales(h.time), pool("ParticipantJoined", user=U2, participantType=1, amount=10**9))
    h.tx(*scales(h.time), pool("ParticipantJoined", user=U3, participantType=0, amount=1_000))
    h.tx(*scales(h.time), pool("ParticipantJoined", user=U4, participantType=0, amount=2_000))
    joined_u2 = joined_u3 = joined_u4 = h.time
    h.next_block(seconds=100)
    h.tx(*scales(h.time), pool("ParticipantJoined", user=U2, participantType=1, amount=5 * 10**8))  # a top-up
    h.next_block(seconds=1000)
    h.tx(pool("YieldClaimed", user=U2, amount=1_234))
    h.tx(pool("YieldClaimed", user=U5, amount=99))  # never joined: no row
    h.next_block()
    h.tx(pool("YieldClaimed", user=U2, amount=66))
    h.tx(pool("BalanceDisputed", user=U1, reportedBalance=1, oracleBalance=2))
    h.tx(pool("EmergencyBurnTriggered", user=U5, burnedAmount=5, reason=POOL_REASON))  # never joined: no row
    # Holder emergency burns (updateRBTCContribution to 0): contribution 0, tier recomputed from joined_at.
    h.at(900, joined_u1 + SILVER_S - 1)
    h.tx(pool("EmergencyBurnTriggered", user=U1, burnedAmount=60_000, reason=POOL_REASON), *scales(h.time))
    h.at(901, joined_u3 + SILVER_S)
    h.tx(pool("EmergencyBurnTriggered", user=U3, burnedAmount=1_000, reason=POOL_REASON), *scales(h.time))
    h.next_block()
    h.tx(pool("EmergencyBurnTriggered", user=U2, burnedAmount=3, reason=POOL_REASON))  # a trader: contribution stays
    h.at(950, joined_u4 + GOLD_S)
    h.tx(pool("EmergencyBurnTriggered", user=U4, burnedAmount=2_000, reason=POOL_REASON), *scales(h.time))
    h.next_block()
    # ParticipantLeft is declared (never emitted by the deployed pool): it deactivates.
    h.tx(pool("ParticipantLeft", user=U2, participantType=1, amount=0))
    assert joined_u2 < h.time
    return h


# --- the checking model: rows from the rules --------------------------------------------------------------------


def _n(value: Any) -> int:
    return int(value)


def emergency_synced(logs: list[HandledLog]) -> set[tuple[str, int]]:
    """(tx, log index) of each emergency Synced: the first Synced of the same user after an EmergencyBurn in the
    same transaction (reference §4.5, per user and log position, never per transaction)."""
    marked: set[tuple[str, int]] = set()
    waiting: set[tuple[str, str]] = set()  # (tx, user) with an EmergencyBurn not yet followed by its Synced
    for lg in logs:
        if lg["role"] != "oracle_aggregator":
            continue
        key = (lg["tx_hash"], lg["args"]["user"])
        if lg["event"] == "EmergencyBurn":
            waiting.add(key)
        elif lg["event"] == "Synced" and key in waiting:
            waiting.discard(key)
            marked.add((lg["tx_hash"], lg["log_index"]))
    return marked


def expect_balances(logs: list[HandledLog]) -> list[dict[str, Any]]:
    """README/reference §4.2, 4.4, 4.6: one row per user seen; rBTC = mints − burns; wrBTC = vault transfers in −
    out; fee vault = Deposited − Spent − Withdrawn; last_sats and the last-sync fields from the latest Synced."""
    rows: dict[str, dict[str, Any]] = {}

    def row(user: str, block: int) -> dict[str, Any]:
        entry = rows.setdefault(
            user,
            {
                "user_address": user,
                "last_sats": 0,
                "rbtc_balance": 0,
                "wrbtc_balance": 0,
                "fee_vault_wei": 0,
                "last_sync_block": None,
                "last_sync_time": None,
                "last_sync_delta": None,
                "last_sync_fee_wei": None,
                "updated_block": block,
            },
        )
        entry["updated_block"] = max(entry["updated_block"], block)
        return entry

    for lg in logs:
        kind, args, block = (lg["role"], lg["event"]), lg["args"], lg["block_number"]
        if kind == ("oracle_aggregator", "Synced"):
            r = row(args["user"], block)
            r["last_sats"] = _n(args["newBalanceSats"])
            r["last_sync_block"], r["last_sync_time"] = block, lg["block_timestamp"]
            r["last_sync_delta"], r["last_sync_fee_wei"] = _n(args["deltaSats"]), _n(args["feeWei"])
        elif kind in (("rbtc_synth", "Transfer"), ("vault_wrbtc", "Transfer")):
            column = "rbtc_balance" if kind[0] == "rbtc_synth" else "wrbtc_balance"
            if args["from"] != ZERO:
                row(args["from"], block)[column] -= _n(args["amount"])
            if args["to"] != ZERO:
                row(args["to"], block)[column] += _n(args["amount"])
        elif kind == ("fee_vault", "Deposited"):
            row(args["user"], block)["fee_vault_wei"] += _n(args["amount"])
        elif kind in (("fee_vault", "Spent"), ("fee_vault", "Withdrawn")):
            row(args["user"], block)["fee_vault_wei"] -= _n(args["amount"])
    return sorted(rows.values(), key=lambda r: r["user_address"])


VAULT_ROWS = {
    ("fee_vault", "Deposited"): ("DEPOSIT", 1),
    ("fee_vault", "Withdrawn"): ("WITHDRAW", -1),
    ("vault_wrbtc", "Wrapped"): ("WRAP", 1),
    ("vault_wrbtc", "Redeemed"): ("UNWRAP", -1),
}


def expect_transactions(logs: list[HandledLog]) -> list[dict[str, Any]]:
    """README: one row per Synced (MINT when Δ > 0, BURN when Δ < 0, amount |Δ|, fee feeWei), Deposited and
    Withdrawn (wei), Wrapped and Redeemed (sats); delta signed; the emergency Synced flagged; status confirmed;
    metadata names the event, emitter, tx index and, for Synced, the new balance; off-chain columns NULL."""
    emergencies = emergency_synced(logs)
    rows = []
    for lg in logs:
        kind, args = (lg["role"], lg["event"]), lg["args"]
        metadata: dict[str, Any] = {"event": lg["event"], "emitter": lg["address"], "tx_index": lg["tx_index"]}
        if kind == ("oracle_aggregator", "Synced"):
            delta = _n(args["deltaSats"])
            tx_type, amount, fee = ("MINT" if delta > 0 else "BURN"), abs(delta), _n(args["feeWei"])
            flagged = (lg["tx_hash"], lg["log_index"]) in emergencies
            metadata["new_balance_sats"] = args["newBalanceSats"]
        elif kind in VAULT_ROWS:
            tx_type, sign = VAULT_ROWS[kind]
            amount, fee, flagged = _n(args["amount"]), 0, False
            delta = sign * amount
        else:
            continue
        rows.append(
            {
                "tx_hash": lg["tx_hash"],
                "log_index": lg["log_index"],
                "block_number": lg["block_number"],
                "block_timestamp": lg["block_timestamp"],
                "user_address": args["user"],
                "tx_type": tx_type,
                "amount": amount,
                "delta": delta,
                "fee_wei": fee,
                "is_emergency_burn": flagged,
                "status": "confirmed",
                "metadata": metadata,
                "bitcoin_address": None,
                "gas_used": None,  # hand-written logs carry no receipt facts
                "gas_price": None,
                "tx_from": None,
                "tx_to": None,
            }
        )
    return sorted(rows, key=lambda r: (r["tx_hash"], r["log_index"]))


def expect_emergency_burns(logs: list[HandledLog]) -> list[dict[str, Any]]:
    """Reference §4.5: one row per OracleAggregator EmergencyBurn log (the pool's EmergencyBurnTriggered is
    another concept)."""
    rows = [
        {
            "tx_hash": lg["tx_hash"],
            "log_index": lg["log_index"],
            "block_number": lg["block_number"],
            "timestamp": lg["block_timestamp"],
            "user_address": lg["args"]["user"],
            "burned_amount": _n(lg["args"]["burnedAmount"]),
            "reason": lg["args"]["reason"],
        }
        for lg in logs
        if (lg["role"], lg["event"]) == ("oracle_aggregator", "EmergencyBurn")
    ]
    return sorted(rows, key=lambda r: (r["tx_hash"], r["log_index"]))


def expect_oracle_operations(logs: list[HandledLog]) -> list[dict[str, Any]]:
    """Design §4 / README: one row per oracle action: each ordinary Synced is a MINT or BURN (|Δ|, its fee); each
    EmergencyBurn is an EMERGENCY_BURN (the whole previous balance, no fee) and its own Synced is part of it;
    off-chain columns stay NULL."""
    emergencies = emergency_synced(logs)
    rows = []
    for lg in logs:
        if lg["role"] != "oracle_aggregator":
            continue
        args = lg["args"]
        if lg["event"] == "EmergencyBurn":
            operation, amount, fee = "EMERGENCY_BURN", _n(args["burnedAmount"]), 0
        elif lg["event"] == "Synced" and (lg["tx_hash"], lg["log_index"]) not in emergencies:
            delta = _n(args["deltaSats"])
            operation, amount, fee = ("MINT" if delta > 0 else "BURN"), abs(delta), _n(args["feeWei"])
        else:
            continue
        rows.append(
            {
                "tx_hash": lg["tx_hash"],
                "log_index": lg["log_index"],
                "block_number": lg["block_number"],
                "block_timestamp": lg["block_timestamp"],
                "operation_type": operation,
                "user_address": args["user"],
                "amount_sats": amount,
                "fee_wei": fee,
                "bitcoin_address": None,
                "oracle_node": None,
                "consensus_data": None,
                # The frontend's names (/api/oracle/operations): a replay-stable id and chain time.
                "id": f"{lg['tx_hash']}:{lg['log_index']}",
                "timestamp": lg["block_timestamp"],
                "action": operation,
                "consensus_reached": None,
                "sources_used": None,
                "created_at": lg["block_timestamp"],
            }
        )
    return sorted(rows, key=lambda r: (r["tx_hash"], r["log_index"]))


def tier(joined: int, now: int) -> int:
    """Reference §4.7: Gold after 365 days, Silver after 180, else Bronze."""
    elapsed = now - joined
    if elapsed >= GOLD_S:
        return 2
    return 1 if elapsed >= SILVER_S else 0


def expect_participants(logs: list[HandledLog]) -> list[dict[str, Any]]:
    """Reference §4.7 and §6 / README: a first ParticipantJoined creates the participant (type, holder
    contribution or trader amount, joined_at = last activity = block time, tier 0); a trader's later joins add
    to virtual_usdt and reset last activity; YieldClaimed adds to yield_claimed and resets last activity;
    BalanceDisputed opens a dispute; EmergencyBurnTriggered zeroes a holder's contribution, resets last activity
    (as the pool does for any existing participant) and recomputes a holder's tier; ParticipantLeft deactivates
    and a later join makes the user active again (the reference states no more of a re-join);
    yield_earned stays 0; events about users who never joined change nothing."""
    rows: dict[str, dict[str, Any]] = {}
    for lg in logs:
        if lg["role"] != "yield_scales_pool":
            continue
        args, now, block, event = lg["args"], lg["block_timestamp"], lg["block_number"], lg["event"]
        user: str = args.get("user", "")
        row = rows.get(user)
        if event == "ParticipantJoined":
            kind, amount = _n(args["participantType"]), _n(args["amount"])
            if row is None:
                rows[user] = {
                    "user_address": user,
                    "participant_type": kind,
                    "loyalty_tier": 0,
                    "is_active": True,
                    "virtual_usdt": amount if kind == 1 else 0,
                    "rbtc_contributed": amount if kind == 0 else 0,
                    "yield_claimed": 0,
                    "yield_earned": 0,
                    "joined_at": now,
                    "last_activity_at": now,
                    "is_disputed": False,
                    "updated_block": block,
                }
                continue
            row["is_active"] = True
            if kind == 1:
                row["virtual_usdt"] += amount
            else:
                row["rbtc_contributed"] = amount
            row["last_activity_at"] = now
        elif row is None:
            continue
        elif event == "YieldClaimed":
            row["yield_claimed"] += _n(args["amount"])
            row["last_activity_at"] = now
        elif event == "BalanceDisputed":
            row["is_disputed"] = True
        elif event == "ParticipantLeft":
            # The membership ended: nothing is contributed or deposited any more, and tenure starts again.
            row.update(is_active=False, rbtc_contributed=0, virtual_usdt=0, loyalty_tier=0)
        elif event == "EmergencyBurnTriggered":
            if row["participant_type"] == 0:
                row["rbtc_contributed"] = 0
                row["loyalty_tier"] = tier(row["joined_at"], now)
            row["last_activity_at"] = now
        else:
            continue
        row["updated_block"] = block
    return sorted(rows.values(), key=lambda r: r["user_address"])


# --- running the projections ------------------------------------------------------------------------------------


@pytest.fixture
def conn(database_url: str, schema: str) -> Iterator[psycopg.Connection]:
    migrate(database_url, schema)
    connection = connect(database_url, schema)
    try:
        yield connection
    finally:
        connection.close()


def deliver(projection: Projection, logs: list[HandledLog]) -> list[HandledLog]:
    """What the engine passes a projection: the logs of the events it handles (records.HandledLog)."""
    return [lg for lg in logs if (lg["role"], lg["event"]) in projection.handles]


def blocks_of(logs: list[HandledLog]) -> list[list[HandledLog]]:
    groups: dict[int, list[HandledLog]] = {}
    for lg in logs:
        groups.setdefault(lg["block_number"], []).append(lg)
    return [groups[b] for b in sorted(groups)]


def batchings(logs: list[HandledLog]) -> dict[str, list[list[HandledLog]]]:
    blocks = blocks_of(logs)
    uneven, start = [], 0
    for size in (1, 3, 2, 5, 100):
        piece = [lg for block in blocks[start : start + size] for lg in block]
        if piece:
            uneven.append(piece)
        start += size
    return {"one batch": [logs], "block by block": blocks, "uneven pieces": uneven}


def apply_in(conn: psycopg.Connection, projection: Projection, batches: list[list[HandledLog]]) -> None:
    for batch in batches:
        with conn.transaction():
            projection.apply(conn, deliver(projection, batch))


def table(database_url: str, schema: str, name: str) -> list[dict[str, Any]]:
    return read_tables(database_url, schema)[name]


def check_every_batching(
    conn: psycopg.Connection,
    database_url: str,
    schema: str,
    projection: Projection,
    history: History,
    expect: Callable[[list[HandledLog]], list[dict[str, Any]]],
) -> None:
    want = expect(history.logs)
    assert want, "the history gives this table no rows"
    for how, batches in batchings(history.logs).items():
        with conn.transaction():
            for name in projection.tables:
                conn.execute(f"TRUNCATE {name}")
        apply_in(conn, projection, batches)
        got = table(database_url, schema, projection.tables[0])
        assert len(got) == len(want), how
        for g, w in zip(got, want, strict=True):
            assert g == w, how


BALANCES, TRANSACTIONS, BURNS = BalancesProjection(), TransactionsProjection(), EmergencyBurnsProjection()
OPERATIONS, PARTICIPANTS = OracleOperationsProjection(), YieldScalesProjection()


def test_balances_fold(conn: psycopg.Connection, database_url: str, schema: str) -> None:
    check_every_batching(conn, database_url, schema, BALANCES, oracle_history(), expect_balances)


def test_transactions_fold(conn: psycopg.Connection, database_url: str, schema: str) -> None:
    check_every_batching(conn, database_url, schema, TRANSACTIONS, oracle_history(), expect_transactions)


def test_emergency_burns_fold(conn: psycopg.Connection, database_url: str, schema: str) -> None:
    history = oracle_history()
    history.logs.extend(pool_history().logs)  # the pool's EmergencyBurnTriggered must not count
    check_every_batching(conn, database_url, schema, BURNS, history, expect_emergency_burns)


def test_oracle_operations_fold(conn: psycopg.Connection, database_url: str, schema: str) -> None:
    check_every_batching(conn, database_url, schema, OPERATIONS, oracle_history(), expect_oracle_operations)


def test_yield_scales_participants_fold(conn: psycopg.Connection, database_url: str, schema: str) -> None:
    check_every_batching(conn, database_url, schema, PARTICIPANTS, pool_history(), expect_participants)


# --- single rules, each on the smallest history that shows it ----------------------------------------------------


def _one_tx(*entries: tuple[str, str, dict[str, Any]]) -> History:
    h = History()
    h.tx(*entries)
    return h


def test_only_the_burned_users_synced_is_flagged_in_a_batch_transaction(
    conn: psycopg.Connection, database_url: str, schema: str
) -> None:
    h = _one_tx(*sync(U2, 0, 200_000, T0), *emergency(U3, 300_000, T0), *sync(U4, 0, 5, T0))
    apply_in(conn, TRANSACTIONS, [h.logs])
    flags = {(r["user_address"], r["is_emergency_burn"]) for r in table(database_url, schema, "transactions")}
    assert flags == {(U2, False), (U3, True), (U4, False)}


def test_an_ordinary_sync_before_the_emergency_in_the_same_transaction_is_not_flagged(
    conn: psycopg.Connection, database_url: str, schema: str
) -> None:
    h = _one_tx(*sync(U1, 60_000, 10_000, T0), *emergency(U1, 10_000, T0))
    apply_in(conn, TRANSACTIONS, [h.logs])
    rows = table(database_url, schema, "transactions")
    assert [(r["log_index"], r["is_emergency_burn"]) for r in sorted(rows, key=lambda r: r["log_index"])] == [
        (2, False),
        (5, True),
    ]


def test_other_users_syncs_in_an_emergency_transaction_are_oracle_operations(
    conn: psycopg.Connection, database_url: str, schema: str
) -> None:
    h = _one_tx(*emergency(U1, 100_000, T0), *sync(U2, 200_000, 150_000, T0))
    apply_in(conn, OPERATIONS, [h.logs])
    ops = {
        (r["user_address"], r["operation_type"], r["amount_sats"])
        for r in table(database_url, schema, "oracle_operations_log")
    }
    assert ops == {(U1, "EMERGENCY_BURN", 100_000), (U2, "BURN", 50_000)}


def test_a_trader_top_up_adds_and_keeps_the_join_time(conn: psycopg.Connection, database_url: str, schema: str) -> None:
    h = History()
    h.tx(pool("ParticipantJoined", user=U2, participantType=1, amount=100))
    joined = h.time
    h.next_block(seconds=50)
    h.tx(pool("ParticipantJoined", user=U2, participantType=1, amount=25))
    apply_in(conn, PARTICIPANTS, [h.logs])
    [row] = table(database_url, schema, "yield_scales_participants")
    assert (row["virtual_usdt"], row["joined_at"], row["last_activity_at"]) == (125, joined, joined + 50)


@pytest.mark.parametrize(("elapsed", "expected_tier"), [(SILVER_S - 1, 0), (SILVER_S, 1), (GOLD_S - 1, 1), (GOLD_S, 2)])
def test_the_tier_is_recomputed_on_a_holders_emergency_burn(
    conn: psycopg.Connection, database_url: str, schema: str, elapsed: int, expected_tier: int
) -> None:
    h = History()
    h.tx(pool("ParticipantJoined", user=U1, participantType=0, amount=500))
    h.next_block(seconds=elapsed)
    h.tx(pool("EmergencyBurnTriggered", user=U1, burnedAmount=500, reason=POOL_REASON))
    apply_in(conn, PARTICIPANTS, [h.logs])
    [row] = table(database_url, schema, "yield_scales_participants")
    assert (row["loyalty_tier"], row["rbtc_contributed"]) == (expected_tier, 0)


def test_a_participant_who_left_and_joins_again_is_active(
    conn: psycopg.Connection, database_url: str, schema: str
) -> None:
    h = History()
    h.tx(pool("ParticipantJoined", user=U2, participantType=1, amount=100))
    h.next_block()
    h.tx(pool("ParticipantLeft", user=U2, participantType=1, amount=0))
    h.next_block()
    h.tx(pool("ParticipantJoined", user=U2, participantType=1, amount=7))
    apply_in(conn, PARTICIPANTS, [h.logs])
    [row] = table(database_url, schema, "yield_scales_participants")
    assert row["is_active"] is True
    assert row["updated_block"] == h.block
