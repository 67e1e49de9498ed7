"""Drive the follower and the projection runner step by step, synchronously, against any JSON-RPC URL.

Tests use it to interleave chain changes with indexing at exact points, and to reset a schema quickly
between generated histories.
"""

from __future__ import annotations

from indexer.chain.rpc import RpcClient
from indexer.config import Config
from indexer.decode.decoder import LogDecoder
from indexer.fetch.fetcher import AdaptiveSpan, LogFetcher
from indexer.follow.enrichment import Enricher
from indexer.follow.follower import Follower
from indexer.store import db
from indexer.store.event_store import Cursor, EventStore
from projections.engine import registry
from projections.engine.runner import NeedsRebuild, ProjectionApplier

STATE_TABLES = (
    "stored_events",
    "follower_cursor",
    "follower_blocks",
    "projection_tracking",
    "sync_status",
    "undo_journal",
    "replay_requests",
    "rpc_range_hints",
    *(t for p in registry.ALL for t in p.tables),
)


class Harness:
    """One schema's store, follower and runner, stepped by hand."""

    def __init__(self, config: Config):
        self.config = config
        self.dsn, self.schema = config.database.url, config.database.schema_
        db.migrate(self.dsn, self.schema)
        self.store = EventStore(self.dsn, self.schema, 3)
        self.store.create_tables()
        self.decoder = LogDecoder((role, c.address, config.abi_path(role, c)) for role, c in config.watched())
        self.conn = db.connect(self.dsn, self.schema, autocommit=True)
        self.rpc: RpcClient | None = None
        self.follower: Follower | None = None
        self.cursor: Cursor | None = None
        self.runner: ProjectionApplier | None = None

    def connect_chain(self, url: str, *, span: int = 16, prefetch: bool = True) -> None:
        """(Re)build the follower and runner for a chain at `url`, from the store's cursor."""
        chain = self.config.chain
        self.rpc = RpcClient([url], timeout=5)
        self.follower = Follower(
            chain_id=chain.chain_id,
            rpc=self.rpc,
            store=self.store,
            fetcher=LogFetcher(
                self.rpc,
                self.config.start_blocks(),
                AdaptiveSpan(span, span),
                completeness=chain.completeness,
                fetch_receipts=self.config.indexer.receipts,
                watched_topics=self.decoder.topics0(),
            ),
            enricher=Enricher(self.rpc, self.decoder.roles, receipts=self.config.indexer.receipts),
            decoder=self.decoder,
            start_block=self.config.start_block(),
            confirmations=chain.confirmations,
            use_finalized_tag=chain.use_finalized_tag,
            poll_interval=0.01,
            prefetch=prefetch,
        )
        self.cursor = self.store.cursor(chain.chain_id, self.config.start_block())
        self.runner = ProjectionApplier(
            self.store, self.conn, registry.build(), journal_schema=self.schema, table_schema=self.schema, page_size=7
        )

    def reset(self) -> None:
        """Empty every table of the schema (store included)."""
        self.conn.execute("TRUNCATE " + ", ".join(STATE_TABLES) + " RESTART IDENTITY")
        self.runner = None

    def follow(self, steps: int) -> int:
        """Up to `steps` follower steps; return how many moved the cursor."""
        assert self.follower is not None and self.cursor is not None
        moved = 0
        for _ in range(steps):
            self.cursor, did = self.follower.step(self.cursor)
            if not did:
                break
            moved += 1
        return moved

    def follow_to_head(self, limit: int = 10_000) -> None:
        while self.follow(1):
            limit -= 1
            assert limit > 0, "follower did not settle"

    def project(self) -> None:
        """Apply everything stored; rebuild a projection blue/green when a revert demands it."""
        assert self.runner is not None
        while True:
            try:
                self.runner.run_until_caught_up()
                return
            except NeedsRebuild as exc:
                from projections.engine.rebuild import rebuild

                rebuild(self.dsn, self.schema, self.store, registry.build([exc.projection])[0])

    def close(self) -> None:
        self.conn.close()
        self.store.datastore.close()
