"""The whole pipeline against a simulated chain: follower, store, projections, status."""

from __future__ import annotations

import psycopg

from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from indexer.store.status import read_status
from tests.support.harness import Harness
from tests.support.protocol_logs import (
    ADDRESSES,
    AGG,
    POOL,
    VAULT,
    emergency_burn_logs,
    event_log,
    sync_logs,
)
from tests.support.simchain import RawLog, SimChain
from tests.support.tables import make_config, read_tables

ALICE = "0x" + "11" * 20
BOB = "0x" + "22" * 20


def test_backfill_builds_every_table_and_counts_undecodable_logs(database_url, schema):
    with SimChain(finalized_depth=3) as chain:
        chain.mine([event_log("fee_vault", VAULT, "Deposited", "0x" + "01" * 32, user=ALICE, amount=10**16)])
        chain.mine(sync_logs("0x" + "02" * 32, ALICE, 5000, 5000, 10**15 + 5 * 10**13))
        chain.mine(
            [
                event_log("fee_vault", VAULT, "Deposited", "0x" + "03" * 32, user=BOB, amount=3 * 10**15),
                RawLog(address=AGG, topics=["0x" + "ff" * 32], data="0x"),  # unknown topic0
                RawLog(
                    address=VAULT,
                    topics=[
                        event_log("fee_vault", VAULT, "Deposited", user=BOB, amount=1).topics[0],
                        "0x" + "00" * 12 + "22" * 20,
                    ],
                    data="0x1234",
                ),  # bad data length
            ]
        )
        chain.mine(emergency_burn_logs("0x" + "04" * 32, ALICE, 5000))
        chain.mine(
            [
                event_log(
                    "yield_scales_pool",
                    POOL,
                    "ParticipantJoined",
                    "0x" + "05" * 32,
                    user=BOB,
                    participantType=1,
                    amount=700,
                )
            ]
        )
        chain.mine([], count=5)
        config = make_config(database_url, schema, [chain.url], ADDRESSES)
        assert Indexer(config).run(to_block=chain.head) == ExitCode.OK
        tables = read_tables(database_url, schema)
        status = read_status(database_url, schema)

    balances = {r["user_address"]: r for r in tables["balances"]}
    assert balances[ALICE]["fee_vault_wei"] == 10**16 - (10**15 + 5 * 10**13)
    assert balances[ALICE]["rbtc_balance"] == 0 and balances[ALICE]["last_sats"] == 0
    assert balances[ALICE]["last_sync_delta"] == -5000 and balances[ALICE]["updated_block"] == 4
    assert balances[BOB]["fee_vault_wei"] == 3 * 10**15
    kinds = [(r["tx_type"], r["is_emergency_burn"]) for r in tables["transactions"]]
    assert sorted(kinds) == sorted([("DEPOSIT", False), ("MINT", False), ("DEPOSIT", False), ("BURN", True)])
    assert [(r["user_address"], r["burned_amount"], r["reason"]) for r in tables["emergency_burns"]] == [
        (ALICE, 5000, "Insufficient fees")
    ]
    # Rows come back ordered by (tx_hash, log_index): the mint's tx 0x02… before the emergency burn's 0x04….
    # The emergency transaction's Synced is part of the EMERGENCY_BURN action, so it has no row of its own.
    assert [(r["operation_type"], r["amount_sats"], r["fee_wei"]) for r in tables["oracle_operations_log"]] == [
        ("MINT", 5000, 10**15 + 5 * 10**13),
        ("EMERGENCY_BURN", 5000, 0),
    ]
    assert [
        (r["user_address"], r["participant_type"], r["virtual_usdt"]) for r in tables["yield_scales_participants"]
    ] == [(BOB, 1, 700)]
    assert status["undecodable_logs"] == 2
    assert status["follower"]["indexed_block"] == 10


def _stored_logs(database_url: str, schema: str) -> list[dict]:
    """Every log in the store, in chain order, as stored."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"""SELECT l FROM "{schema}".stored_events,
                   jsonb_array_elements(convert_from(state, 'UTF8')::jsonb->'logs') l
                ORDER BY (l->>'block_number')::bigint, (l->>'log_index')::int"""
        ).fetchall()
    return [row[0] for row in rows]


def test_prefetched_backfill_ranges_store_what_fetching_one_range_at_a_time_stores(database_url, schema):
    """The next backfill range is fetched while the current one is appended; the store and every table come
    out the same as without prefetching, and prefetched ranges were really used."""
    users = ["0x" + f"{i:02x}" * 20 for i in range(1, 8)]
    with SimChain(finalized_depth=3) as chain:
        for i in range(90):
            user = users[i % len(users)]
            deposit = event_log("fee_vault", VAULT, "Deposited", f"0x{2 * i + 1:064x}", user=user, amount=10**16 + i)
            chain.mine([deposit])
            if i % 3 == 0:
                chain.mine(sync_logs(f"0x{2 * i + 2:064x}", user, 1000 + i, 1000 + i, 10**13 + i))
            if i % 10 == 0:
                chain.mine([], count=4)
        config = make_config(database_url, schema, [chain.url], ADDRESSES)
        harness = Harness(config)
        built = {}
        try:
            for prefetch in (False, True):
                harness.reset()
                harness.connect_chain(chain.url, span=4, prefetch=prefetch)
                assert harness.follower is not None
                harness.follower.run(to_block=chain.head)
                harness.project()
                built[prefetch] = (_stored_logs(database_url, schema), read_tables(database_url, schema))
                used = harness.follower.ranges.used
        finally:
            harness.close()
    assert used >= 25, used  # about 150 blocks in ranges of 4, nearly all of them below finality
    logs, tables = built[True]
    assert len(logs) == 90 + 30 * 3
    assert logs == built[False][0]
    assert tables == built[False][1]
