"""The chain follower: moves the store forward along the canonical chain, one validated range at a time.

Below the node's finalized block it backfills large ranges; above it, it fetches every header, checks each
block's parent hash against the stored window, and on a mismatch walks back to the common ancestor and
appends one BlocksReverted event before the new canonical logs. A reorg that reaches the finalized part of
the chain is never repaired silently: it raises ReorgBelowFinality.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from indexer.chain.heads import HeadSignal
from indexer.chain.rpc import ChainMismatch, RpcClient, RpcError, RpcUnavailable
from indexer.decode.decoder import LogDecoder
from indexer.errors import ReorgBelowFinality
from indexer.fetch.fetcher import FetchedRange, Header, InconsistentResponse, LogFetcher
from indexer.follow.enrichment import Enricher
from indexer.follow.prefetch import RangePrefetcher
from indexer.records import DecodedLog, Observation
from indexer.store import db
from indexer.store.event_store import ConcurrentAppend, Cursor, CursorAdvance, EventStore
from indexer.store.events import BlocksReverted, LogsIngested
from indexer.store.replay_queue import ReplayRequest

log = structlog.get_logger("follower")


__all__ = ["ChainMismatch", "ChainTip", "Follower", "FollowerProgress", "ReplayRequest", "ReplayRequests"]

NO_FINALIZED_TAG_AFTER = 5  # consecutive null answers for 'finalized' before the node counts as lacking it


# Failures after which a queued replay request stays queued and is tried again.
RETRYABLE_REPLAY_ERRORS: tuple[type[BaseException], ...] = (
    RpcError,
    InconsistentResponse,
    ConcurrentAppend,
    *db.TRANSIENT_ERRORS,
)


class ReplayRequests(Protocol):
    """Where deliberate replays come from, and where their outcome goes."""

    def next(self) -> ReplayRequest | None:
        """The oldest request not done yet (it stays pending until `done` or `failed`)."""

    def done(self, request: ReplayRequest) -> None:
        """The replay needed nothing (the store ends before its block); a stored replay marks itself done."""

    def attempt_failed(self, request: ReplayRequest, error: str) -> None:
        """A transient failure: the request stays pending and is tried again; the error is shown to the waiter."""

    def failed(self, request: ReplayRequest, error: str) -> None:
        """The request cannot be performed; the waiting command reports the error."""

    def close(self) -> None:
        """Release what `next` holds between calls (the follower stops)."""


@dataclass
class ChainTip:
    head: int
    finalized: int


@dataclass
class FollowerProgress:
    """What the follower last did, for status, metrics and readiness."""

    head: int = -1
    finalized: int = -1
    indexed_block: int = -1
    indexed_hash: str | None = None
    events_appended: int = 0
    logs_appended: int = 0
    undecodable_logs: int = 0
    reorgs: int = 0
    last_error: str | None = None
    caught_up: bool = False


class Follower:
    """Follows one chain and appends its watched logs to the event store."""

    def __init__(
        self,
        *,
        chain_id: int,
        rpc: RpcClient,
        store: EventStore,
        fetcher: LogFetcher,
        decoder: LogDecoder,
        start_block: int,
        confirmations: int,
        use_finalized_tag: bool = True,
        poll_interval: float = 0.5,
        stop: threading.Event | None = None,
        on_append: Callable[[FollowerProgress, LogsIngested | BlocksReverted], None] | None = None,
        replay_requests: ReplayRequests | None = None,
        enricher: Enricher | None = None,
        heads: HeadSignal | None = None,
        prefetch: bool = True,
    ):
        self.chain_id = chain_id
        self.rpc = rpc
        self.store = store
        self.fetcher = fetcher
        self.ranges = RangePrefetcher(fetcher, enabled=prefetch)  # backfill: the next range in flight
        self.decoder = decoder
        self.start_block = start_block
        self.confirmations = confirmations
        self.use_finalized_tag = use_finalized_tag
        self.poll_interval = poll_interval
        self.stop = stop or threading.Event()
        self.on_append = on_append
        self.replay_requests = replay_requests
        self.enricher = enricher
        self.heads = heads  # wakes the idle wait when the node announces a block; polling stays the fallback
        self.progress = FollowerProgress()
        self.log = log.bind(chain=chain_id)
        self._finalized = -1  # never moves backwards within the process (nor below the stored cursor's)
        self._finalized_nulls = 0  # consecutive answers without a finalized block
        self._tag_answered = False  # the node has named a finalized block at least once
        self._no_tag_decided = False

    # -- public -----------------------------------------------------------------------------------

    def check_chain(self) -> None:
        """Refuse to start against an endpoint of another chain (the client checks every other endpoint
        before its first use, too)."""
        served = self.rpc.chain_id()
        if served != self.chain_id:
            raise ChainMismatch(f"RPC serves chain id {served}, configuration says {self.chain_id}")

    def run(self, to_block: int | None = None) -> None:
        """Follow until stopped (or until `to_block` is stored); transient RPC failures are retried."""
        try:
            self._run(to_block)
        finally:
            self.ranges.close()
            if self.replay_requests is not None:
                self.replay_requests.close()

    def _run(self, to_block: int | None) -> None:
        cursor = self._reload_cursor()
        while not self.stop.is_set():
            try:
                cursor = self._maybe_replay(cursor)
                cursor, moved = self.step(cursor, to_block)
                self.progress.last_error = None
                if to_block is not None and not moved and cursor.indexed_block >= to_block:
                    return
            except (InconsistentResponse, RpcError) as exc:
                self.ranges.discard()
                if isinstance(exc, RpcUnavailable) and self.stop.is_set():
                    return
                self.progress.last_error = str(exc)
                self.log.warning("follower round failed, retrying", error=str(exc), block=cursor.indexed_block + 1)
                self.stop.wait(min(5.0, self.poll_interval * 2))
                continue
            except ConcurrentAppend as exc:
                self.log.warning("stream moved under the follower, reloading cursor", error=str(exc))
                self.ranges.discard()
                if self.enricher is not None:
                    self.enricher.reset()
                cursor = self._reload_cursor()
                continue
            except db.TRANSIENT_ERRORS as exc:
                self.progress.last_error = f"database: {exc}"
                self.log.warning("database unavailable, retrying", error=db.first_line(exc))
                self.ranges.discard()
                self.stop.wait(1.0)
                self.store.try_recover()
                cursor = self._reload_cursor()
                continue
            if not moved:
                if self.heads is not None:
                    self.heads.wait(self.poll_interval)
                else:
                    self.stop.wait(self.poll_interval)

    def _reload_cursor(self) -> Cursor:
        """The cursor as committed, waiting (with backoff) until the database answers again."""
        delay = 0.5
        while True:
            try:
                cursor = self.store.cursor(self.chain_id, self.start_block)
                self._finalized = max(self._finalized, cursor.finalized_block)
                self._publish_cursor(cursor)
                return cursor
            except db.TRANSIENT_ERRORS as exc:
                if self.stop.is_set():
                    raise
                self.log.warning("database still unavailable", error=db.first_line(exc))
                self.stop.wait(delay)
                delay = min(10.0, delay * 2)
                self.store.try_recover()

    def step(self, cursor: Cursor, to_block: int | None = None) -> tuple[Cursor, bool]:
        """Do one unit of work: append one range, or handle a reorg; return the new cursor and whether it moved."""
        tip = self.tip()
        self.progress.head, self.progress.finalized = tip.head, tip.finalized
        target = tip.head if to_block is None else min(tip.head, to_block)
        start = cursor.indexed_block + 1
        if start > target:
            self.progress.caught_up = True
            reverted = self._check_tip(cursor, tip)
            return (reverted, True) if reverted is not None else (cursor, False)
        self.progress.caught_up = False
        backfill = start <= tip.finalized
        end = min(target, tip.finalized) if backfill else target
        fetched = self.ranges.fetch(start, end, all_headers=not backfill)
        # Checked in both modes: finality may have moved past the cursor while the blocks under it changed.
        if cursor.indexed_hash is not None and fetched.headers[start].parent_hash != cursor.indexed_hash:
            return self._revert_to_ancestor(cursor, tip, reason="reorg"), True
        if backfill and fetched.to_block < end:
            self.ranges.ahead(fetched.to_block + 1, end)
        return self._append_range(cursor, fetched, tip, window=not backfill), True

    def tip(self) -> ChainTip:
        """The node's head and finalized block.

        Finality never moves backwards and never follows a single odd answer: a null (or refused) answer for
        the 'finalized' tag keeps the last finalized block; only after NO_FINALIZED_TAG_AFTER such answers in a
        row from a node that never named one does the follower use head - confirmations instead, and it keeps
        asking, so a node that starts answering is followed again (still never backwards)."""
        if not self.use_finalized_tag:
            head = int(self.rpc.call("eth_blockNumber", []), 16)
            return self._tip(head, head - self.confirmations)
        head_raw, final_raw = self._ask_finalized()
        head = int(head_raw, 16)
        if isinstance(final_raw, dict) and final_raw.get("number"):
            self._finalized_nulls = 0
            if self._no_tag_decided:
                self.log.info("node answers the 'finalized' block tag again; following it")
            self._tag_answered, self._no_tag_decided = True, False
            return self._tip(head, min(head, int(final_raw["number"], 16)))
        self._finalized_nulls += 1
        if not self._tag_answered and self._finalized_nulls >= NO_FINALIZED_TAG_AFTER:
            if not self._no_tag_decided:
                self.log.warning(
                    "node has no 'finalized' block tag; using confirmation depth",
                    depth=self.confirmations,
                    answers=self._finalized_nulls,
                )
                self._no_tag_decided = True
            return self._tip(head, head - self.confirmations)
        self.log.info("no finalized block in this answer; keeping the last one", finalized=self._finalized)
        return self._tip(head, self._finalized)

    def _ask_finalized(self) -> tuple[str, object]:
        """(head, finalized block or None) in one batch; a refused 'finalized' tag counts as no answer."""
        try:
            head_raw, final_raw = self.rpc.batch(
                [("eth_blockNumber", []), ("eth_getBlockByNumber", ["finalized", False])]
            )
            return head_raw, final_raw
        except RpcError as exc:
            if exc.retryable:
                raise
        return self.rpc.call("eth_blockNumber", []), None

    def _tip(self, head: int, finalized: int) -> ChainTip:
        self._finalized = max(self._finalized, min(head, finalized))
        return ChainTip(head, min(head, self._finalized))

    def replay_from(self, cursor: Cursor, from_block: int, request_id: int | None = None) -> Cursor:
        """A deliberate replay: revert blocks >= from_block and re-ingest from there. With `request_id`, the
        replay request is marked done in the same transaction that stores the revert."""
        from_block = max(from_block, self.start_block)
        if from_block > cursor.indexed_block:
            return cursor
        parent_hash = None
        if from_block - 1 >= self.start_block:
            raw = self.rpc.call("eth_getBlockByNumber", [hex(from_block - 1), False])
            parent_hash = raw["hash"] if raw else None
        window = self.store.window(self.chain_id)
        event = BlocksReverted(
            chain_id=self.chain_id,
            from_block=from_block,
            to_block=cursor.indexed_block,
            reason="replay",
            orphaned=[[n, h] for n, (h, _) in sorted(window.items()) if n >= from_block],
        )
        advance = CursorAdvance(
            0,
            0,
            from_block - 1,
            parent_hash,
            cursor.finalized_block,
            drop_blocks_from=from_block,
            replay_request=request_id,
        )
        self.ranges.discard()
        cursor = self.store.append(cursor, [event], advance)
        if self.enricher is not None:
            self.enricher.reset()
        self.log.warning("replay: blocks reverted for re-ingestion", from_block=from_block, to_block=event.to_block)
        self._announce(cursor, event)
        return cursor

    # -- internals --------------------------------------------------------------------------------

    def _maybe_replay(self, cursor: Cursor) -> Cursor:
        """Perform the oldest queued replay request; it is marked done only once its revert is stored."""
        if self.replay_requests is None:
            return cursor
        request = self.replay_requests.next()
        if request is None:
            return cursor
        try:
            moved = self.replay_from(cursor, request.from_block, request.id)
        except RETRYABLE_REPLAY_ERRORS as exc:
            self.replay_requests.attempt_failed(request, f"{type(exc).__name__}: {db.first_line(exc)}")
            raise
        except Exception as exc:
            self.replay_requests.failed(request, f"{type(exc).__name__}: {db.first_line(exc)}")
            raise
        if moved is cursor:
            self.replay_requests.done(request)
        return moved

    def _append_range(self, cursor: Cursor, fetched: FetchedRange, tip: ChainTip, *, window: bool) -> Cursor:
        logs = [self.decoder.decode_log(raw) for raw in fetched.logs]
        undecodable = 0
        for entry in logs:
            if entry["error"]:
                undecodable += 1
                self.log.warning(
                    "undecodable log kept",
                    block=entry["block_number"],
                    block_hash=entry["block_hash"],
                    tx=entry["tx_hash"],
                    log_index=entry["log_index"],
                    error=entry["error"],
                )
        observations: list[Observation] = []
        if self.enricher is not None:
            logs, observations = self.enricher.enrich(fetched, logs, self.store, self.chain_id, tip.head)
        last = fetched.last
        events = [
            LogsIngested(
                chain_id=self.chain_id,
                from_block=first,
                to_block=last_block,
                to_hash=last.hash if last_block == fetched.to_block else None,
                finalized=tip.finalized,
                head=tip.head,
                logs=chunk,
                observations=[o for o in observations if first <= o["block_number"] <= last_block],
                decoded_with=self.decoder.fingerprint,
            )
            for first, last_block, chunk in split_by_block(logs, fetched.from_block, fetched.to_block)
        ]
        if observations and not events:
            events = [
                LogsIngested(
                    chain_id=self.chain_id,
                    from_block=fetched.from_block,
                    to_block=fetched.to_block,
                    to_hash=last.hash,
                    finalized=tip.finalized,
                    head=tip.head,
                    logs=[],
                    observations=observations,
                    decoded_with=self.decoder.fingerprint,
                )
            ]
        # Near the head every header joins the window; after a backfill range, its last block does, so a reorg
        # right above the finalized block still finds its common ancestor.
        headers = fetched.headers.values() if window else [last]
        add = [(h.number, h.hash, h.parent_hash) for h in headers]
        advance = CursorAdvance(
            0,
            0,
            fetched.to_block,
            last.hash,
            tip.finalized,
            add_blocks=add,
            head=tip.head,
            logs=len(logs),
            undecodable=undecodable,
            indexed_timestamp=last.timestamp,
        )
        cursor = self.store.append(cursor, events, advance)
        self.log.info(
            "blocks appended",
            from_block=fetched.from_block,
            block=fetched.to_block,
            block_hash=last.hash,
            logs=len(logs),
            finalized=tip.finalized,
            head=tip.head,
        )
        self.progress.logs_appended += len(logs)
        self.progress.undecodable_logs += undecodable
        self.progress.events_appended += len(events)
        if events:
            self._announce(cursor, events[-1])
        else:
            self._publish_cursor(cursor)
        return cursor

    def _check_tip(self, cursor: Cursor, tip: ChainTip) -> Cursor | None:
        """At the head: is our last block still canonical? (Catches reorgs while stopped, and shorter forks.)"""
        if cursor.indexed_hash is None or cursor.indexed_block <= cursor.finalized_block:
            return None
        probe = min(cursor.indexed_block, tip.head)
        known: str | None
        if probe == cursor.indexed_block:
            known = cursor.indexed_hash  # the usual case at the head: no need to read the window
        else:
            known = self.store.window(self.chain_id).get(probe, (None,))[0]
        if known is None:
            return None
        raw = self.rpc.call("eth_getBlockByNumber", [hex(probe), False])
        if raw is None:
            return None  # the node is behind or syncing: not a reorg
        if raw["hash"] == known:
            return None
        return self._revert_to_ancestor(cursor, tip, reason="reorg")

    def _revert_to_ancestor(self, cursor: Cursor, tip: ChainTip, *, reason: str) -> Cursor:
        self.ranges.discard()
        window = self.store.window(self.chain_id)
        number = cursor.indexed_block
        orphaned: list[list[Any]] = []
        ancestor: Header | None = None
        while True:
            known = window.get(number)
            if known is None:
                break  # beyond the stored window: nothing to compare with
            raw = self.rpc.call("eth_getBlockByNumber", [hex(number), False])
            if raw is not None and raw["hash"] == known[0]:
                ancestor = Header.from_rpc(raw)
                break
            if number <= cursor.finalized_block:
                break
            orphaned.append([number, known[0]])
            number -= 1
        if ancestor is None:
            message = (
                f"chain {self.chain_id} reorganised at or below block {number}, which the indexer treated as final "
                f"(finalized {cursor.finalized_block}); refusing to rewrite final history"
            )
            self.progress.last_error = message
            raise ReorgBelowFinality(message)
        event = BlocksReverted(
            chain_id=self.chain_id,
            from_block=ancestor.number + 1,
            to_block=cursor.indexed_block,
            reason=reason,
            orphaned=sorted(orphaned),
        )
        advance = CursorAdvance(
            0, 0, ancestor.number, ancestor.hash, cursor.finalized_block, drop_blocks_from=ancestor.number + 1
        )
        cursor = self.store.append(cursor, [event], advance)
        if self.enricher is not None:
            self.enricher.reset()
        self.progress.reorgs += 1
        self.log.warning(
            "reorg: blocks reverted",
            chain=self.chain_id,
            block=ancestor.number,
            block_hash=ancestor.hash,
            depth=event.to_block - ancestor.number,
            head=tip.head,
        )
        self._announce(cursor, event)
        return cursor

    def _publish_cursor(self, cursor: Cursor) -> None:
        self.progress.indexed_block = cursor.indexed_block
        self.progress.indexed_hash = cursor.indexed_hash

    def _announce(self, cursor: Cursor, event: LogsIngested | BlocksReverted) -> None:
        self._publish_cursor(cursor)
        if self.on_append:
            self.on_append(self.progress, event)


MAX_LOGS_PER_EVENT = 1000


def split_by_block(
    logs: list[DecodedLog], from_block: int, to_block: int, limit: int = MAX_LOGS_PER_EVENT
) -> list[tuple[int, int, list[DecodedLog]]]:
    """Cut a range's logs into contiguous (first, last, logs) pieces of about `limit` logs, never inside a block."""
    pieces: list[tuple[int, int, list[DecodedLog]]] = []
    current: list[DecodedLog] = []
    first = from_block
    for entry in logs:
        if len(current) >= limit and entry["block_number"] != current[-1]["block_number"]:
            pieces.append((first, entry["block_number"] - 1, current))
            first, current = entry["block_number"], []
        current.append(entry)
    if current:
        pieces.append((first, to_block, current))
    return pieces
