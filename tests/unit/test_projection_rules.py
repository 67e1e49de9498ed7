"""One test per projection rule, on hand-written decoded logs (no database)."""

from __future__ import annotations

from typing import Any

from projections.models.base import emergency_synced
from projections.models.oracle_operations import COLUMNS as OP_COLUMNS
from projections.models.oracle_operations import operation_rows
from projections.models.transactions import COLUMNS as TX_COLUMNS
from projections.models.transactions import transaction_rows
from projections.models.yield_scales import GOLD_AFTER_S, SILVER_AFTER_S, fold_participant

AGG = "0x" + "a1" * 20
VAULT = "0x" + "f1" * 20
POOL = "0x" + "b1" * 20
ALICE, BOB, CAROL = ("0x" + c * 20 for c in ("0a", "0b", "0c"))
TX1, TX2 = "0x" + "11" * 32, "0x" + "22" * 32


def log(role: str, event: str, tx: str, index: int, block: int = 10, time: int = 1_000, **args: Any) -> dict:
    address = {"oracle_aggregator": AGG, "fee_vault": VAULT, "yield_scales_pool": POOL}[role]
    return {
        "block_number": block,
        "block_hash": "0x" + "cc" * 32,
        "block_timestamp": time,
        "tx_hash": tx,
        "tx_index": 0,
        "log_index": index,
        "address": address,
        "role": role,
        "event": event,
        "args": {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in args.items()},
        "error": None,
    }


def synced(tx: str, index: int, user: str, new: int, delta: int, fee: int) -> dict:
    return log("oracle_aggregator", "Synced", tx, index, user=user, newBalanceSats=new, deltaSats=delta, feeWei=fee)


def burn(tx: str, index: int, user: str, amount: int) -> dict:
    return log(
        "oracle_aggregator", "EmergencyBurn", tx, index, user=user, burnedAmount=amount, reason="Insufficient fees"
    )


def batch_with_one_emergency() -> list[dict]:
    """One syncBatch: Alice minted, Bob emergency-burned, Carol burned normally (Transfer/Spent logs omitted)."""
    return [
        synced(TX1, 2, ALICE, 500, 500, 10**15),
        burn(TX1, 4, BOB, 300),
        synced(TX1, 5, BOB, 0, -300, 0),
        synced(TX1, 8, CAROL, 100, -50, 10**15),
    ]


