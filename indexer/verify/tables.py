"""The database side of a run: one REPEATABLE READ snapshot in which the block the tables are consistent at is
chosen, the read tables are read, and the event store's canonical logs are scanned.

Everything comes from one snapshot, so the tables, the projections' positions and the store agree with each
other even while a daemon keeps writing. The tables are consistent at a block only when every projection has
applied the same stored events: then they reflect the block the last of those events ended at (or, when that is
every stored event, the follower's cursor, which also covers blocks without logs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from indexer.store import db
from indexer.store import events as ev
from indexer.verify.records import BalanceRow, BurnRow, LogFacts, ParticipantRow, TableState

ZERO_ADDRESS = "0x" + "0" * 40
_QUOTED_ADDRESS = re.compile(rb'":"(0x[0-9a-fA-F]{40})"')
_BURN_MARK = b'"event":"EmergencyBurn"'


def _burns_in(state: bytes) -> dict[tuple[str, int], BurnRow]:
    """The aggregator EmergencyBurn logs of one stored LogsIngested."""
    event = ev.decode(ev.LOGS_INGESTED, state)
    assert isinstance(event, ev.LogsIngested)
    found: dict[tuple[str, int], BurnRow] = {}
    for log in event.logs:
        args = log["args"]
        if log["role"] == "oracle_aggregator" and log["event"] == "EmergencyBurn" and args:
            found[(log["tx_hash"], int(log["log_index"]))] = BurnRow(
                int(log["block_number"]),
                int(log["block_timestamp"] or 0),
                str(args["user"]).lower(),
                int(args["burnedAmount"]),
                str(args["reason"]),
            )
    return found


@dataclass(frozen=True, slots=True)
class Consistency:
    """Where the tables stand in this snapshot: `block`/`hash` when every projection is at one point."""

    block: int | None
    hash: str | None
    notification_id: int
    why_not: str = ""  # set when `block` is None


class TableSnapshot:
    """Reads on one connection inside one REPEATABLE READ, read-only transaction."""

    def __init__(self, conn: psycopg.Connection, chain_id: int, projections: tuple[str, ...]):
        self.conn = conn
        self.chain_id = chain_id
        self.projections = projections

    # -- where the tables stand --------------------------------------------------------------------------

    def consistency(self) -> Consistency:
        """The block every projection's tables reflect in this snapshot, or why there is none."""
        rows: dict[str, int] = dict(
            self.conn.execute(
                "SELECT projection, notification_id FROM projection_tracking WHERE projection = ANY(%s)",
                (list(self.projections),),
            ).fetchall()
        )
        missing = [p for p in self.projections if p not in rows]
        if missing:
            return Consistency(None, None, 0, f"projection(s) {', '.join(missing)} have not started")
        positions = set(rows.values())
        if len(positions) > 1:
            spread = ", ".join(f"{p} at event {rows[p]}" for p in self.projections)
            return Consistency(None, None, 0, f"the projections are at different points ({spread})")
        position = int(positions.pop())
        stored = self._scalar("SELECT coalesce(max(notification_id), 0) FROM stored_events")
        if position >= stored:
            cursor = self.conn.execute(
                "SELECT indexed_block, indexed_hash FROM follower_cursor WHERE chain_id = %s", (self.chain_id,)
            ).fetchone()
            if cursor is None:
                return Consistency(None, None, position, "nothing has been indexed yet")
            return Consistency(int(cursor[0]), cursor[1], position)
        row = self.conn.execute(
            "SELECT topic, state FROM stored_events WHERE notification_id = %s", (position,)
        ).fetchone()
        event = ev.decode(row[0], bytes(row[1])) if row else None
        if isinstance(event, ev.LogsIngested) and event.to_hash:
            return Consistency(event.to_block, event.to_hash, position)
        return Consistency(None, None, position, "the projections stopped after a revert; waiting for the next logs")

    # -- the read tables ---------------------------------------------------------------------------------

    def tables(self) -> TableState:
        """Every row verify compares, and the column sums."""
        balances = {
            r[0]: BalanceRow(int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in self.conn.execute(
                "SELECT user_address, last_sats, rbtc_balance, wrbtc_balance, fee_vault_wei FROM balances"
            )
        }
        participants = {
            r[0]: ParticipantRow(
                int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8]), bool(r[9])
            )
            for r in self.conn.execute(
                "SELECT user_address, participant_type, virtual_usdt, rbtc_contributed, yield_earned, yield_claimed, "
                "extract(epoch FROM joined_at)::bigint, extract(epoch FROM last_activity_at)::bigint, loyalty_tier, "
                "is_disputed FROM yield_scales_participants"
            )
        }
        burns = {
            (r[0], int(r[1])): BurnRow(int(r[2]), int(r[3]), r[4], int(r[5]), r[6])
            for r in self.conn.execute(
                'SELECT tx_hash, log_index, block_number, extract(epoch FROM "timestamp")::bigint, user_address, '
                "burned_amount, reason FROM emergency_burns"
            )
        }
        sums = self.conn.execute(
            "SELECT coalesce(sum(rbtc_balance), 0), coalesce(sum(fee_vault_wei), 0) FROM balances"
        ).fetchone()
        assert sums is not None
        return TableState(balances, participants, burns, int(sums[0]), int(sums[1]))

    # -- the chain's own logs, as stored -----------------------------------------------------------------

    def log_facts(self, upto_notification: int, contracts: frozenset[str], since: LogFacts | None = None) -> LogFacts:
        """Addresses named by the stored logs up to `upto_notification`, and the canonical EmergencyBurn logs.

        Events are folded in store order; a BlocksReverted drops the burns of the blocks it reverts. Addresses are
        kept even if their logs were reverted: reading one user too many costs a call, missing one hides a row.
        Addresses are found in the stored JSON directly: every string value of 0x + 40 hex digits in it is an
        address (hashes, topics and data words are longer; topics are in lists, not values of keys), and only
        events holding an EmergencyBurn are decoded.
        The store is append-only, so `since` (an earlier result) lets only the newer events be read.
        """
        if since is not None and since.upto_notification > upto_notification:
            since = None
        addresses: set[bytes] = {a.encode() for a in since.addresses} if since else set()
        burns: dict[tuple[str, int], BurnRow] = dict(since.burns) if since else {}
        for topic, state in self._stored(since.upto_notification if since else 0, upto_notification):
            if topic == ev.BLOCKS_REVERTED:
                revert = ev.decode(topic, state)
                assert isinstance(revert, ev.BlocksReverted)
                burns = {k: b for k, b in burns.items() if not revert.from_block <= b.block_number <= revert.to_block}
                continue
            if topic != ev.LOGS_INGESTED:
                continue
            addresses.update(_QUOTED_ADDRESS.findall(state))
            if _BURN_MARK in state:
                burns.update(_burns_in(state))
        found = {a.decode().lower() for a in addresses} - {ZERO_ADDRESS}
        return LogFacts(frozenset(found - contracts), burns, upto_notification)

    def _stored(self, after: int, upto: int) -> Iterator[tuple[str, bytes]]:
        with self.conn.cursor(name="verify_store_scan") as cur:
            cur.itersize = 64
            cur.execute(
                "SELECT topic, state FROM stored_events WHERE notification_id > %s AND notification_id <= %s "
                "ORDER BY notification_id",
                (after, upto),
            )
            for topic, state in cur:
                yield topic, bytes(state)

    def _scalar(self, query: str) -> int:
        row = self.conn.execute(query).fetchone()
        return int(row[0]) if row else 0


@contextmanager
def snapshot(dsn: str, schema: str, chain_id: int, projections: tuple[str, ...]) -> Iterator[TableSnapshot]:
    """A TableSnapshot in a fresh REPEATABLE READ, read-only transaction (rolled back at the end)."""
    with db.connection(dsn, schema) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            yield TableSnapshot(conn, chain_id, projections)
        finally:
            conn.rollback()
