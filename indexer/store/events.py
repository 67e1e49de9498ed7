"""The events the store holds, and how they are written to and read from eventsourcing's stored events.

All events of one chain form one stream (one eventsourcing aggregate, id derived from the chain id), so the
stream version gives optimistic concurrency: a second writer, or a retried append, collides on the primary
key instead of duplicating logs. Global order is the notification id.

Logs are `DecodedLog` records (indexer/records.py): raw fields plus role, event, args and error, and `tx`
(from, to, to_role, gas_used, gas_price, status of the transaction's receipt) when receipts are fetched.
Observations (facts no log carries: decoded calldata, eth_call reads) have the same shape plus `source`,
and belong to the LogsIngested of the block they describe, so a revert of that block reverts them too.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from eventsourcing.persistence import StoredEvent

from indexer.records import DecodedLog, Observation

_STREAM_NAMESPACE = uuid.UUID("6f1f3c1e-2a0e-4d44-9a53-3a4c8e0b7d21")
LOGS_INGESTED = "rbtc.LogsIngested/v1"
BLOCKS_REVERTED = "rbtc.BlocksReverted/v1"


def stream_id(chain_id: int) -> uuid.UUID:
    """The aggregate id of a chain's event stream."""
    return uuid.uuid5(_STREAM_NAMESPACE, f"chain:{chain_id}")


@dataclass
class LogsIngested:
    """Every watched log of the canonical blocks from_block..to_block (whole blocks, in log order)."""

    chain_id: int
    from_block: int
    to_block: int
    to_hash: str | None
    finalized: int
    head: int
    logs: list[DecodedLog]
    observed_at: float = field(default_factory=time.time)
    observations: list[Observation] = field(default_factory=list)
    decoded_with: str = ""  # the fingerprint of the decoder that decoded `logs` ("" in events stored before it)


@dataclass
class BlocksReverted:
    """Blocks from_block..to_block are no longer canonical (a reorg, or a deliberate replay)."""

    chain_id: int
    from_block: int
    to_block: int
    reason: str
    orphaned: list[list[Any]] = field(default_factory=list)  # [number, hash] of known orphaned blocks
    observed_at: float = field(default_factory=time.time)


ChainEvent = LogsIngested | BlocksReverted
_TOPICS: dict[str, type] = {LOGS_INGESTED: LogsIngested, BLOCKS_REVERTED: BlocksReverted}
_TOPIC_OF: dict[type, str] = {v: k for k, v in _TOPICS.items()}


def encode(event: ChainEvent, version: int) -> StoredEvent:
    """A stored event at the given stream version."""
    return StoredEvent(
        originator_id=stream_id(event.chain_id),
        originator_version=version,
        topic=_TOPIC_OF[type(event)],
        state=orjson.dumps(event),  # orjson serialises dataclasses natively, without asdict's deep copy
    )


def decode(topic: str, state: bytes) -> ChainEvent | None:
    """The event behind a stored event, or None for a topic this version does not know."""
    cls = _TOPICS.get(topic)
    if cls is None:
        return None
    event: ChainEvent = cls(**orjson.loads(state))
    return event
