"""The comparison itself: tables against chain state and the chain's logs, every difference listed.

Pure functions over typed records (no database, no RPC). A row the tables lack but the chain shows, or a row
the tables hold but the chain does not know, is one `(row)` difference (its columns are not compared one by
one); every other difference names one column. Invariants name both sides of the equation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields

from indexer.verify.records import (
    BurnRow,
    ChainState,
    Difference,
    LogFacts,
    ParticipantRow,
    TableState,
    Unchecked,
    Value,
)

PRESENT, ABSENT = "present", "absent"
BALANCE_COLUMNS = ("last_sats", "rbtc_balance", "fee_vault_wei", "wrbtc_balance")
PARTICIPANT_COLUMNS = tuple(f.name for f in fields(ParticipantRow))
BURN_COLUMNS = tuple(f.name for f in fields(BurnRow))
# Column names hold no spaces, so a difference line splits on whitespace into its four fields. For the global
# figures the left side is the tables' and the right side the chain's; for invariants both sides are one source's.
TABLE_INVARIANT = "invariant:balances.last_sats=balances.rbtc_balance"
CHAIN_INVARIANT = "invariant:OracleAggregator.lastSats=RBTCSynth.balanceOf"
SUPPLY = "sum(balances.rbtc_balance)=RBTCSynth.totalSupply"
VAULT_ETH = "sum(balances.fee_vault_wei)=FeeVault.ethBalance"
BURN_COUNT = "count(emergency_burns)=OracleAggregator.totalEmergencyBurns"

NO_GETTER: tuple[Unchecked, ...] = (
    *(
        Unchecked(f"balances.{c}", "no getter: the contracts keep no per-user sync history")
        for c in ("last_sync_block", "last_sync_time", "last_sync_delta", "last_sync_fee_wei")
    ),
    Unchecked("balances.updated_block", "indexer bookkeeping, not chain state"),
    Unchecked("yield_scales_participants.is_active", "no getter: participants(address) has no active flag"),
    Unchecked("yield_scales_participants.updated_block", "indexer bookkeeping, not chain state"),
    Unchecked("transactions.*", "one row per log; no getter holds past transactions"),
    Unchecked("oracle_operations_log.*", "one row per log; no getter holds past oracle operations"),
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """What a comparison found and what it covered."""

    differences: list[Difference]
    columns_checked: list[str]
    unchecked: list[Unchecked]


def compare(tables: TableState, facts: LogFacts, chain: ChainState, users: Collection[str] | None = None) -> Comparison:
    """Every difference between the tables and the chain for `users` (None: every user, plus stray rows)."""
    wanted = set(chain.users) if users is None else set(users)
    differences: list[Difference] = []
    for user in sorted(wanted):
        state = chain.users[user]
        differences += _balance(
            user, tables, facts, state.last_sats, state.rbtc_balance, state.fee_vault_wei, state.wrbtc_balance
        )
        differences += _participant(user, tables.participants.get(user), state.participant, state.is_disputed)
    differences += _burns(tables.burns, facts.burns, None if users is None else wanted)
    differences += _globals(tables, chain)
    checked = (
        [f"balances.{c}" for c in BALANCE_COLUMNS]
        + [f"yield_scales_participants.{c}" for c in PARTICIPANT_COLUMNS if c != "is_disputed" or _has_dispute(chain)]
        + [f"emergency_burns.{c}" for c in BURN_COLUMNS]
        + [TABLE_INVARIANT, CHAIN_INVARIANT, SUPPLY, VAULT_ETH]
        + ([BURN_COUNT] if chain.globals.emergency_burn_count is not None else [])
    )
    unchecked = list(NO_GETTER)
    if chain.globals.emergency_burn_count is None:
        unchecked.append(Unchecked("count(emergency_burns)", "OracleAggregator answers no totalEmergencyBurns()"))
    if not _has_dispute(chain):
        unchecked.append(
            Unchecked(
                "yield_scales_participants.is_disputed", "the pool answers neither isDisputed nor disputedBalances"
            )
        )
    return Comparison(differences, checked, unchecked)


def by_column(differences: Iterable[Difference]) -> dict[str, int]:
    """How many differences each column has, most first."""
    counts: dict[str, int] = {}
    for d in differences:
        counts[d.column] = counts.get(d.column, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _has_dispute(chain: ChainState) -> bool:
    return any(s.is_disputed is not None for s in chain.users.values()) or not chain.users


def _differ(subject: str, column: str, table: Value, chain: Value) -> list[Difference]:
    return [] if table == chain else [Difference(subject, column, table, chain)]


def _balance(
    user: str,
    tables: TableState,
    facts: LogFacts,
    last_sats: int,
    rbtc: int,
    fee_wei: int,
    wrbtc: int,
) -> list[Difference]:
    row = tables.balances.get(user)
    chain_values = {"last_sats": last_sats, "rbtc_balance": rbtc, "fee_vault_wei": fee_wei, "wrbtc_balance": wrbtc}
    found = _differ(user, CHAIN_INVARIANT, last_sats, rbtc)
    if row is None:
        if any(chain_values.values()):
            found.append(Difference(user, "balances.(row)", ABSENT, PRESENT))
        return found
    if user not in facts.addresses:
        return found + [Difference(user, "balances.(row)", PRESENT, ABSENT)]
    for column in BALANCE_COLUMNS:
        found += _differ(user, f"balances.{column}", getattr(row, column), chain_values[column])
    found += _differ(user, TABLE_INVARIANT, row.last_sats, row.rbtc_balance)
    return found


def _participant(
    user: str, row: ParticipantRow | None, chain: ParticipantRow | None, disputed: bool | None
) -> list[Difference]:
    if row is None and chain is None:
        return []
    if row is None or chain is None:
        return [
            Difference(
                user,
                "yield_scales_participants.(row)",
                ABSENT if row is None else PRESENT,
                PRESENT if row is None else ABSENT,
            )
        ]
    found: list[Difference] = []
    for column in PARTICIPANT_COLUMNS:
        if column == "is_disputed" and disputed is None:
            continue
        found += _differ(user, f"yield_scales_participants.{column}", getattr(row, column), getattr(chain, column))
    return found


def _burns(
    table: dict[tuple[str, int], BurnRow], logs: dict[tuple[str, int], BurnRow], users: set[str] | None
) -> list[Difference]:
    found: list[Difference] = []
    for key in sorted(set(table) | set(logs)):
        row, log = table.get(key), logs.get(key)
        owner = (row or log).user_address  # type: ignore[union-attr]
        if users is not None and owner not in users:
            continue
        subject = f"{key[0]}:{key[1]}"
        if row is None or log is None:
            found.append(
                Difference(
                    subject,
                    "emergency_burns.(row)",
                    ABSENT if row is None else PRESENT,
                    PRESENT if row is None else ABSENT,
                )
            )
            continue
        for column in BURN_COLUMNS:
            found += _differ(subject, f"emergency_burns.{column}", getattr(row, column), getattr(log, column))
    return found


def _globals(tables: TableState, chain: ChainState) -> list[Difference]:
    g = chain.globals
    found = _differ("global", SUPPLY, tables.rbtc_total, g.rbtc_total_supply)
    found += _differ("global", VAULT_ETH, tables.fee_vault_total, g.fee_vault_eth_wei)
    if g.emergency_burn_count is not None:
        found += _differ("global", BURN_COUNT, len(tables.burns), g.emergency_burn_count)
    return found
