"""Runs projections over the event store: in order, in batches, exactly once, reorg-safe.

For each batch and each projection, one transaction writes the projection's tables and its tracking row
(position, highest finalized block seen, last block applied). Logs of blocks above the finalized block are
applied one block at a time with `rbtc.undo_block` set, so the journal trigger records row images; a
BlocksReverted event replays those images backwards. Logs that a later BlocksReverted orphaned are skipped
outright, which is what makes a rebuild from the store equal a build from the final canonical chain.
"""

from __future__ import annotations

import bisect
import select
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from itertools import chain, groupby
from typing import cast

import psycopg
import structlog
from psycopg import pq
from psycopg.rows import dict_row

from indexer.decode.decoder import LogDecoder
from indexer.errors import IndexerError
from indexer.records import DecodedLog
from indexer.store import events as ev
from indexer.store.event_store import EventStore
from indexer.store.status import write_caught_up, write_projection
from projections.models.base import ZERO_ADDRESS, Log, Projection

log = structlog.get_logger("projections")

Page = list[tuple[int, ev.ChainEvent | None]]  # stored events in notification order: (notification id, event)
Kinds = dict[int, dict[tuple[str, str], list[int]]]  # notification id -> (role, event) -> positions of its logs


class NeedsRebuild(IndexerError):
    """A revert reaches blocks this projection applied as final: only a rebuild from the store can undo it."""

    def __init__(self, projection: str, from_block: int, final_block: int):
        super().__init__(
            f"projection {projection}: blocks from {from_block} were reverted, but it applied blocks up to "
            f"{final_block} as final (no undo journal left for them); rebuilding from the store"
        )
        self.projection = projection
        self.from_block = from_block


class RevertIndex:
    """Every BlocksReverted in the store: answers 'from which block is a log of notification n orphaned?'."""

    def __init__(self, store: EventStore):
        self.store = store
        self.ids: list[int] = []
        self.from_blocks: list[int] = []
        self._suffix_min: list[int] = []
        self.horizon = 0

    def refresh(self, upto: int) -> None:
        """Learn every revert with notification id <= upto (and whatever else is stored by now)."""
        if upto <= self.horizon:
            return
        latest = self.store.max_notification_id()
        for n in self.store.reverted_notifications_after(self.horizon, latest):
            event = ev.decode(n.topic, n.state)
            assert isinstance(event, ev.BlocksReverted)
            self.ids.append(n.id)
            self.from_blocks.append(event.from_block)
        self.horizon = max(latest, upto)
        self._suffix_min = list(self.from_blocks)
        for i in range(len(self._suffix_min) - 2, -1, -1):
            self._suffix_min[i] = min(self._suffix_min[i], self._suffix_min[i + 1])

    def orphaned_from(self, notification_id: int) -> int | None:
        """Lowest reverted block among reverts stored after this notification (None if none)."""
        i = bisect.bisect_right(self.ids, notification_id)
        return self._suffix_min[i] if i < len(self._suffix_min) else None

    def after(self, notification_id: int) -> list[tuple[int, int]]:
        """(id, from_block) of the reverts stored after a notification."""
        i = bisect.bisect_right(self.ids, notification_id)
        return list(zip(self.ids[i:], self.from_blocks[i:], strict=True))


@dataclass
class ProjectionPosition:
    """A projection's tracking row.

    `finalized_seen`: blocks at or below it are applied without (and pruned from) the undo journal.
    `applied_block`: the highest block whose logs the projection applied and has not undone since (an upper
    bound). A revert from block f can be undone from the journal unless f <= min(finalized_seen, applied_block).
    """

    projection: str
    notification_id: int
    finalized_seen: int
    indexed_block: int
    events_applied: int
    applied_block: int = -1

    def final_block(self) -> int:
        """The highest block whose applied logs no journal can undo any more (-1: none)."""
        return min(self.finalized_seen, self.applied_block)


