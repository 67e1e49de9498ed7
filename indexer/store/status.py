"""The indexer's status as one document: the follower, every projection, the store (for `status` and /status)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from indexer.store import db, verify_runs

FOLLOWER = "follower"
PROJECTION_PREFIX = "projection:"


def projection_component(name: str) -> str:
    """The `sync_status.component` (and metrics label) of a projection."""
    return PROJECTION_PREFIX + name


# -- writers: this module owns every statement on sync_status ------------------------------------------------

_FOLLOWER_STATUS = (
    "INSERT INTO {schema}.sync_status AS s (component, chain_id, head_block, finalized_block, indexed_block,"
    " indexed_hash, lag_blocks, lag_seconds, events_processed, undecodable_logs, last_error, updated_at)"
    " VALUES ('follower', %(chain)s::bigint, %(head)s::bigint, %(fin)s::bigint, %(block)s::bigint, %(hash)s,"
    " greatest(0, %(head)s::bigint - %(block)s::bigint), %(lag_s)s::double precision,"
    " %(logs)s::bigint, %(bad)s::bigint, NULL, now())"
    " ON CONFLICT (component) DO UPDATE SET chain_id = excluded.chain_id,"
    " head_block = coalesce(excluded.head_block, s.head_block), finalized_block = excluded.finalized_block,"
    " indexed_block = excluded.indexed_block, indexed_hash = excluded.indexed_hash,"
    " lag_blocks = greatest(0, coalesce(excluded.head_block, s.head_block) - excluded.indexed_block),"
    " lag_seconds = coalesce(excluded.lag_seconds, s.lag_seconds),"
    " events_processed = s.events_processed + excluded.events_processed,"
    " undecodable_logs = s.undecodable_logs + excluded.undecodable_logs, last_error = NULL, updated_at = now()"
)


def write_follower(curs: Any, schema: str, values: dict[str, Any]) -> None:
    """The follower's row, inside the append transaction (so its counters move with the data they count).
    `values`: chain, head, fin, block, hash, logs, bad, lag_s."""
    curs.execute(_FOLLOWER_STATUS.format(schema=schema), values)


def write_projection(conn: psycopg.Connection, name: str, indexed_block: int, events_applied: int) -> None:
    """A projection's row, inside its batch's transaction; lag in blocks and seconds from the follower's row."""
    conn.execute(
        "INSERT INTO sync_status (component, indexed_block, events_processed, lag_blocks, updated_at) "
        "VALUES (%(c)s, %(b)s, %(n)s, NULL, now()) "
        "ON CONFLICT (component) DO UPDATE SET indexed_block = excluded.indexed_block, "
        "events_processed = excluded.events_processed, last_error = NULL, updated_at = now(), "
        "lag_blocks = (SELECT greatest(0, head_block - excluded.indexed_block) FROM sync_status "
        "              WHERE component = 'follower'), "
        "lag_seconds = (SELECT CASE WHEN excluded.indexed_block >= indexed_block THEN lag_seconds END "
        "               FROM sync_status WHERE component = 'follower')",
        {"c": projection_component(name), "b": indexed_block, "n": events_applied},
    )


def write_caught_up(conn: psycopg.Connection, chain_id: int, names: list[str]) -> None:
    """Projections that have applied every stored event are as current as the follower's cursor (blocks
    without logs make no events); only rows that move are written, since this runs on every idle poll."""
    conn.execute(
        "UPDATE sync_status AS s SET indexed_block = c.indexed_block, "
        "lag_blocks = greatest(0, c_status.head_block - c.indexed_block), "
        "lag_seconds = c_status.lag_seconds, updated_at = now() "
        "FROM follower_cursor AS c, projection_tracking AS t, sync_status AS c_status "
        "WHERE c.chain_id = %s AND c_status.component = 'follower' AND t.projection = ANY(%s) "
        "AND s.component = 'projection:' || t.projection "
        "AND (s.indexed_block < c.indexed_block OR s.lag_seconds IS DISTINCT FROM c_status.lag_seconds) "
        "AND t.notification_id >= (SELECT coalesce(max(notification_id), 0) FROM stored_events)",
        (chain_id, names),
    )


