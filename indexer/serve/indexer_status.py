"""The indexer's own state for the status page and the `indexer` push topic: every component's sync row, each
projection's mark, recent blocks and table counts (exact for tables up to EXACT_UP_TO_BYTES on disk, an estimate
above, listed in `tableCountsEstimated`), read in the caller's snapshot."""

from __future__ import annotations

from typing import Any

from indexer.serve.snapshot import Snapshot

EXACT_UP_TO_BYTES = 4 << 20  # about 30,000 rows of `transactions`: a count(*) of a few milliseconds
COUNTED_TABLES = ("balances", "transactions", "emergency_burns", "yield_scales_participants", "oracle_operations_log")


async def read_indexer_status(snap: Snapshot) -> dict[str, Any]:
    components = await snap.rows(
        "SELECT component, chain_id, head_block, finalized_block, indexed_block, lag_blocks, lag_seconds, "
        "events_processed, undecodable_logs, last_error IS NOT NULL AS failing, updated_at "
        "FROM sync_status ORDER BY component"
    )
    blocks = await snap.rows("SELECT number, hash FROM follower_blocks ORDER BY number DESC LIMIT 10")
    # Exact counts for small tables, an estimate for large ones, so the state stays cheap to push to many clients
    # after every block. The size on disk decides (always current, unlike the planner's row count, which is
    # unknown until the first ANALYZE); the estimate is the planner's rows per page times today's pages, or the
    # statistics' live rows for a table not analyzed yet.
    sizes = {
        r["relname"]: r
        for r in await snap.rows(
            "SELECT c.relname, z.bytes, CASE WHEN c.reltuples >= 0 AND c.relpages > 0 "
            "THEN (c.reltuples / c.relpages * (z.bytes / current_setting('block_size')::int))::bigint "
            "ELSE coalesce(s.n_live_tup, 0) END AS estimate "
            "FROM pg_class AS c CROSS JOIN LATERAL (SELECT pg_relation_size(c.oid) AS bytes) AS z "
            "LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)",
            (list(COUNTED_TABLES),),
        )
    }
    exact = [t for t in COUNTED_TABLES if t not in sizes or sizes[t]["bytes"] <= EXACT_UP_TO_BYTES]
    counts: dict[str, Any] = {t: sizes[t]["estimate"] for t in COUNTED_TABLES if t not in exact}
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
