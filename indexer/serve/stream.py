"""Live push as Server-Sent Events: `GET /api/realtime/stream?address=…&topics=…`.

- On connect, the current state of every requested topic (one snapshot). With `Last-Event-ID`, only the topics
  whose projections committed changes touching the address since that event (from `read_changes`), so nothing is
  lost across a reconnect; everything when that history no longer reaches back, or when blocks were reverted since.
- After every projection commit that may touch the address, the new state of the affected topics, tagged
  `id: <block>:<version>`. A commit that reverted blocks first sends a `reorg` event, then fresh state.
- One background task reads each round of changes once per address (not once per client) in one snapshot.
- Each client holds at most one pending event per topic (the newest state wins); a client that lets more than
  `queue_limit` events be overwritten without reading is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from indexer.serve import routes
from indexer.serve.hub import Change, PushHub
from indexer.serve.indexer_status import read_indexer_status
from indexer.serve.shapes import dumps
from indexer.serve.snapshot import ReadDatabase, Snapshot

log = structlog.get_logger("serve.stream")

TopicReader = Callable[[Snapshot, str | None, routes.Settings], Awaitable[Any]]


def _by_address(fn: Callable[[Snapshot, routes.Params, routes.Settings], Awaitable[Any]], **extra: Any) -> TopicReader:
    async def read(snap: Snapshot, address: str | None, settings: routes.Settings) -> Any:
        return await fn(snap, {"address": address, **extra}, settings)

    return read


async def _indexer(snap: Snapshot, address: str | None, settings: routes.Settings) -> Any:
    return await read_indexer_status(snap)


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    projections: tuple[str, ...]
    read: TopicReader
    per_address: bool = True


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("balances", (routes.BALANCES,), _by_address(routes.read_balance)),
        Topic("transactions", (routes.TRANSACTIONS,), _by_address(routes.read_transactions, limit=10, offset=0)),
        Topic("emergency-burns", (routes.BURNS, routes.TRANSACTIONS), _by_address(routes.read_emergency_burns)),
        Topic("yield-status", (routes.YIELD, routes.BALANCES), _by_address(routes.read_yield_status)),
        Topic("sync-status", (routes.BALANCES,), _by_address(routes.read_sync_status)),
        Topic("indexer", routes.ALL_PROJECTIONS, _indexer, per_address=False),
    )
}
COALESCE_SECONDS = 0.003
OPENINGS_KEPT = 50_000
REPLICA_RECHECK = 0.01
REPLICA_PATIENCE = 30.0
KEEPALIVE = b": keepalive\n\n"
DEFAULT_TOPICS = ("balances", "transactions", "emergency-burns", "yield-status", "sync-status")


def event_bytes(name: str, event_id: str | None, data: Any) -> bytes:
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + dumps(data) + b"\n\n"


@dataclass(eq=False)
class StreamClient:
    """One connected client: what it wants and its pending events (one per topic, newest wins)."""

    address: str | None
    topics: tuple[str, ...]
    queue_limit: int
    pending: dict[str, bytes] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overwritten: int = 0
    dropped: bool = False
    closed: bool = False  # the connection went away
    idle: bool = True  # offered no event since the last keepalive tick

    def offer(self, key: str, payload: bytes) -> None:
        if self.dropped:
            return
        if key in self.pending:
            self.overwritten += 1
            if self.overwritten > self.queue_limit:
                self.dropped = True
                self.pending.clear()
        if not self.dropped:
            self.pending[key] = payload
            if payload is not KEEPALIVE:
                self.idle = False
        self.wake.set()

    def take(self) -> list[bytes]:
        out = list(self.pending.values())
        self.pending.clear()
        self.overwritten = 0
        self.wake.clear()
        return out

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class StreamBroker:
    """Turns hub changes into per-client events."""

    def __init__(
        self,
        db: ReadDatabase,
        hub: PushHub,
        settings: routes.Settings,
        *,
        queue_limit: int,
        same_database: bool = True,
        keepalive: float = 15.0,
    ):
        self.db = db
        self.same_database = same_database
        # Opening states by (address, topic), with the data version they were read at: a connect at an unchanged
        # version reuses them instead of reading again (many clients connect at once after a deploy).
        self.openings: OrderedDict[tuple[str | None, str], tuple[int, bytes]] = OrderedDict()
        self._opening_locks: dict[tuple[str | None, tuple[str, ...]], asyncio.Lock] = {}
        self.hub = hub
        self.settings = settings
        self.queue_limit = queue_limit
        self.keepalive = keepalive
        self.clients: dict[str | None, set[StreamClient]] = {}
        self.wanted: dict[str | None, Counter[str]] = {}  # per address: how many of its clients want each topic
        self.dirty: dict[str | None, set[str]] = {}
        self.reorg_pending: set[str | None] = set()
        self.oldest_commit: float | None = None
        self.wanted_version = 0  # the newest commit heard of: a round's snapshot must show at least this
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.on_sent: Callable[[int, float], None] | None = None  # (events, commit time) after each fan-out
        self.dropped = 0

    def start(self) -> None:
        self._unsubscribe = self.hub.subscribe(self._on_change)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="serve-push")
        self._ticker = asyncio.get_running_loop().create_task(self._keep_alive(), name="serve-push-keepalive")

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        for task in (self._task, self._ticker):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _keep_alive(self) -> None:
        """Every `keepalive` seconds, a comment to each client that was sent nothing since the last tick (one
        timer for all clients, so a wait for events costs no timer of its own)."""
        while True:
            await asyncio.sleep(self.keepalive)
            for group in list(self.clients.values()):
                for client in list(group):
                    if client.idle and not client.pending:
                        client.offer("keepalive", KEEPALIVE)
                    client.idle = True

    @property
    def client_count(self) -> int:
        return sum(len(c) for c in self.clients.values())

    def add(self, client: StreamClient) -> None:
        group = self.clients.setdefault(client.address, set())
        if client not in group:
            group.add(client)
            self.wanted.setdefault(client.address, Counter()).update(client.topics)

    def remove(self, client: StreamClient) -> None:
        group = self.clients.get(client.address)
        if group is not None and client in group:
            group.discard(client)
            if group:
                self.wanted[client.address] -= Counter(client.topics)  # keeps positive counts only
            else:
                del self.clients[client.address]
                del self.wanted[client.address]

    # -- change intake (synchronous, in the hub's notification loop) -----------------------------------

    def _on_change(self, change: Change) -> None:
        for address, wanted in self.wanted.items():
            if change.resync or change.reverted_from is not None:
                hit = set(wanted)
                if change.reverted_from is not None:
                    self.reorg_pending.add(address)
            else:
                hit = {
                    t
                    for t in wanted
                    if change.projection in TOPICS[t].projections
                    and (not TOPICS[t].per_address or change.touches(address))
                }
            if hit:
                self.dirty.setdefault(address, set()).update(hit)
        if self.dirty:
            if change.committed_at and self.oldest_commit is None:
                self.oldest_commit = change.committed_at
            if not change.resync:
                self.wanted_version = max(self.wanted_version, change.version)
            self._kick.set()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            # One block's commits (one per projection) arrive within milliseconds: answer them in one round.
            await asyncio.sleep(COALESCE_SECONDS)
            self._kick.clear()
            dirty, self.dirty = self.dirty, {}
            reorgs, self.reorg_pending = self.reorg_pending, set()
            committed, self.oldest_commit = self.oldest_commit, None
            try:
                sent = await self._fan_out(dirty, reorgs, committed)
            except Exception as exc:  # a failed round is retried with the next change; state is re-read then
                log.warning("push round failed; will retry", error=str(exc).splitlines()[0] if str(exc) else "")
                for address, topics in dirty.items():
                    self.dirty.setdefault(address, set()).update(topics)
                self.reorg_pending |= reorgs
                await asyncio.sleep(0.5)
                self._kick.set()
                continue
            if self.on_sent and committed:
                self.on_sent(sent, committed)

    async def _fan_out(
        self, dirty: dict[str | None, set[str]], reorgs: set[str | None], committed: float | None
    ) -> int:
        sent = 0
        async with self.caught_up_snapshot() as snap:
            for address, topics in dirty.items():
                group = self.clients.get(address)
                if not group:
                    continue
                payloads = await self.render(snap, address, topics, committed)
                reorg = event_bytes("reorg", None, {"version": snap.version}) if address in reorgs else None
                for client in list(group):
                    if reorg is not None:
                        client.offer("reorg", reorg)
                    for topic, payload in payloads.items():
                        if topic in client.topics:
                            client.offer(topic, payload)
                            sent += 1
                    if client.dropped:
                        self.dropped += 1
                        self.remove(client)
        return sent

    @contextlib.asynccontextmanager
    async def caught_up_snapshot(self) -> AsyncIterator[Snapshot]:
        """A snapshot that shows every commit heard of so far. Reading from a streaming replica, the primary's
        notification can arrive before the replica has replayed the commit: wait for it (briefly re-checking),
        so a push never carries state older than the change it announces."""
        wanted = self.wanted_version
        deadline = asyncio.get_running_loop().time() + REPLICA_PATIENCE
        while True:
            async with self.db.snapshot() as snap:
                if snap.version >= wanted or asyncio.get_running_loop().time() > deadline:
                    if snap.version < wanted:
                        log.warning("push state read before the replica caught up", wanted=wanted, seen=snap.version)
                    yield snap
                    return
            await asyncio.sleep(REPLICA_RECHECK)

    async def render(
        self, snap: Snapshot, address: str | None, topics: set[str] | tuple[str, ...], committed: float | None = None
    ) -> dict[str, bytes]:
        """The current state of these topics for this address, as SSE events, from one snapshot. `committed` is
        the commit time (Unix seconds) of the oldest change this event answers (None on connect)."""
        out: dict[str, bytes] = {}
        for name in sorted(topics):
            topic = TOPICS[name]
            mark = snap.block_of(topic.projections)
            block = mark.block if mark else -1
            body = await topic.read(snap, address, self.settings)
            out[name] = event_bytes(
                name,
                f"{block}:{snap.version}",
                {
                    "topic": name,
                    "block": block,
                    "blockHash": mark.block_hash if mark else None,
                    "version": snap.version,
                    "committedAt": committed,
                    "data": body,
                },
            )
        return out

    async def opening(self, client: StreamClient, last_event_id: str | None) -> list[bytes]:
        """What a client gets on connect: every topic's state, or what changed since `last_event_id`."""
        since = parse_event_id(last_event_id)
        if since is None and self.same_database:
            # Many clients connecting at once for the same state wait for one read of it.
            key = (client.address, tuple(sorted(client.topics)))
            lock = self._opening_locks.setdefault(key, asyncio.Lock())
            async with lock:
                kept = [self.openings.get((client.address, t)) for t in key[1]]
                if self.hub.connected.is_set() and all(k is not None and k[0] == self.hub.version for k in kept):
                    return [k[1] for k in kept if k is not None]
                return await self._opening_state(client)
        return await self._opening_since(client, since)

    async def _opening_state(self, client: StreamClient) -> list[bytes]:
        if len(self._opening_locks) > OPENINGS_KEPT:
            for k in [k for k, lk in self._opening_locks.items() if not lk.locked()]:
                del self._opening_locks[k]
        return await self._opening_since(client, None)

    async def _opening_since(self, client: StreamClient, since: int | None) -> list[bytes]:
        async with self.db.snapshot() as snap:
            if since is None:
                fresh = await self.render(snap, client.address, client.topics)
                for name, payload in fresh.items():
                    self.openings[(client.address, name)] = (snap.version, payload)
                    self.openings.move_to_end((client.address, name))
                while len(self.openings) > OPENINGS_KEPT:
                    self.openings.popitem(last=False)
                return list(fresh.values())
            changes = await snap.rows(
                "SELECT version, projection, reverted_from, addresses FROM read_changes WHERE version > %s "
                "ORDER BY version",
                (since,),
            )
            oldest = await snap.row("SELECT min(version) AS v FROM read_changes")
            complete = oldest is not None and oldest["v"] is not None and oldest["v"] <= since + 1
            reverted = any(c["reverted_from"] is not None for c in changes)
            # An id from the future (another database, or a replica further ahead) proves nothing: start over.
            if reverted or since > snap.version or (not complete and since < snap.version):
                events = [event_bytes("reorg", None, {"version": snap.version})] if reverted else []
                return events + list((await self.render(snap, client.address, client.topics)).values())
            topics = {
                t
                for c in changes
                for t in client.topics
                if c["projection"] in TOPICS[t].projections
                and (not TOPICS[t].per_address or c["addresses"] is None or client.address in c["addresses"])
            }
            return list((await self.render(snap, client.address, topics)).values()) if topics else []


def parse_event_id(value: str | None) -> int | None:
    """The data version of a `<block>:<version>` event id (None when absent or malformed)."""
    if not value:
        return None
    _, sep, version = value.strip().rpartition(":")
    return int(version) if sep and version.isdigit() else None