def by_column(columns: tuple[str, ...], rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_emergency_flag_is_per_user_and_log_position():
    assert emergency_synced(batch_with_one_emergency()) == {(TX1, 5)}
    rows = by_column(TX_COLUMNS, transaction_rows(batch_with_one_emergency()))
    assert [(r["user_address"], r["log_index"], r["is_emergency_burn"]) for r in rows] == [
        (ALICE, 2, False),
        (BOB, 5, True),
        (CAROL, 8, False),
    ]


def test_emergency_synced_is_the_next_synced_of_that_user_only():
    # Bob's ordinary sync before his burn in the same transaction stays ordinary; a second burn flags again.
    logs = [
        synced(TX1, 0, BOB, 50, 50, 1),
        burn(TX1, 1, BOB, 50),
        synced(TX1, 2, ALICE, 9, 9, 1),
        synced(TX1, 3, BOB, 0, -50, 0),
        synced(TX2, 0, BOB, 7, 7, 1),
    ]
    assert emergency_synced(logs) == {(TX1, 3)}


def test_every_oracle_action_is_one_operation_row():
    rows = by_column(OP_COLUMNS, operation_rows(batch_with_one_emergency()))
    assert [(r["log_index"], r["operation_type"], r["user_address"], r["amount_sats"], r["fee_wei"]) for r in rows] == [
        (2, "MINT", ALICE, 500, 10**15),
        (4, "EMERGENCY_BURN", BOB, 300, 0),
        (8, "BURN", CAROL, 50, 10**15),
    ]


def test_operation_rows_carry_the_frontend_columns():
    (row,) = by_column(OP_COLUMNS, operation_rows([synced(TX2, 7, ALICE, 5, 5, 3)]))
    assert row["id"] == f"{TX2}:7"
    assert row["action"] == "MINT"
    assert row["timestamp"] == row["created_at"] == row["block_timestamp"]
    assert row["timestamp"].timestamp() == 1_000


def test_register_and_prepay_deposit_is_a_deposit_operation_but_a_user_deposit_is_not():
    prepay = log("fee_vault", "Deposited", TX1, 0, user=ALICE, amount=5 * 10**15)
    prepay["tx"] = {
        "from": "0x" + "ee" * 20,
        "to": AGG,
        "to_role": "oracle_aggregator",
        "gas_used": "60000",
        "gas_price": "7",
    }
    own = log("fee_vault", "Deposited", TX2, 1, user=BOB, amount=10**15)
    own["tx"] = {"from": BOB, "to": VAULT, "to_role": "fee_vault", "gas_used": "40000", "gas_price": "7"}
    rows = by_column(OP_COLUMNS, operation_rows([prepay, own]))
    assert [(r["operation_type"], r["user_address"], r["amount_sats"], r["fee_wei"]) for r in rows] == [
        ("DEPOSIT", ALICE, None, 5 * 10**15)
    ]
    txs = by_column(TX_COLUMNS, transaction_rows([prepay, own]))
    assert [(r["tx_type"], r["gas_used"], r["gas_price"], r["tx_from"], r["tx_to"]) for r in txs] == [
        ("DEPOSIT", 60000, 7, "0x" + "ee" * 20, AGG),
        ("DEPOSIT", 40000, 7, BOB, VAULT),
    ]


def test_without_receipts_gas_and_addresses_are_null():
    (row,) = by_column(TX_COLUMNS, transaction_rows([synced(TX1, 0, ALICE, 5, 5, 1)]))
    assert (row["gas_used"], row["gas_price"], row["tx_from"], row["tx_to"]) == (None, None, None, None)


# -- yield_scales_participants ---------------------------------------------------------------------------


def pool(event: str, index: int, time: int, block: int | None = None, **args: Any) -> dict:
    return log("yield_scales_pool", event, TX1, index, block=block or time, time=time, **args)


def fold(*logs: dict) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for lg in logs:
        fold_participant(rows, lg)
    return rows


def test_left_participant_rejoins_with_a_new_membership_of_either_type():
    joined = pool("ParticipantJoined", 0, 100, user=ALICE, participantType=0, amount=700)
    claimed = pool("YieldClaimed", 1, 150, user=ALICE, amount=3)
    left = pool("ParticipantLeft", 2, 200, user=ALICE, participantType=0, amount=700)
    rows = fold(joined, claimed, left)
    assert (rows[ALICE]["is_active"], rows[ALICE]["rbtc_contributed"], rows[ALICE]["virtual_usdt"]) == (False, 0, 0)
    assert rows[ALICE]["yield_claimed"] == 3
    as_trader = fold(joined, claimed, left, pool("ParticipantJoined", 3, 300, user=ALICE, participantType=1, amount=9))
    row = as_trader[ALICE]
    assert (row["participant_type"], row["is_active"], row["virtual_usdt"], row["rbtc_contributed"]) == (1, True, 9, 0)
    assert (row["joined_s"], row["active_s"], row["yield_claimed"], row["updated_block"]) == (300, 300, 3, 300)
    as_holder = fold(joined, left, pool("ParticipantJoined", 3, 400, user=ALICE, participantType=0, amount=55))
    row = as_holder[ALICE]
    assert (row["participant_type"], row["is_active"], row["rbtc_contributed"], row["joined_s"]) == (0, True, 55, 400)


def test_events_on_an_ended_membership_change_nothing_but_dispute_facts():
    rows = fold(
        pool("ParticipantJoined", 0, 100, user=ALICE, participantType=1, amount=5),
        pool("ParticipantLeft", 1, 200, user=ALICE, participantType=1, amount=5),
    )
    before = dict(rows[ALICE])
    assert not fold_participant(rows, pool("EmergencyBurnTriggered", 2, 300, user=ALICE, burnedAmount=1, reason="x"))
    assert rows[ALICE] == before
    assert fold_participant(rows, pool("DisputeStateObserved", 3, 400, user=ALICE, disputed=True))


def test_trader_join_on_an_active_trader_is_a_top_up():
    rows = fold(
        pool("ParticipantJoined", 0, 100, user=BOB, participantType=1, amount=5),
        pool("ParticipantJoined", 1, 130, user=BOB, participantType=1, amount=7),
    )
    assert (rows[BOB]["virtual_usdt"], rows[BOB]["joined_s"], rows[BOB]["active_s"]) == (12, 100, 130)


def test_holder_join_on_an_active_row_takes_the_events_amount_and_keeps_joined_at():
    rows = fold(
        pool("ParticipantJoined", 0, 100, user=BOB, participantType=0, amount=5),
        pool("ParticipantJoined", 1, 130, user=BOB, participantType=0, amount=8),
    )
    assert (rows[BOB]["rbtc_contributed"], rows[BOB]["joined_s"], rows[BOB]["active_s"]) == (8, 100, 130)
    switched = fold(
        pool("ParticipantJoined", 0, 100, user=BOB, participantType=1, amount=5),
        pool("ParticipantJoined", 1, 130, user=BOB, participantType=0, amount=8),
    )
    row = switched[BOB]
    assert (row["participant_type"], row["rbtc_contributed"], row["virtual_usdt"], row["joined_s"]) == (0, 8, 0, 100)


def test_observed_contribution_update_sets_amount_tier_and_activity():
    start = 1_000
    rows = fold(
        pool("ParticipantJoined", 0, start, user=CAROL, participantType=0, amount=100),
        pool("ContributionUpdated", 1, start + SILVER_AFTER_S, user=CAROL, newContribution=250),
    )
    row = rows[CAROL]
    assert (row["rbtc_contributed"], row["loyalty_tier"], row["active_s"]) == (250, 1, start + SILVER_AFTER_S)
    fold_participant(rows, pool("ContributionUpdated", 2, start + GOLD_AFTER_S, user=CAROL, newContribution=0))
    assert (rows[CAROL]["rbtc_contributed"], rows[CAROL]["loyalty_tier"]) == (0, 2)


def test_contribution_update_is_ignored_for_traders():
    rows = fold(pool("ParticipantJoined", 0, 10, user=CAROL, participantType=1, amount=100))
    assert not fold_participant(rows, pool("ContributionUpdated", 1, 20, user=CAROL, newContribution=250))
    assert rows[CAROL]["rbtc_contributed"] == 0


def test_dispute_filed_then_observed_resolved():
    rows = fold(
        pool("ParticipantJoined", 0, 10, user=ALICE, participantType=1, amount=1),
        pool("BalanceDisputed", 1, 20, user=ALICE, reportedBalance=1, oracleBalance=2),
    )
    assert rows[ALICE]["is_disputed"] is True
    assert fold_participant(rows, pool("DisputeStateObserved", 2, 30, block=31, user=ALICE, disputed=False))
    # The flag only: the observation is placed where the follower could read it, not at the resolving call.
    assert (rows[ALICE]["is_disputed"], rows[ALICE]["updated_block"], rows[ALICE]["active_s"]) == (False, 20, 10)
    assert not fold_participant(rows, pool("DisputeStateObserved", 3, 40, user=ALICE, disputed=False))


def test_pool_emergency_burn_zeroes_a_holder_and_recomputes_the_tier():
    rows = fold(
        pool("ParticipantJoined", 0, 0, user=ALICE, participantType=0, amount=100),
        pool("EmergencyBurnTriggered", 1, GOLD_AFTER_S, user=ALICE, burnedAmount=100, reason="x"),
    )
    assert (rows[ALICE]["rbtc_contributed"], rows[ALICE]["loyalty_tier"], rows[ALICE]["active_s"]) == (
        0,
        2,
        GOLD_AFTER_S,
    )
