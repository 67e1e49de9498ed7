"""The push hub: one dedicated LISTEN connection (to the primary) for `rbtc_tables_changed`, which the projection
runner notifies inside every projection commit, fanned out to in-process subscribers.

The hub keeps the newest mark per projection it has heard of, so waiters (`?min_block=`) and the push stream
wake on the commit itself rather than by polling. When the LISTEN connection drops, the hub reconnects with
backoff and publishes a `Change` with `resync=True`: whatever was committed meanwhile is unknown, so subscribers
re-read everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import structlog
from psycopg import sql

from indexer.serve.snapshot import ProjectionMark
from indexer.store.db import first_line, redact_dsn

log = structlog.get_logger("serve.hub")
CHANNEL = "rbtc_tables_changed"
APPLICATION_NAME = "rbtc-serve-listen"


@dataclass(frozen=True, slots=True)
class Change:
    """One projection commit (or, with `resync`, an unknown number of them)."""

    projection: str
    version: int
    block: int
    block_hash: str | None
    reverted_from: int | None
    addresses: frozenset[str] | None  # None: any address may have changed
    resync: bool = False
    committed_at: float = 0.0  # Unix seconds, as the database clock had it inside the commit

    def touches(self, address: str | None) -> bool:
        """Whether rows of this address (None: rows of nobody in particular) may have changed."""
        return self.addresses is None or address is None or address in self.addresses


def parse_change(payload: str, schema: str) -> Change | None:
    """A notification payload as a Change; None when it belongs to another schema or is malformed."""
    try:
        data = orjson.loads(payload)
        if data.get("s") != schema:
            return None
        addresses = data.get("a")
        return Change(
            projection=str(data["p"]),
            version=int(data["v"]),
            block=int(data["b"]),
            block_hash=data.get("h"),
            reverted_from=None if data.get("r") is None else int(data["r"]),
            addresses=None if addresses is None else frozenset(str(a) for a in addresses),
            committed_at=float(data.get("t") or 0.0),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.warning("ignored a malformed change notification", size=len(payload))
        return None


Subscriber = Callable[[Change], None]


class PushHub:
    """Listens for projection commits and tells subscribers (synchronously, in the event loop)."""

    def __init__(self, dsn: str, schema: str, *, reconnect_delay: float = 0.5):
        self.dsn = dsn
        self.schema = schema
        self.reconnect_delay = reconnect_delay
        self.subscribers: list[Subscriber] = []
        self.marks: dict[str, ProjectionMark] = {}
        self.connected = asyncio.Event()
        self.changed = asyncio.Condition()
        self.notifications = 0
        self.reconnects = 0
        self.last_change_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> int:
        """The newest data version heard of (or seeded)."""
        return max((m.version for m in self.marks.values()), default=0)

    def seed(self, marks: dict[str, ProjectionMark]) -> None:
        """Start from marks read from the database (notifications only move them forward)."""
        for name, mark in marks.items():
            known = self.marks.get(name)
            if known is None or known.version < mark.version:
                self.marks[name] = mark

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` on every change; returns the function that unsubscribes it."""
        self.subscribers.append(subscriber)
        return lambda: self.subscribers.remove(subscriber) if subscriber in self.subscribers else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="serve-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_change(self, timeout: float) -> bool:
        """Wait for the next change (or resync); False after `timeout` seconds."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
                return True
            except TimeoutError:
                return False

    async def _run(self) -> None:
        delay = self.reconnect_delay
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME
                )
            except psycopg.OperationalError as exc:
                log.warning("cannot LISTEN; retrying", database=redact_dsn(self.dsn), error=first_line(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._reseed(conn)
                    self.connected.set()
                    delay = self.reconnect_delay
                    if not first:
                        self.reconnects += 1
                        log.info("LISTEN connection re-established")
                        await self._publish(Change("*", self.version, -1, None, None, None, resync=True))
                    first = False
                    async for note in conn.notifies():
                        change = parse_change(note.payload, self.schema)
                        if change is not None:
                            await self._publish(change)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning("LISTEN connection lost; reconnecting", error=first_line(exc))
            finally:
                self.connected.clear()
            await asyncio.sleep(delay)

    async def _reseed(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Marks as the primary has them now (listening already, so no later commit can be missed)."""
        query = sql.SQL("SELECT projection, version, block_number, block_hash FROM {}.read_versions").format(
            sql.Identifier(self.schema)
        )
        try:
            cur = await conn.execute(query)
        except psycopg.errors.UndefinedTable:
            return  # not migrated yet: notifications will bring the marks
        self.seed({r[0]: ProjectionMark(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()})

    async def _publish(self, change: Change) -> None:
        self.notifications += 1
        self.last_change_at = asyncio.get_running_loop().time()
        if not change.resync:
            known = self.marks.get(change.projection)
            if known is None or known.version < change.version:
                self.marks[change.projection] = ProjectionMark(
                    change.projection, change.version, change.block, change.block_hash
                )
        for subscriber in list(self.subscribers):
            try:
                subscriber(change)
            except Exception:  # one broken subscriber never stops the others
                log.exception("push subscriber failed")
        async with self.changed:
            self.changed.notify_all()


def describe(change: Change) -> dict[str, Any]:
    """A change as a log-friendly dict (addresses counted, not listed)."""
    return {
        "projection": change.projection,
        "version": change.version,
        "block": change.block,
        "reverted_from": change.reverted_from,
        "addresses": None if change.addresses is None else len(change.addresses),
    }
