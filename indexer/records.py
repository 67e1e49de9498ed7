"""The typed records that cross the pipeline's boundaries: fetch → decode → store → projections.

Records are plain dicts at run time (they serialise with orjson and cost nothing to build) with their keys and
value types declared here; a stage returns new records rather than mutating the ones it was given.
"""

from __future__ import annotations

from typing import Any, TypedDict


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


class DecodedLog(RawLog):
    """A raw log with what the ABIs say of it: the contract role and event name with its arguments (ints as
    decimal strings), or the reason it did not decode (`error` set; `event` and `args` are None)."""

    role: str | None
    event: str | None
    args: dict[str, Any] | None
    error: str | None


class HandledLog(LogPosition):
    """A decoded log as a projection receives it: the projection engine passes only logs that decoded, of an
    event the projection handles, with their block time."""

    block_timestamp: int
    role: str
    event: str
    args: dict[str, Any]
    error: None