def write_checked(
    conn: psycopg.Connection, component: str, block: int, block_hash: str | None, checked: int, problem: str | None
) -> None:
    """A checking component's row (e.g. `verify`): the block it checked, how much, and what it found."""
    conn.execute(
        "INSERT INTO sync_status (component, indexed_block, indexed_hash, events_processed, last_error) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (component) DO UPDATE SET "
        "indexed_block = excluded.indexed_block, indexed_hash = excluded.indexed_hash, "
        "events_processed = excluded.events_processed, last_error = excluded.last_error, updated_at = now()",
        (component, block, block_hash, checked, problem),
    )


def write_error(conn: psycopg.Connection, component: str, message: str | None) -> None:
    """Set (or clear, with None) a component's last error."""
    conn.execute(
        "INSERT INTO sync_status (component, last_error) VALUES (%s, %s) ON CONFLICT (component) "
        "DO UPDATE SET last_error = excluded.last_error, updated_at = now()",
        (component, message),
    )


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def read_status(dsn: str, schema: str) -> dict[str, Any]:
    """Status of every component, as JSON-ready data."""
    with db.connection(dsn, schema, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM sync_status ORDER BY component")
        components = {r.pop("component"): {k: _plain(v) for k, v in r.items()} for r in cur.fetchall()}
        cur.execute(
            "SELECT projection, notification_id, finalized_seen, indexed_block, events_applied, updated_at "
            "FROM projection_tracking ORDER BY projection"
        )
        tracking = {r.pop("projection"): {k: _plain(v) for k, v in r.items()} for r in cur.fetchall()}
        cur.execute("SELECT coalesce(max(notification_id), 0) AS n FROM stored_events")
        stored = cur.fetchone()["n"]  # type: ignore[index]
        cur.execute(
            "SELECT chain_id, stream_version, indexed_block, indexed_hash, finalized_block "
            "FROM follower_cursor ORDER BY chain_id"
        )
        cursors = [dict(r) for r in cur.fetchall()]
        last_verify = verify_runs.latest(conn)
    for name, track in tracking.items():
        entry = components.setdefault(projection_component(name), {})
        entry["notification_id"] = track["notification_id"]
        entry["events_behind"] = max(0, stored - track["notification_id"])
    follower = components.get(FOLLOWER, {})
    return {
        "schema": schema,
        "store": {"last_notification_id": stored, "cursors": cursors},
        "follower": follower,
        "projections": {
            k.removeprefix(PROJECTION_PREFIX): v for k, v in components.items() if k.startswith(PROJECTION_PREFIX)
        },
        "undecodable_logs": follower.get("undecodable_logs", 0),
        "verify": {**components.get(verify_runs.COMPONENT, {}), "last_run": last_verify},
    }


def format_status(status: dict[str, Any]) -> str:
    """A human-readable status table."""
    follower = status["follower"]
    lines = [
        f"schema {status['schema']}: {status['store']['last_notification_id']} stored events",
        f"follower: head {follower.get('head_block')} finalized {follower.get('finalized_block')} "
        f"indexed {follower.get('indexed_block')} lag {follower.get('lag_blocks')} blocks, "
        f"{follower.get('events_processed', 0)} logs, {status['undecodable_logs']} undecodable"
        + (f", last error: {follower['last_error']}" if follower.get("last_error") else ""),
    ]
    for name, p in sorted(status["projections"].items()):
        lines.append(
            f"projection {name}: indexed {p.get('indexed_block')} lag {p.get('lag_blocks')} blocks, "
            f"{p.get('events_processed', 0)} logs applied, {p.get('events_behind', 0)} stored events behind"
            + (f", last error: {p['last_error']}" if p.get("last_error") else "")
        )
    verify = status.get("verify") or {}
    run = verify.get("last_run")
    if run:
        lines.append(
            f"verify: last run {run['outcome']} at block {run['block_number']} ({run['differences']} differences, "
            f"{run['users_checked']} users, {run['duration_seconds']:.2f}s, {run['finished_at']})"
            + (f", last error: {verify['last_error']}" if verify.get("last_error") else "")
        )
    return "\n".join(lines)
