"""Blue/green rebuild of projections from the event store alone (no RPC).

The new tables are built in a shadow schema, caught up to the store's end, then swapped in with the live
tracking row in one transaction, while holding that row's lock so the live worker pauses for the swap
only. Readers see the old complete table until the commit and the new complete one after it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import psycopg
import structlog
from psycopg import sql

from indexer.decode.decoder import LogDecoder
from indexer.errors import Fatal, IndexerError
from indexer.store import db
from indexer.store.event_store import EventStore
from indexer.store.locks import AdvisoryLock, rebuild_lock
from projections.engine.runner import NeedsRebuild, ProjectionApplier
from projections.models.base import Projection

log = structlog.get_logger("rebuild")


class RebuildInProgress(Fatal):
    """Another rebuild of the same projection holds its lock."""


class RebuildAbandoned(IndexerError):
    """A stop was requested before the shadow tables were complete: they were dropped, nothing was swapped."""


class RebuildFailed(Fatal):
    """Reverts kept arriving below the undo window faster than the rebuild could finish."""


MAX_PASSES = 3  # a revert below the window that arrives mid-rebuild restarts the pass, at most this often


@dataclass
class RebuildResult:
    projections: list[str]
    events_read: int
    seconds: float
    events_redecoded: int = 0  # stored events whose logs were decoded by another decoder, so decoded again


def _shadow_schema(schema: str, names: list[str]) -> str:
    digest = hashlib.sha1(",".join(sorted(names)).encode()).hexdigest()[:8]
    return f"{schema}_rb_{digest}"


def rebuild(
    dsn: str,
    schema: str,
    store: EventStore,
    projections: Projection | list[Projection],
    *,
    page_size: int = 5,
    stop: threading.Event | None = None,
    decoder: LogDecoder | None = None,
) -> RebuildResult:
    """Rebuild projections blue/green in one pass over the store (each stored event is read and decoded
    once for all of them); raise RebuildInProgress if another rebuild of any of them is running.

    The live tables are replaced only by complete shadow tables: when `stop` is set before the swap commits,
    the shadow schema is dropped, the live tables stay as they were, and RebuildAbandoned is raised.
    With `decoder`, every stored log is decoded again from its raw topics and data with the current ABIs,
    except in events that a decoder with the same fingerprint decoded (which would decode alike)."""
    chosen = projections if isinstance(projections, list) else [projections]
    names = [p.name for p in chosen]
    started = time.monotonic()
    shadow = _shadow_schema(schema, names)
    taken: list[AdvisoryLock] = []
    try:
        for name in names:
            lock = rebuild_lock(dsn, schema, name)
            if not lock.try_acquire():
                raise RebuildInProgress(f"a rebuild of {name} is already running on schema {schema}")
            taken.append(lock)
        events_read, redecoded = _build_and_swap(dsn, schema, shadow, store, chosen, page_size, stop, decoder)
    finally:
        for lock in taken:
            lock.release()
    result = RebuildResult(names, events_read, time.monotonic() - started, redecoded)
    log.info(
        "projections rebuilt and swapped in",
        projections=names,
        events=events_read,
        events_decoded_again=redecoded,
        seconds=round(result.seconds, 3),
    )
    return result


def _build_and_swap(
    dsn: str,
    schema: str,
    shadow: str,
    store: EventStore,
    chosen: list[Projection],
    page_size: int,
    stop: threading.Event | None,
    decoder: LogDecoder | None,
) -> tuple[int, int]:
    """Build the shadow tables and swap them in; retry from scratch when a revert below the window arrives.
    (events read, events decoded again)"""
    stop = stop or threading.Event()
    for attempt in range(1, MAX_PASSES + 1):
        _create_shadow(dsn, schema, shadow, chosen)
        try:
            with ExitStack() as connections:
                conn, *lanes = [
                    connections.enter_context(_shadow_connection(dsn, schema, shadow)) for _ in range(len(chosen) + 1)
                ]
                runner = ProjectionApplier(
                    store,
                    conn,
                    chosen,
                    journal_schema=schema,
                    table_schema=shadow,
                    page_size=page_size,
                    write_status=False,
                    stop=stop,
                    decoder=decoder,
                    lanes=lanes,
                )
                events_read = runner.run_until_caught_up()
                if stop.is_set():
                    raise RebuildAbandoned("stop requested during the rebuild; the shadow tables were dropped")
                events_read += _catch_up_and_swap(conn, runner, schema, shadow, chosen, stop)
                return events_read, runner.redecoded
        except NeedsRebuild as exc:
            log.warning("a revert reached below the rebuild's window; starting over", attempt=attempt, error=str(exc))
            _drop_shadow(dsn, schema, shadow)
        except BaseException:
            _drop_shadow(dsn, schema, shadow)
            raise
    raise RebuildFailed(f"rebuild of {', '.join(p.name for p in chosen)} restarted {MAX_PASSES} times; giving up")


@contextmanager
def _shadow_connection(dsn: str, schema: str, shadow: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection whose unqualified names reach the shadow tables first, then the live schema."""
    with db.connection(dsn, shadow, autocommit=True) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}, {}, public").format(sql.Identifier(shadow), sql.Identifier(schema))
        )
        yield conn


