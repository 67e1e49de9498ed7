"""Operations while the daemon runs: replay, blue/green rebuild under readers, single-writer locks."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from web3 import Web3

from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from projections.engine import registry
from projections.engine.rebuild import RebuildInProgress, rebuild
from tests.support.anvil import start_anvil
from tests.support.compare import wait_for_model
from tests.support.daemon import cli, write_config
from tests.support.scenario import Deployment, ScenarioDriver


@pytest.fixture
def running(database_url, schema, tmp_path):
    """A scenario on anvil with the daemon following it in a thread."""
    node = start_anvil()
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    driver = ScenarioDriver(w3, deployment, seed=17, users=8)
    driver.run(150)  # more blocks than anvil's finality depth (64), so early blocks are final
    config_path = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    from indexer.config import load_config

    stop = threading.Event()
    indexer = Indexer(load_config(config_path), stop=stop)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(indexer.run()), daemon=True)
    thread.start()
    wait_for_model(database_url, schema, driver.model.expected_tables())
    try:
        yield node, w3, deployment, driver, config_path, indexer
    finally:
        stop.set()
        thread.join(timeout=30)
        node.stop()
    assert result == [ExitCode.OK]


@pytest.mark.parametrize("depth", ["inside the undo window", "below the undo window"])
def test_replay_while_the_daemon_runs_ends_identical(database_url, schema, running, depth):
    _, w3, deployment, driver, config_path, _ = running
    head = w3.eth.block_number
    from_block = head - 10 if depth == "inside the undo window" else deployment.start_block
    result = cli(config_path, "replay", "--from-block", str(from_block))
    assert result.returncode == 0, result.stderr
    assert "queued for the running daemon" in result.stdout
    driver.run(5)
    with psycopg.connect(database_url) as conn:
        reverts = conn.execute(
            f"SELECT count(*) FROM \"{schema}\".stored_events WHERE topic LIKE '%BlocksReverted%'"
        ).fetchone()[0]
    assert reverts == 1
    wait_for_model(database_url, schema, driver.model.expected_tables())


def test_blue_green_rebuild_never_shows_readers_a_partial_table(database_url, schema, running):
    _, _, _, driver, config_path, indexer = running
    queries = {
        "transactions": "SELECT count(*), coalesce(sum(amount), 0) FROM transactions",
        "balances": "SELECT count(*), coalesce(sum(fee_vault_wei), 0) FROM balances",
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        expected = {name: conn.execute(q).fetchone() for name, q in queries.items()}
    seen: dict[str, set] = {name: set() for name in queries}
    errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            while not done.is_set():
                for name, query in queries.items():
                    try:
                        seen[name].add(conn.execute(query).fetchone())
                    except psycopg.Error as exc:
                        errors.append(str(exc))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    result = cli(config_path, "rebuild", "transactions", "balances")
    time.sleep(0.3)
    done.set()
    for t in threads:
        t.join()
    assert result.returncode == 0, result.stderr
    assert errors == []
    assert seen == {name: {expected[name]} for name in queries}
    wait_for_model(database_url, schema, driver.model.expected_tables())


def test_a_second_rebuild_of_the_same_projection_is_refused(database_url, schema, running):
    _, _, _, _, config_path, indexer = running
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"rbtc-rebuild:{schema}:balances",))
        with pytest.raises(RebuildInProgress):
            rebuild(database_url, schema, indexer.store, registry.build(["balances"])[0])
        result = cli(config_path, "rebuild", "balances")
    assert result.returncode == 1
    assert "already running" in result.stderr and "Traceback" not in result.stderr


def test_a_second_run_against_the_same_store_is_refused(running):
    *_, config_path, _ = running
    result = cli(config_path, "run", timeout=60)
    assert result.returncode == 4
    assert "already runs the chain follower" in result.stderr
