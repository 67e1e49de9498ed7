"""The typed records that cross the pipeline's boundaries: fetch → decode → store → projections.

Records are plain dicts at run time (they serialise with orjson and cost nothing to build) with their keys and
value types declared here; a stage returns new records rather than mutating the ones it was given.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class LogPosition(TypedDict):
    """Where a log stands on chain, and its raw content (addresses lower-case, topics and data 0x-hex)."""

    block_number: int
    block_hash: str
    tx_hash: str
    tx_index: int
    log_index: int
    address: str
    topics: list[str]
    data: str


class RawLog(LogPosition):
    """A watched log as the node returned it, validated against the block headers. `block_timestamp` (seconds)
    is None until the log's own `blockTimestamp` or its block header gave it."""

    block_timestamp: int | None


# What a log keeps of its transaction's receipt (wei and gas as decimal strings; `to_role` names a watched
# contract the transaction was sent to).
TxFacts = TypedDict(
    "TxFacts",
    {"from": str, "to": str | None, "to_role": str | None, "gas_used": str, "gas_price": str | None, "status": int},
)


class DecodedLog(RawLog):
    """A raw log with what the ABIs say of it: the contract role and event name with its arguments (ints as
    decimal strings), or the reason it did not decode (`error` set; `event` and `args` are None); `tx` once
    its receipt was fetched."""

    role: str | None
    event: str | None
    args: dict[str, Any] | None
    error: str | None
    tx: NotRequired[TxFacts]


class Observation(TypedDict):
    """A fact no log carries (decoded calldata, an eth_call read), shaped like a decoded log and stored with the
    block it describes; `source` says where it came from. `log_index` places it after the log it explains,
    or at the block's end."""

    block_number: int
    block_hash: str
    block_timestamp: int
    tx_hash: str | None
    tx_index: int | None
    log_index: int
    address: str
    topics: list[str]
    data: str
    role: str
    event: str
    args: dict[str, Any]
    error: None
    source: str


class HandledLog(LogPosition):
    """A decoded log as a projection receives it: the projection engine passes only logs that decoded, of an
    event the projection handles, with their block time, and the observations of those events in chain order
    (`source` set; their `tx_hash` may be empty)."""

    block_timestamp: int
    role: str
    event: str
    args: dict[str, Any]
    error: None
    tx: NotRequired[TxFacts]
    source: NotRequired[str]
