"""Typed records that cross verify's module boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# A value as compared: an integer (amounts, times in unix seconds, types, tiers), a bool, text, or None for
# "no row" / "no value".
Value = int | bool | str | None


@dataclass(frozen=True, slots=True)
class PinnedBlock:
    """The block a run compares at: the tables reflect exactly this block, the chain is read by its hash."""

    number: int
    hash: str
    how: str  # "at-indexed", "block N", "latest-consistent"


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """One `balances` row, as compared."""

    last_sats: int
    rbtc_balance: int
    wrbtc_balance: int
    fee_vault_wei: int


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    """One `yield_scales_participants` row, as compared (times in unix seconds)."""

    participant_type: int
    virtual_usdt: int
    rbtc_contributed: int
    yield_earned: int
    yield_claimed: int
    joined_at: int
    last_activity_at: int
    loyalty_tier: int
    is_disputed: bool


@dataclass(frozen=True, slots=True)
class BurnRow:
    """One `emergency_burns` row (or one EmergencyBurn log), keyed by (tx_hash, log_index)."""

    block_number: int
    timestamp: int
    user_address: str
    burned_amount: int
    reason: str


@dataclass(frozen=True, slots=True)
class TableState:
    """What the tables say at the pinned block, read in one snapshot."""

    balances: dict[str, BalanceRow]
    participants: dict[str, ParticipantRow]
    burns: dict[tuple[str, int], BurnRow]
    rbtc_total: int  # sum of balances.rbtc_balance over every row
    fee_vault_total: int  # sum of balances.fee_vault_wei over every row


@dataclass(frozen=True, slots=True)
class LogFacts:
    """What the event store's canonical logs up to the pinned block say (the chain's own logs)."""

    addresses: frozenset[str]  # every address a watched log names as an argument
    burns: dict[tuple[str, int], BurnRow]  # every aggregator EmergencyBurn log
    upto_notification: int = 0  # the stored events folded in: notification ids up to this one


@dataclass(frozen=True, slots=True)
class UserChainState:
    """One user's on-chain state at the pinned block."""

    last_sats: int
    rbtc_balance: int
    fee_vault_wei: int
    wrbtc_balance: int
    participant: ParticipantRow | None  # None: not a participant (joinedAt = 0)
    is_disputed: bool | None  # None: the pool answers no dispute getter


@dataclass(frozen=True, slots=True)
class GlobalChainState:
    """Contract-wide figures at the pinned block; None where the contract has no getter."""

    rbtc_total_supply: int
    fee_vault_eth_wei: int
    emergency_burn_count: int | None


@dataclass(frozen=True, slots=True)
class ChainState:
    """Everything read from the chain for one run."""

    users: dict[str, UserChainState]
    globals: GlobalChainState
    calls: int  # getter calls made
    requests: int  # JSON-RPC requests sent for them
    method: Literal["multicall", "batch"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement: `subject` is a user address, a row key or 'global'."""

    subject: str
    column: str  # "table.column", "table.(row)" or an invariant's name
    table_value: Value
    chain_value: Value


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A column verify cannot check, and why."""

    column: str
    reason: str


@dataclass(slots=True)
class VerifyResult:
    """The outcome of one run."""

    block: PinnedBlock
    users_checked: int
    columns_checked: list[str]
    differences: list[Difference]
    unchecked: list[Unchecked]
    seconds: float = 0.0
    chain_calls: int = 0
    chain_requests: int = 0
    method: str = ""
    by_column: dict[str, int] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not self.differences