def read_positions(conn: psycopg.Connection, names: Sequence[str]) -> dict[str, ProjectionPosition]:
    """The tracking rows of the named projections (those that have one)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT projection, notification_id, finalized_seen, indexed_block, events_applied, applied_block "
            "FROM projection_tracking WHERE projection = ANY(%s)",
            (list(names),),
        )
        return {r["projection"]: ProjectionPosition(**r) for r in cur.fetchall()}


class ProjectionApplier:
    """Applies the store's events to a set of projections, each from its own tracked position.

    `conn` is an autocommit connection whose search_path makes unqualified table names reach the projection's
    tables (the live schema, or a rebuild's shadow schema first); `journal_schema` holds the undo journal.
    With `lanes` (one more such connection per projection), the projections of a page are applied at once,
    each on its lane in a thread of its own, so that one projection's database work overlaps another's
    Python work; each still commits its tables with its own tracking row, and the next page waits for all.
    """

    def __init__(
        self,
        store: EventStore,
        conn: psycopg.Connection,
        projections: Sequence[Projection],
        *,
        journal_schema: str,
        table_schema: str,
        page_size: int = 50,
        write_status: bool = True,
        stop: threading.Event | None = None,
        on_batch: Callable[[str, ProjectionPosition, int, list[float]], None] | None = None,
        decoder: LogDecoder | None = None,
        lanes: Sequence[psycopg.Connection] = (),
    ):
        self.store = store
        self.decoder = decoder
        self.conn = conn
        self.projections = list(projections)
        if lanes and len(lanes) != len(self.projections):
            raise ValueError(f"{len(lanes)} lanes for {len(self.projections)} projections")
        # Each projection writes on its own lane when given one; otherwise all write on `conn`, one after another.
        self._writer = {p.name: lane for p, lane in zip(self.projections, lanes, strict=True)} if lanes else {}
        self.journal_schema = journal_schema
        self.table_schema = table_schema
        self.page_size = page_size
        self.write_status = write_status
        self.stop = stop or threading.Event()
        self.on_batch = on_batch
        self.reverts = RevertIndex(store)
        self.redecoded = 0  # stored LogsIngested events whose logs were decoded again (see _redecoded)
        with conn.transaction():
            for p in self.projections:
                conn.execute(
                    "INSERT INTO projection_tracking (projection) VALUES (%s) ON CONFLICT DO NOTHING", (p.name,)
                )

    def positions(self) -> dict[str, ProjectionPosition]:
        """Each projection's tracking row."""
        return read_positions(self.conn, [p.name for p in self.projections])

    def run_until_caught_up(self, stop_at: int | None = None) -> int:
        """Apply pages until no event is left (up to `stop_at`); return the number of stored events read.

        While one page is applied the next is read and parsed on another connection and thread (the store is
        append-only, so a page read early holds what it would hold later); it is used only if every projection
        then stands where that read began, and dropped otherwise."""
        total = 0
        with (
            ThreadPoolExecutor(1, thread_name_prefix="page-reader") as reader,
            ThreadPoolExecutor(max(1, len(self._writer)), thread_name_prefix="projection-lane") as lanes,
        ):
            ahead: tuple[int, Future[Page]] | None = None
            while not self.stop.is_set():
                low = self._low()
                if ahead is not None and ahead[0] == low:
                    page = ahead[1].result()
                else:
                    page = self._read_page(low, stop_at)
                ahead = None
                if not page:
                    return total
                if len(page) == self.page_size:  # a full page: more may follow
                    after = page[-1][0]
                    ahead = (after, reader.submit(self._read_page, after, stop_at))
                self._apply_events_of_page(page, lanes)
                total += len(page)
        return total

    def _read_page(self, after: int, stop_at: int | None) -> Page:
        """The next page of stored events after a notification id, parsed: (notification id, event)."""
        return [(n.id, ev.decode(n.topic, n.state)) for n in self.store.notifications(after, self.page_size, stop_at)]

    def _low(self) -> int:
        """The notification id the projection furthest behind has applied."""
        return min(t.notification_id for t in self.positions().values())

    def _apply_events_of_page(self, page: Page, lanes: ThreadPoolExecutor) -> None:
        self.reverts.refresh(page[-1][0])
        decoded = [(nid, self._redecoded(nid, event)) for nid, event in page]
        kinds = {nid: _by_kind(e.logs) for nid, e in decoded if isinstance(e, ev.LogsIngested)}
        if not self._writer:
            for projection in self.projections:
                self._apply_page(projection, decoded, kinds)
            return
        applying = [lanes.submit(self._apply_page, p, decoded, kinds) for p in self.projections]
        wait(applying)  # every lane finishes its transaction before an error (the first, in order) is raised
        for done in applying:
            done.result()

    def mark_caught_up(self, chain_id: int) -> None:
        """Projections that have applied every stored event are as current as the follower's cursor, even
        over blocks without logs (which produce no events): say so in sync_status."""
        if not self.write_status:
            return
        write_caught_up(self.conn, chain_id, [p.name for p in self.projections])
        # The tables reflect the cursor's block too: publish it (a new data version, nothing touched).
        self.conn.execute(
            "SELECT rbtc_publish(t.projection, c.indexed_block, c.indexed_hash, NULL, ARRAY[]::text[]) "
            "FROM follower_cursor AS c CROSS JOIN projection_tracking AS t "
            "LEFT JOIN read_versions AS v ON v.projection = t.projection "
            "WHERE c.chain_id = %s AND t.projection = ANY(%s) AND coalesce(v.block_number, -1) < c.indexed_block "
            "AND t.notification_id >= (SELECT coalesce(max(notification_id), 0) FROM stored_events)",
            (chain_id, [p.name for p in self.projections]),
        )

    def _redecoded(self, notification_id: int, event: ev.ChainEvent | None) -> ev.ChainEvent | None:
        """With a decoder: the event with every log decoded again from its raw topics and data (so a fixed
        ABI takes effect on a rebuild), except logs a later revert orphaned (never applied), and as stored when
        it was decoded by a decoder with the same fingerprint; without one, the event as stored."""
        if self.decoder is None or not isinstance(event, ev.LogsIngested):
            return event
        if event.decoded_with == self.decoder.fingerprint:
            return event  # decoded by a decoder that decodes every log alike: decoding again changes nothing
        self.redecoded += 1
        orphaned_from = self.reverts.orphaned_from(notification_id)
        logs = []
        for lg in event.logs:
            if orphaned_from is not None and lg["block_number"] >= orphaned_from:
                logs.append(lg)
                continue
            d = self.decoder.decode(lg["address"], lg["topics"], lg["data"])
            logs.append({**lg, "role": d.role, "event": d.event, "args": d.args, "error": d.error})
        return replace(event, logs=logs)

    def needing_rebuild(self) -> list[str]:
        """Projections that a revert stored after their position reaches below their undo window."""
        self.reverts.refresh(self.store.max_notification_id())
        return [name for name, state in self.positions().items() if self._stale_revert(state) is not None]

    def _stale_revert(self, state: ProjectionPosition) -> int | None:
        """The first block of a revert stored after `state`'s position that the journal cannot undo, if any.

        Logs that a later revert orphans are skipped when applied (whenever the revert is already stored), so a
        rebuild never applies them; only logs applied before their revert was stored count against it."""
        final = state.final_block()
        for _, from_block in self.reverts.after(state.notification_id):
            if from_block <= final:
                return from_block
        return None

    # -- one projection, one page, one transaction ----------------------------------------------------

    def _apply_page(
        self, projection: Projection, decoded: list[tuple[int, ev.ChainEvent | None]], kinds: Kinds
    ) -> None:
        conn = self._writer.get(projection.name, self.conn)
        with conn.transaction():
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "SELECT projection, notification_id, finalized_seen, indexed_block, events_applied, "
                    "applied_block FROM projection_tracking WHERE projection = %s FOR UPDATE",
                    (projection.name,),
                )
                row = cur.fetchone()
            assert row is not None
            state = ProjectionPosition(**row)
            todo = [(nid, e) for nid, e in decoded if nid > state.notification_id]
            if not todo:
                return
            stale = self._stale_revert(state)
            if stale is not None:
                raise NeedsRebuild(projection.name, stale, state.final_block())
            applied, latencies = self._apply_events(conn, projection, state, todo, kinds)
            state.notification_id = todo[-1][0]
            state.events_applied += applied
            conn.execute(
                "UPDATE projection_tracking SET notification_id = %s, finalized_seen = %s, indexed_block = %s, "
                "events_applied = %s, applied_block = %s, updated_at = now() WHERE projection = %s",
                (
                    state.notification_id,
                    state.finalized_seen,
                    state.indexed_block,
                    state.events_applied,
                    state.applied_block,
                    projection.name,
                ),
            )
            conn.execute(
                "DELETE FROM undo_journal WHERE table_schema = %s AND table_name = ANY(%s) AND block_number <= %s",
                (self.table_schema, list(projection.tables), state.finalized_seen),
            )
            if self.write_status:
                write_projection(conn, projection.name, state.indexed_block, state.events_applied)
                self._publish(conn, projection, state, todo, kinds)
        if self.on_batch:
            self.on_batch(projection.name, state, applied, latencies)

    def _apply_events(
        self,
        conn: psycopg.Connection,
        projection: Projection,
        state: ProjectionPosition,
        todo: list[tuple[int, ev.ChainEvent | None]],
        kinds: Kinds,
    ) -> tuple[int, list[float]]:
        final: list[Log] = []
        applied = 0
        latencies: list[float] = []

        def flush() -> None:
            if final:
                _set_undo_block(conn, None)
                projection.apply(conn, final)
                final.clear()

        for nid, event in todo:
            if isinstance(event, ev.LogsIngested):
                state.finalized_seen = max(state.finalized_seen, event.finalized)
                orphaned_from = self.reverts.orphaned_from(nid)
                logs = cast(list[Log], [event.logs[i] for i in _handled(kinds[nid], projection.handles)])
                if orphaned_from is not None:
                    logs = [lg for lg in logs if lg["block_number"] < orphaned_from]
                if logs:
                    state.applied_block = max(state.applied_block, max(lg["block_number"] for lg in logs))
                observed = [
                    cast(Log, o)
                    for o in event.observations
                    if (o["role"], o["event"]) in projection.handles
                    and (orphaned_from is None or o["block_number"] < orphaned_from)
                ]
                if observed:  # each observation right after the log (or at the end of the block) it describes
                    logs = sorted(logs + observed, key=lambda lg: (lg["block_number"], lg["log_index"], "source" in lg))
                for block, group in groupby(logs, key=lambda lg: lg["block_number"]):
                    if block <= state.finalized_seen:
                        final.extend(group)
                    else:
                        flush()
                        _set_undo_block(conn, block)
                        projection.apply(conn, list(group))
                applied += len(logs)
                state.indexed_block = max(state.indexed_block, event.to_block)
                latencies.append(event.observed_at)
            elif isinstance(event, ev.BlocksReverted):
                flush()
                conn.execute(
                    "SELECT rbtc_undo(%s, %s, %s, %s)",
                    (self.journal_schema, self.table_schema, list(projection.tables), event.from_block),
                )
                state.indexed_block = min(state.indexed_block, event.from_block - 1)
                state.applied_block = min(state.applied_block, event.from_block - 1)
        flush()
        _set_undo_block(conn, None)
        return applied, latencies

    def _publish(
        self,
        conn: psycopg.Connection,
        projection: Projection,
        state: ProjectionPosition,
        todo: list[tuple[int, ev.ChainEvent | None]],
        kinds: Kinds,
    ) -> None:
        """Record this commit's data version and block, and notify readers (inside the commit: they see the
        notification only once the rows are visible)."""
        block_hash: str | None = None
        reverted_from: int | None = None
        addresses: set[str] = set()
        for nid, event in todo:
            if isinstance(event, ev.LogsIngested):
                if event.to_block == state.indexed_block:
                    block_hash = event.to_hash
                for i in _handled(kinds[nid], projection.handles):
                    args = event.logs[i]["args"]
                    if args:
                        addresses.update(v.lower() for v in args.values() if isinstance(v, str) and len(v) == 42)
            elif isinstance(event, ev.BlocksReverted):
                block_hash = None
                reverted_from = event.from_block if reverted_from is None else min(reverted_from, event.from_block)
        addresses.discard(ZERO_ADDRESS)
        # The addresses travel as one comma-separated text: psycopg dumps a list element by element in Python.
        conn.execute(
            "SELECT rbtc_publish(%s, %s, %s, %s, string_to_array(%s, ','))",
            (
                projection.name,
                state.indexed_block,
                block_hash,
                reverted_from,
                None if reverted_from is not None else ",".join(sorted(addresses)),
            ),
        )


