"""`rpc_range_hints`: the eth_getLogs range size learned per chain, kept across restarts (this module owns the
table's statements)."""

from __future__ import annotations

from indexer.store import db


class RangeHints:
    """The learned range of one chain's endpoints (key `chain:<id>`)."""

    def __init__(self, dsn: str, schema: str, chain_id: int):
        self.dsn, self.schema, self.key = dsn, schema, f"chain:{chain_id}"

    def learned(self) -> int | None:
        """The last range that worked, if one was learned."""
        with db.connection(self.dsn, self.schema, autocommit=True) as conn:
            row = conn.execute("SELECT block_range FROM rpc_range_hints WHERE endpoint = %s", (self.key,)).fetchone()
        return int(row[0]) if row else None

    def remember(self, span: int) -> None:
        """Keep a new range size for the next start."""
        with db.connection(self.dsn, self.schema, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO rpc_range_hints (endpoint, block_range) VALUES (%s, %s) ON CONFLICT (endpoint) "
                "DO UPDATE SET block_range = excluded.block_range, updated_at = now()",
                (self.key, span),
            )
