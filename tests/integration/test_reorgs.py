"""Reorgs on a simulated chain: after any history of appends, reorgs and switches back to an old fork,
every read table equals the tables built from scratch from the final canonical chain alone."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.errors import ExitCode
from indexer.follow.follower import ReorgBelowFinality
from indexer.runtime.app import Indexer
from tests.support.harness import Harness
from tests.support.protocol_logs import ADDRESSES, POOL, VAULT, WRBTC, ZERO, emergency_burn_logs, event_log, sync_logs
from tests.support.simchain import RawLog, SimChain
from tests.support.tables import make_config, read_tables

USERS = ["0x" + c * 20 for c in ("11", "22", "33")]


def activity(kind: int, user: str, amount: int) -> list[RawLog]:
    """One transaction's logs of a given kind (shapes as on chain; values need not follow the contracts)."""
    tx = "0x" + uuid.uuid4().hex * 2
    if kind == 0:
        return [event_log("fee_vault", VAULT, "Deposited", tx, user=user, amount=amount)]
    if kind == 1:
        return sync_logs(tx, user, amount, amount, 7)
    if kind == 2:
        return emergency_burn_logs(tx, user, amount)
    if kind == 3:
        return [
            event_log(
                "yield_scales_pool", POOL, "ParticipantJoined", tx, user=user, participantType=amount % 2, amount=amount
            )
        ]
    if kind == 4:
        return [event_log("yield_scales_pool", POOL, "YieldClaimed", tx, user=user, amount=amount)]
    if kind == 5:
        return [
            event_log("vault_wrbtc", WRBTC, "Transfer", tx, **{"from": ZERO, "to": user, "amount": amount}),
            event_log("vault_wrbtc", WRBTC, "Wrapped", tx, user=user, amount=amount),
        ]
    return [event_log("fee_vault", VAULT, "Withdrawn", tx, user=user, amount=amount)]


block_logs = st.lists(st.tuples(st.integers(0, 6), st.sampled_from(USERS), st.integers(1, 10**6)), max_size=3).map(
    lambda txs: [log for kind, user, amount in txs for log in activity(kind, user, amount)]
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.lists(block_logs, min_size=1, max_size=6)),
        st.tuples(st.just("reorg"), st.integers(1, 64), st.lists(block_logs, min_size=0, max_size=8)),
        st.tuples(st.just("switch"), st.integers(0, 10**6)),
        st.tuples(st.just("follow"), st.integers(1, 4)),
        st.tuples(st.just("project"), st.just(0)),
    ),
    min_size=1,
    max_size=14,
)


@pytest.fixture(scope="module")
def harnesses(database_url):
    """A live and a reference schema, reused (and reset) across generated histories."""
    made = []
    for _ in range(2):
        schema = f"t_{uuid.uuid4().hex[:12]}"
        made.append(Harness(make_config(database_url, schema, ["http://127.0.0.1:1"], ADDRESSES)))
    yield made
    for h in made:
        h.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{h.schema}" CASCADE')
            conn.execute(f"""DO $$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace
                             WHERE nspname LIKE '{h.schema}_rb_%' LOOP EXECUTE 'DROP SCHEMA ' || quote_ident(s)
                             || ' CASCADE'; END LOOP; END $$""")


def _fork_point(chain: SimChain, tip_hash: str) -> int:
    block = chain.get_block(tip_hash)
    while block is not None and not chain.is_canonical(block["hash"]):
        block = chain.get_block(block["parentHash"])
    return block["number"] if block else 0


