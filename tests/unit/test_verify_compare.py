"""The comparison of tables with chain state, on hand-made records (no database, no node)."""

from __future__ import annotations

from indexer.verify.compare import (
    BURN_COUNT,
    CHAIN_INVARIANT,
    SUPPLY,
    TABLE_INVARIANT,
    VAULT_ETH,
    by_column,
    compare,
)
from indexer.verify.records import (
    BalanceRow,
    BurnRow,
    ChainState,
    Difference,
    GlobalChainState,
    LogFacts,
    ParticipantRow,
    TableState,
    UserChainState,
)

ALICE, BOB, CAROL, STRAY = ("0x" + c * 40 for c in "abce")
JOIN, ACTIVE = 1_700_000_000, 1_700_000_500
HOLDER = ParticipantRow(0, 0, 5_000, 0, 12, JOIN, ACTIVE, 0, False)
BURN_KEY = ("0x" + "11" * 32, 4)
BURN = BurnRow(90, 1_700_000_900, BOB, 3_000, "Insufficient fees")


def _user(last_sats: int, rbtc: int, fee: int, wrbtc: int = 0, participant: ParticipantRow | None = None):
    return UserChainState(last_sats, rbtc, fee, wrbtc, participant, participant.is_disputed if participant else False)


def _world() -> tuple[TableState, LogFacts, ChainState]:
    """Alice holds rBTC and joined the pool; Bob was emergency-burned; Carol only prepaid fees."""
    tables = TableState(
        balances={
            ALICE: BalanceRow(last_sats=5_000, rbtc_balance=5_000, fee_vault_wei=10**15, wrbtc_balance=7),
            BOB: BalanceRow(last_sats=0, rbtc_balance=0, fee_vault_wei=0, wrbtc_balance=0),
            CAROL: BalanceRow(last_sats=0, rbtc_balance=0, fee_vault_wei=2 * 10**15, wrbtc_balance=0),
        },
        participants={ALICE: HOLDER},
        burns={BURN_KEY: BURN},
        rbtc_total=5_000,
        fee_vault_total=3 * 10**15,
    )
    facts = LogFacts(addresses=frozenset({ALICE, BOB, CAROL}), burns={BURN_KEY: BURN})
    chain = ChainState(
        users={
            ALICE: _user(5_000, 5_000, 10**15, 7, HOLDER),
            BOB: _user(0, 0, 0),
            CAROL: _user(0, 0, 2 * 10**15),
        },
        globals=GlobalChainState(rbtc_total_supply=5_000, fee_vault_eth_wei=3 * 10**15, emergency_burn_count=1),
        calls=18,
        requests=3,
        method="multicall",
    )
    return tables, facts, chain


def _replace_user(chain: ChainState, user: str, state: UserChainState) -> ChainState:
    return ChainState({**chain.users, user: state}, chain.globals, chain.calls, chain.requests, chain.method)


def test_equal_tables_and_chain_have_no_difference_and_say_what_was_checked():
    result = compare(*_world())
    assert result.differences == []
    assert {
        "balances.last_sats",
        "balances.rbtc_balance",
        "balances.fee_vault_wei",
        "balances.wrbtc_balance",
        "yield_scales_participants.rbtc_contributed",
        "yield_scales_participants.is_disputed",
        "emergency_burns.burned_amount",
        TABLE_INVARIANT,
        CHAIN_INVARIANT,
        SUPPLY,
        VAULT_ETH,
        BURN_COUNT,
    } <= set(result.columns_checked)
    unchecked = {u.column for u in result.unchecked}
    assert "balances.last_sync_block" in unchecked and "yield_scales_participants.is_active" in unchecked
    assert not unchecked & set(result.columns_checked)


def test_a_wrong_balance_names_its_column_the_invariant_and_nothing_else():
    tables, facts, chain = _world()
    chain = _replace_user(chain, ALICE, _user(5_000, 5_000, 10**15 - 1, 7, HOLDER))
    result = compare(tables, facts, chain)
    assert result.differences == [Difference(ALICE, "balances.fee_vault_wei", 10**15, 10**15 - 1)]


def test_a_table_whose_last_sats_and_rbtc_disagree_breaks_the_invariant():
    tables, facts, chain = _world()
    balances = {
        **tables.balances,
        ALICE: BalanceRow(last_sats=5_000, rbtc_balance=4_000, fee_vault_wei=10**15, wrbtc_balance=7),
    }
    tables = TableState(balances, tables.participants, tables.burns, 4_000, tables.fee_vault_total)
    result = compare(tables, facts, chain)
    assert set(result.differences) == {
        Difference(ALICE, "balances.rbtc_balance", 4_000, 5_000),
        Difference(ALICE, TABLE_INVARIANT, 5_000, 4_000),
        Difference("global", SUPPLY, 4_000, 5_000),
    }


