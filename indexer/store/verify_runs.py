"""The `verify_runs` table (sql/005_verify_runs.sql) and the `verify` row of `sync_status`: every verification
is recorded with its block, counts and duration; the latest failure or difference count is what `status` and
`/status` show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from indexer.store import db, status

COMPONENT = "verify"


@dataclass(frozen=True, slots=True)
class VerifyRun:
    """One finished verification, as recorded."""

    started_at: datetime
    outcome: str  # equal, differences, error
    duration_seconds: float
    block_number: int | None = None
    block_hash: str | None = None
    users_checked: int = 0
    columns_checked: int = 0
    differences: int = 0
    differences_by_column: dict[str, int] | None = None
    error: str | None = None


def record(dsn: str, schema: str, run: VerifyRun) -> int:
    """Insert the run and set the `verify` row of sync_status, in one transaction; return the run's id."""
    if run.outcome == "equal":
        problem = None
    elif run.outcome == "differences":
        top = ", ".join(f"{c} ({n})" for c, n in list((run.differences_by_column or {}).items())[:3])
        problem = f"{run.differences} difference(s) at block {run.block_number}: {top}"
    else:
        problem = f"verify failed: {run.error}"
    with db.connection(dsn, schema) as conn:
        row = conn.execute(
            "INSERT INTO verify_runs (started_at, block_number, block_hash, outcome, users_checked, columns_checked, "
            "differences, differences_by_column, duration_seconds, error) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                run.started_at,
                run.block_number,
                run.block_hash,
                run.outcome,
                run.users_checked,
                run.columns_checked,
                run.differences,
                Jsonb(run.differences_by_column or {}),
                run.duration_seconds,
                run.error,
            ),
        ).fetchone()
        assert row is not None
        if run.block_number is not None and run.outcome != "error":
            status.write_checked(conn, COMPONENT, run.block_number, run.block_hash, run.users_checked, problem)
        else:
            status.write_error(conn, COMPONENT, problem)
        conn.commit()
    return int(row[0])


def latest(conn: Any) -> dict[str, Any] | None:
    """The latest recorded run as JSON-ready data (None when verify never ran or the table does not exist)."""
    exists = conn.execute("SELECT to_regclass('verify_runs') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM verify_runs ORDER BY id DESC LIMIT 1")
        found = cur.fetchone()
    if found is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in found.items()}
