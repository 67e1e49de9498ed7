"""The indexer's own state for the status page and the `indexer` push topic: every component's sync row, each
projection's mark, recent blocks and table counts (exact up to EXACT_UP_TO rows, the planner's estimate above,
listed in `tableCountsEstimated`), read in the caller's snapshot."""

from __future__ import annotations

from typing import Any

from indexer.serve.snapshot import Snapshot

EXACT_UP_TO = 50_000
COUNTED_TABLES = ("balances", "transactions", "emergency_burns", "yield_scales_participants", "oracle_operations_log")


async def read_indexer_status(snap: Snapshot) -> dict[str, Any]:
    components = await snap.rows(
        "SELECT component, chain_id, head_block, finalized_block, indexed_block, lag_blocks, lag_seconds, "
        "events_processed, undecodable_logs, last_error IS NOT NULL AS failing, updated_at "
        "FROM sync_status ORDER BY component"
    )
    blocks = await snap.rows("SELECT number, hash FROM follower_blocks ORDER BY number DESC LIMIT 10")
    # Exact counts for small tables; the planner's estimate (kept by ANALYZE / autovacuum) above EXACT_UP_TO
    # rows, so the page stays cheap to push to many clients.
    estimates = {
        r["relname"]: r["estimate"]
        for r in await snap.rows(
            "SELECT relname, reltuples::bigint AS estimate FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace AND relname = ANY(%s)",
            (list(COUNTED_TABLES),),
        )
    }
    exact = [t for t in COUNTED_TABLES if estimates.get(t, -1) < EXACT_UP_TO]
    counts: dict[str, Any] = {t: estimates[t] for t in COUNTED_TABLES if t not in exact}
    if exact:
        row = await snap.row("SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in exact))
        counts.update(row or {})
    marks = sorted(snap.marks.values(), key=lambda m: m.projection)
    lowest = min((m.block for m in marks), default=None)
    return {
        "indexedBlock": lowest,
        "version": snap.version,
        "components": components,
        "projections": [
            {"projection": m.projection, "block": m.block, "blockHash": m.block_hash, "version": m.version}
            for m in marks
        ],
        "recentBlocks": blocks,
        "tableCounts": {t: counts.get(t) for t in COUNTED_TABLES},
        "tableCountsEstimated": sorted(t for t in COUNTED_TABLES if t not in exact),
    }