def test_a_chain_whose_last_sats_and_balance_disagree_is_reported_as_such():
    tables, facts, chain = _world()
    chain = _replace_user(chain, ALICE, _user(5_001, 5_000, 10**15, 7, HOLDER))
    assert set(compare(tables, facts, chain).differences) == {
        Difference(ALICE, "balances.last_sats", 5_000, 5_001),
        Difference(ALICE, CHAIN_INVARIANT, 5_001, 5_000),
    }


def test_missing_and_stray_rows_are_one_difference_each():
    tables, facts, chain = _world()
    stray = ParticipantRow(1, 9, 0, 0, 0, JOIN, JOIN, 0, False)
    tables = TableState(
        balances={k: v for k, v in tables.balances.items() if k != CAROL}
        | {STRAY: BalanceRow(last_sats=0, rbtc_balance=0, fee_vault_wei=0, wrbtc_balance=0)},
        participants={BOB: stray},
        burns={},
        rbtc_total=tables.rbtc_total,
        fee_vault_total=10**15,
    )
    chain = _replace_user(chain, STRAY, _user(0, 0, 0))
    result = compare(tables, facts, chain)
    assert set(result.differences) == {
        Difference(CAROL, "balances.(row)", "absent", "present"),
        Difference(STRAY, "balances.(row)", "present", "absent"),
        Difference(ALICE, "yield_scales_participants.(row)", "absent", "present"),
        Difference(BOB, "yield_scales_participants.(row)", "present", "absent"),
        Difference(f"{BURN_KEY[0]}:{BURN_KEY[1]}", "emergency_burns.(row)", "absent", "present"),
        Difference("global", VAULT_ETH, 10**15, 3 * 10**15),
        Difference("global", BURN_COUNT, 0, 1),
    }


def test_a_user_with_zero_state_needs_no_row():
    tables, facts, chain = _world()
    dave = "0x" + "d" * 40
    chain = _replace_user(chain, dave, _user(0, 0, 0))
    assert compare(tables, LogFacts(facts.addresses | {dave}, facts.burns), chain).differences == []


def test_every_participant_column_is_compared():
    tables, facts, chain = _world()
    other = ParticipantRow(1, 1, 4_999, 1, 13, JOIN + 1, ACTIVE + 1, 2, True)
    chain = _replace_user(chain, ALICE, _user(5_000, 5_000, 10**15, 7, other))
    found = {
        d.column.split(".", 1)[1]: (d.table_value, d.chain_value) for d in compare(tables, facts, chain).differences
    }
    assert found == {
        "participant_type": (0, 1),
        "virtual_usdt": (0, 1),
        "rbtc_contributed": (5_000, 4_999),
        "yield_earned": (0, 1),
        "yield_claimed": (12, 13),
        "joined_at": (JOIN, JOIN + 1),
        "last_activity_at": (ACTIVE, ACTIVE + 1),
        "loyalty_tier": (0, 2),
        "is_disputed": (False, True),
    }


def test_a_burn_row_that_differs_from_its_log_names_the_column():
    tables, facts, chain = _world()
    wrong = BurnRow(BURN.block_number, BURN.timestamp, BURN.user_address, 2_999, BURN.reason)
    tables = TableState(
        tables.balances, tables.participants, {BURN_KEY: wrong}, tables.rbtc_total, tables.fee_vault_total
    )
    assert compare(tables, facts, chain).differences == [
        Difference(f"{BURN_KEY[0]}:{BURN_KEY[1]}", "emergency_burns.burned_amount", 2_999, 3_000)
    ]


def test_without_getters_the_columns_are_listed_as_not_checked():
    tables, facts, chain = _world()
    users = {
        u: UserChainState(s.last_sats, s.rbtc_balance, s.fee_vault_wei, s.wrbtc_balance, s.participant, None)
        for u, s in chain.users.items()
    }
    chain = ChainState(users, GlobalChainState(5_000, 3 * 10**15, None), 15, 3, "batch")
    tables = TableState(tables.balances, tables.participants, {}, tables.rbtc_total, tables.fee_vault_total)
    result = compare(tables, LogFacts(facts.addresses, {}), chain)
    assert result.differences == []
    unchecked = {u.column: u.reason for u in result.unchecked}
    assert "totalEmergencyBurns" in unchecked["count(emergency_burns)"]
    assert "isDisputed" in unchecked["yield_scales_participants.is_disputed"]
    assert BURN_COUNT not in result.columns_checked
    assert "yield_scales_participants.is_disputed" not in result.columns_checked


def test_only_the_users_asked_for_are_compared():
    tables, facts, chain = _world()
    chain = _replace_user(chain, CAROL, _user(0, 0, 1))
    assert compare(tables, facts, chain, users=[ALICE]).differences == []
    assert compare(tables, facts, chain, users=[CAROL]).differences == [
        Difference(CAROL, "balances.fee_vault_wei", 2 * 10**15, 1)
    ]


def test_differences_are_counted_by_column_most_first():
    diffs = [Difference(u, c, 1, 2) for u, c in ((ALICE, "b"), (BOB, "a"), (CAROL, "a"))]
    assert list(by_column(diffs).items()) == [("a", 2), ("b", 1)]
