"""Blue/green rebuild of projections from the event store alone (no RPC).

The new tables are built in a shadow schema, caught up to the store's end, then swapped in with the live
tracking row in one transaction, while holding that row's lock so the live worker pauses for the swap
only. Readers see the old complete table until the commit and the new complete one after it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg
import structlog
from psycopg import sql

from indexer import db
from indexer.store import EventStore
from projections.base import Projection
from projections.runner import ProjectionRunner

log = structlog.get_logger("rebuild")


class RebuildInProgress(Exception):
    """Another rebuild of the same projection holds its lock."""


@dataclass
class RebuildResult:
    projection: str
    events_read: int
    seconds: float


def _shadow_schema(schema: str, projection: str) -> str:
    return f"{schema}_rb_{projection}"[:63]


def _lock_key(schema: str, projection: str) -> str:
    return f"rbtc-rebuild:{schema}:{projection}"


def rebuild(
    dsn: str,
    schema: str,
    store: EventStore,
    projection: Projection,
    *,
    page_size: int = 50,
    stop: threading.Event | None = None,
) -> RebuildResult:
    """Rebuild one projection blue/green; raise RebuildInProgress if another rebuild of it is running."""
    started = time.monotonic()
    shadow = _shadow_schema(schema, projection.name)
    with db.connection(dsn, schema, autocommit=True) as lock_conn:
        got = lock_conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (_lock_key(schema, projection.name),)
        ).fetchone()
        if not got or not got[0]:
            raise RebuildInProgress(f"a rebuild of {projection.name} is already running on schema {schema}")
        try:
            _create_shadow(dsn, schema, shadow, projection)
            with db.connection(dsn, shadow, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("SET search_path TO {}, {}, public").format(sql.Identifier(shadow), sql.Identifier(schema))
                )
                runner = ProjectionRunner(
                    store,
                    conn,
                    [projection],
                    journal_schema=schema,
                    table_schema=shadow,
                    page_size=page_size,
                    write_status=False,
                    stop=stop,
                )
                events_read = runner.run_until_caught_up()
                events_read += _catch_up_and_swap(conn, runner, schema, shadow, projection)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_lock_key(schema, projection.name),))
    result = RebuildResult(projection.name, events_read, time.monotonic() - started)
    log.info(
        "projection rebuilt and swapped in",
        projection=projection.name,
        events=events_read,
        seconds=round(result.seconds, 3),
    )
    return result


def _create_shadow(dsn: str, schema: str, shadow: str, projection: Projection) -> None:
    with db.connection(dsn, schema) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(shadow)))
        conn.execute("DELETE FROM undo_journal WHERE table_schema = %s", (shadow,))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(shadow)))
        for table in (*projection.tables, "projection_tracking"):
            conn.execute(
                sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING ALL)").format(
                    sql.Identifier(shadow), sql.Identifier(table), sql.Identifier(schema), sql.Identifier(table)
                )
            )
        for table in projection.tables:
            conn.execute("SELECT rbtc_attach_undo(%s::regclass)", (f'"{shadow}"."{table}"',))
        conn.commit()


def _catch_up_and_swap(
    conn: psycopg.Connection, runner: ProjectionRunner, schema: str, shadow: str, projection: Projection
) -> int:
    """Under the live tracking row's lock: apply what is left, then swap tables, journal and position."""
    ident = sql.Identifier
    with conn.transaction():
        conn.execute(
            sql.SQL("INSERT INTO {}.projection_tracking (projection) VALUES (%s) ON CONFLICT DO NOTHING").format(
                ident(schema)
            ),
            (projection.name,),
        )
        conn.execute(
            sql.SQL("SELECT 1 FROM {}.projection_tracking WHERE projection = %s FOR UPDATE").format(ident(schema)),
            (projection.name,),
        )
        events_read = runner.run_until_caught_up()
        conn.execute("SELECT set_config('rbtc.undo_block', '', true)")
        for view in db.view_files():
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}.{}").format(ident(schema), ident(view.stem)))
        for table in projection.tables:
            conn.execute(sql.SQL("DROP TABLE {}.{}").format(ident(schema), ident(table)))
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(ident(shadow), ident(table), ident(schema)))
        conn.execute(
            sql.SQL("DELETE FROM {}.undo_journal WHERE table_schema = %s AND table_name = ANY(%s)").format(
                ident(schema)
            ),
            (schema, list(projection.tables)),
        )
        conn.execute(
            sql.SQL("UPDATE {}.undo_journal SET table_schema = %s WHERE table_schema = %s").format(ident(schema)),
            (schema, shadow),
        )
        conn.execute(
            sql.SQL(
                "UPDATE {live}.projection_tracking AS l SET notification_id = s.notification_id, "
                "finalized_seen = s.finalized_seen, indexed_block = s.indexed_block, "
                "events_applied = s.events_applied, updated_at = now() "
                "FROM {shadow}.projection_tracking AS s WHERE l.projection = s.projection AND l.projection = %s"
            ).format(live=ident(schema), shadow=ident(shadow)),
            (projection.name,),
        )
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(ident(schema)))
        db.recreate_views(conn)
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(shadow)))
    return events_read