def _drop_shadow(dsn: str, schema: str, shadow: str) -> None:
    """Remove an abandoned shadow schema and its journal entries (best effort: the next rebuild does it too)."""
    try:
        with db.connection(dsn, schema) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(shadow)))
            conn.execute("DELETE FROM undo_journal WHERE table_schema = %s", (shadow,))
            conn.commit()
    except db.TRANSIENT_ERRORS as exc:
        log.warning("could not drop the abandoned shadow schema", shadow=shadow, error=db.first_line(exc))


def _create_shadow(dsn: str, schema: str, shadow: str, projections: list[Projection]) -> None:
    with db.connection(dsn, schema) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(shadow)))
        conn.execute("DELETE FROM undo_journal WHERE table_schema = %s", (shadow,))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(shadow)))
        tables = [t for p in projections for t in p.tables]
        for table in (*tables, "projection_tracking"):
            conn.execute(
                sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING ALL)").format(
                    sql.Identifier(shadow), sql.Identifier(table), sql.Identifier(schema), sql.Identifier(table)
                )
            )
        for table in tables:
            conn.execute("SELECT rbtc_attach_undo(%s::regclass)", (f'"{shadow}"."{table}"',))
        conn.commit()


def _catch_up_and_swap(
    conn: psycopg.Connection,
    runner: ProjectionApplier,
    schema: str,
    shadow: str,
    projections: list[Projection],
    stop: threading.Event,
) -> int:
    """Under the live tracking rows' locks: apply what is left, then swap tables, journal and positions."""
    ident = sql.Identifier
    names = [p.name for p in projections]
    tables = [t for p in projections for t in p.tables]
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.projection_tracking (projection) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
            ).format(ident(schema)),
            (names,),
        )
        conn.execute(
            sql.SQL(
                "SELECT 1 FROM {}.projection_tracking WHERE projection = ANY(%s) ORDER BY projection FOR UPDATE"
            ).format(ident(schema)),
            (names,),
        )
        events_read = runner.run_until_caught_up()
        if stop.is_set():  # the pass may have ended early: roll back rather than swap a partial table
            raise RebuildAbandoned("stop requested during the rebuild's catch-up; nothing was swapped")
        conn.execute("SELECT set_config('rbtc.undo_block', '', true)")
        for view in db.view_files():
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}.{}").format(ident(schema), ident(view.stem)))
        for table in tables:
            conn.execute(sql.SQL("DROP TABLE {}.{}").format(ident(schema), ident(table)))
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(ident(shadow), ident(table), ident(schema)))
        conn.execute(
            sql.SQL("DELETE FROM {}.undo_journal WHERE table_schema = %s AND table_name = ANY(%s)").format(
                ident(schema)
            ),
            (schema, tables),
        )
        conn.execute(
            sql.SQL("UPDATE {}.undo_journal SET table_schema = %s WHERE table_schema = %s").format(ident(schema)),
            (schema, shadow),
        )
        conn.execute(
            sql.SQL(
                "UPDATE {live}.projection_tracking AS l SET notification_id = s.notification_id, "
                "finalized_seen = s.finalized_seen, indexed_block = s.indexed_block, "
                "events_applied = s.events_applied, applied_block = s.applied_block, updated_at = now() "
                "FROM {shadow}.projection_tracking AS s WHERE l.projection = s.projection AND l.projection = ANY(%s)"
            ).format(live=ident(schema), shadow=ident(shadow)),
            (names,),
        )
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(ident(schema)))
        db.recreate_views(conn)
        # Readers learn of the swap as of any commit: a new data version, and any address may have changed.
        # Caught up with the store, the tables reflect the follower's cursor, not only the last block with logs.
        conn.execute(
            "SELECT rbtc_publish(t.projection, coalesce((SELECT c.indexed_block FROM follower_cursor AS c "
            "WHERE t.notification_id >= (SELECT coalesce(max(notification_id), 0) FROM stored_events) "
            "ORDER BY c.chain_id LIMIT 1), t.indexed_block), NULL, NULL, NULL) "
            "FROM projection_tracking AS t WHERE t.projection = ANY(%s)",
            (names,),
        )
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(shadow)))
    return events_read