def _by_kind(logs: Sequence[DecodedLog]) -> dict[tuple[str, str], list[int]]:
    """The positions of the logs that decoded, by (role, event): each projection then visits only its own."""
    found: dict[tuple[str, str], list[int]] = {}
    for i, lg in enumerate(logs):
        if not lg["error"]:
            found.setdefault((cast(str, lg["role"]), cast(str, lg["event"])), []).append(i)
    return found


def _handled(by_kind: dict[tuple[str, str], list[int]], handles: frozenset[tuple[str, str]]) -> list[int]:
    """The positions, in log order, of the logs of the kinds a projection handles."""
    lists = [by_kind[kind] for kind in handles if kind in by_kind]
    if len(lists) == 1:
        return lists[0]
    return sorted(chain.from_iterable(lists))


def _set_undo_block(conn: psycopg.Connection, block: int | None) -> None:
    """Journal this transaction's row changes under `block` (None: not at all, the block is final)."""
    conn.execute("SELECT set_config('rbtc.undo_block', %s, true)", ("" if block is None else str(block),))


def wait_for_events(conn: psycopg.Connection, timeout: float) -> bool:
    """Block until a NOTIFY arrives on `conn` (which must LISTEN already) or the timeout passes.

    Waits on the socket itself rather than with `Connection.notifies`, so that a connection the server has
    closed raises OperationalError at once instead of leaving the worker waiting.
    """
    ready, _, _ = select.select([conn.fileno()], [], [], timeout)
    if not ready:
        return False
    conn.pgconn.consume_input()
    notified = False
    while conn.pgconn.notifies() is not None:
        notified = True
    if not notified:
        # Readable without a notification: the server sent an error or closed the connection; reading
        # again raises OperationalError in that case.
        conn.pgconn.consume_input()
    if conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the notification connection was closed")
    return notified
