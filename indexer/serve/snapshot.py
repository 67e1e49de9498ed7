"""Consistent reads: every response is read in one REPEATABLE READ, read-only transaction, and names the block and
data version its tables reflect, as the projections recorded them in the same transactions as the rows.

`read_versions` holds, per projection, the block its tables reflect and the data version of its last commit (one
global sequence). A response reports the lowest block among the projections it reads (each of those tables holds
exactly its projection's state at its own block, which is that block or later) and the highest data version of all
projections in the snapshot, which moves on every projection commit, reverts included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from indexer.errors import Retryable
from indexer.store.db import first_line, redact_dsn


class TablesBehind(Retryable):
    """The tables did not reach the block a client asked for within the allowed wait."""

    def __init__(self, wanted: int, reached: int, waited: float):
        super().__init__(f"the tables reflect block {reached}; block {wanted} was not reached within {waited:.1f}s")
        self.wanted = wanted
        self.reached = reached


class ReadUnavailable(Retryable):
    """The database could not answer a read (unreachable, or the statement timed out)."""


@dataclass(frozen=True, slots=True)
class ProjectionMark:
    """What one projection's tables reflect."""

    projection: str
    version: int
    block: int
    block_hash: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read transaction: its connection and what its tables reflect."""

    conn: psycopg.AsyncConnection[dict[str, Any]]
    marks: dict[str, ProjectionMark]

    @property
    def version(self) -> int:
        """The data version of the snapshot: the newest projection commit it sees (0 before any)."""
        return max((m.version for m in self.marks.values()), default=0)

    def block_of(self, projections: Sequence[str]) -> ProjectionMark | None:
        """The lowest mark among these projections (None when none of them has committed yet)."""
        marks = [self.marks[p] for p in projections if p in self.marks]
        return min(marks, key=lambda m: (m.block, m.projection)) if marks else None

    async def rows(
        self, query: str | sql.Composable, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """All rows of a query, as dicts."""
        cur = await self.conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()

    async def row(
        self, query: str | sql.Composable, params: Sequence[Any] | dict[str, Any] = ()
    ) -> dict[str, Any] | None:
        """The first row of a query, or None."""
        cur = await self.conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchone()


MARKS_QUERY = "SELECT projection, version, block_number, block_hash FROM read_versions"


def marks_of(rows: Sequence[dict[str, Any]]) -> dict[str, ProjectionMark]:
    """read_versions rows as marks, by projection."""
    return {
        r["projection"]: ProjectionMark(r["projection"], r["version"], r["block_number"], r["block_hash"]) for r in rows
    }


class ReadDatabase:
    """A small pool of read-only connections (statement timeout set) to the primary or a replica."""

    def __init__(self, dsn: str, schema: str, *, pool_size: int, statement_timeout_ms: int):
        self.dsn = dsn
        self.schema = schema
        search_path = sql.SQL("{}, public").format(sql.Identifier(schema)).as_string()
        options = (
            "-c default_transaction_read_only=on -c default_transaction_isolation=repeatable\\ read "
            f"-c statement_timeout={statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={max(statement_timeout_ms * 5, 10_000)} "
            f"-c search_path={search_path.replace(' ', '')}"
        )
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            dsn,
            min_size=min(2, pool_size),
            max_size=pool_size,
            kwargs={
                "options": options,
                "row_factory": dict_row,
                "autocommit": False,
                "prepare_threshold": 0,
                "application_name": "rbtc-serve",
            },
            open=False,
            name="serve-read",
            timeout=5.0,
        )

    async def open(self) -> None:
        """Open the pool (connections are made in the background; a first read waits for one)."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """A REPEATABLE READ, read-only transaction with its marks read first (the snapshot is taken by that
        first statement, so the marks and every later row come from the same instant)."""
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():  # REPEATABLE READ, READ ONLY: the session defaults
                    cur = await conn.execute(MARKS_QUERY)
                    yield Snapshot(conn, marks_of(await cur.fetchall()))
        except psycopg.errors.QueryCanceled as exc:
            raise ReadUnavailable(f"a read took longer than the statement timeout: {first_line(exc)}") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ReadUnavailable(f"cannot read from {redact_dsn(self.dsn)}: {first_line(exc)}") from None
        except TimeoutError as exc:  # psycopg_pool.PoolTimeout derives from it
            raise ReadUnavailable(f"no database connection free: {first_line(exc)}") from None

    async def marks(self) -> dict[str, ProjectionMark]:
        """The current marks (their own short transaction)."""
        async with self.snapshot() as snap:
            return snap.marks
