"""The indexer's status as one document: the follower, every projection, the store (for `status` and /status)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from indexer.store import db, verify_runs

FOLLOWER = "follower"
PROJECTION_PREFIX = "projection:"


def projection_component(name: str) -> str:
    """The `sync_status.component` (and metrics label) of a projection."""
    return PROJECTION_PREFIX + name


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