@settings(
    max_examples=int(os.environ.get("REORG_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(finalized_depth=st.sampled_from([4, 12, 70]), history=operations)
def test_any_history_of_reorgs_ends_equal_to_a_build_from_the_canonical_chain(harnesses, finalized_depth, history):
    live, reference = harnesses
    live.reset()
    reference.reset()
    with SimChain(finalized_depth=finalized_depth) as chain:
        live.connect_chain(chain.url)
        tips: list[str] = []
        max_head = 0
        for op in history:
            if op[0] == "mine":
                for logs in op[1]:
                    chain.mine(logs)
            elif op[0] == "reorg":
                depth = min(op[1], finalized_depth - 1, chain.head - 1, max_head - finalized_depth + chain.head)
                if depth >= 1 and chain.head - depth > max_head - finalized_depth:
                    tips.append(chain.canonical_blocks()[-1]["hash"])
                    chain.reorg(depth, op[2])
            elif op[0] == "switch" and tips:
                tip = tips[op[1] % len(tips)]
                fork = _fork_point(chain, tip)
                if (
                    not chain.is_canonical(tip)
                    and fork > max(max_head, chain.get_block(tip)["number"]) - finalized_depth
                ):
                    tips.append(chain.canonical_blocks()[-1]["hash"])
                    chain.switch_to(tip)
            elif op[0] == "follow":
                live.follow(op[1])
            else:
                live.project()
            max_head = max(max_head, chain.head)
        # The chain moves on past every height the indexer has seen, as real chains do: a fork that is
        # shorter than what was indexed is only distinguishable from a lagging node once it grows.
        while chain.head <= max_head:
            chain.mine([])
        live.follow_to_head()
        live.project()
        reference.connect_chain(chain.url)
        reference.follow_to_head()
        reference.project()
    assert read_tables(live.dsn, live.schema) == read_tables(reference.dsn, reference.schema)


def test_reorg_below_finality_stops_the_daemon_with_its_own_exit_code(database_url, schema):
    with SimChain(finalized_depth=2) as chain:
        for i in range(6):
            chain.mine(activity(0, USERS[0], i + 1))
        config = make_config(database_url, schema, [chain.url], ADDRESSES)
        assert Indexer(config).run(to_block=chain.head) == ExitCode.OK
        chain.reorg(4, [activity(1, USERS[1], 5)] * 5)  # reaches below the finalized block the indexer saw
        h = Harness(config)
        h.connect_chain(chain.url)
        with pytest.raises(ReorgBelowFinality):
            h.follow_to_head()
        h.close()
        assert Indexer(config).run(to_block=chain.head) == ExitCode.REORG_BELOW_FINALITY
    with psycopg.connect(database_url) as conn:
        error = conn.execute(
            f'SELECT last_error FROM "{schema}".sync_status WHERE component = %s', ("follower",)
        ).fetchone()[0]
    assert "refusing to rewrite final history" in error


def test_a_lagging_node_is_not_a_reorg(database_url, schema):
    with SimChain(finalized_depth=20) as chain:
        for i in range(10):
            chain.mine(activity(i % 7, USERS[i % 3], i + 1))
        h = Harness(make_config(database_url, schema, [chain.url], ADDRESSES))
        h.connect_chain(chain.url)
        h.follow_to_head()
        before = h.store.max_notification_id()
        chain.set_lag(5)  # the node now claims an older head
        h.follow(3)
        chain.set_lag(0)
        chain.mine(activity(0, USERS[0], 9))
        h.follow_to_head()
        h.project()
        reverted = h.conn.execute("SELECT count(*) FROM stored_events WHERE topic LIKE '%BlocksReverted%'").fetchone()
        assert reverted[0] == 0
        assert h.store.max_notification_id() == before + 1
        h.close()


def test_a_reorg_while_stopped_is_found_on_start_up(database_url, schema, tmp_path):
    with SimChain(finalized_depth=30) as chain:
        for i in range(8):
            chain.mine(activity(i % 7, USERS[i % 3], i + 10))
        config = make_config(database_url, schema, [chain.url], ADDRESSES)
        assert Indexer(config).run(to_block=chain.head) == ExitCode.OK
        chain.reorg(3, [activity(2, USERS[0], 3), activity(0, USERS[1], 4)])  # shorter fork, lower head
        assert Indexer(config).run(to_block=chain.head) == ExitCode.OK
        live = read_tables(database_url, schema)
        ref_schema = f"{schema}_ref"
        assert Indexer(make_config(database_url, ref_schema, [chain.url], ADDRESSES)).run(to_block=chain.head) == 0
        try:
            assert live == read_tables(database_url, ref_schema)
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{ref_schema}" CASCADE')


def test_a_64_block_reorg_at_the_head_after_projection(harnesses):
    live, reference = harnesses
    live.reset()
    reference.reset()
    with SimChain(finalized_depth=70) as chain:
        for i in range(80):
            chain.mine(activity(i % 7, USERS[i % 3], i + 1))
        live.connect_chain(chain.url)
        live.follow_to_head()
        live.project()
        chain.reorg(64, [activity((i + 3) % 7, USERS[(i + 1) % 3], 1000 + i) for i in range(70)])
        live.follow_to_head()
        live.project()
        reverted = live.conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb->>'from_block' FROM stored_events WHERE topic LIKE '%Reverted%'"
        ).fetchall()
        assert reverted == [("17",)]  # blocks 17..80 (64 of them) were orphaned
        reference.connect_chain(chain.url)
        reference.follow_to_head()
        reference.project()
    assert read_tables(live.dsn, live.schema) == read_tables(reference.dsn, reference.schema)
