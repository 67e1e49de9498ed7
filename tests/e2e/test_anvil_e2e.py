"""End to end on a real anvil node running the project's contracts: the indexer's tables equal the scenario
model's, across backfill, SIGKILL and restart, rebuild without RPC, and live reorgs."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import psycopg
import pytest
from web3 import Web3

from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from tests.support.anvil import start_anvil
from tests.support.compare import assert_every_log_stored_once, assert_tables_match_model, wait_for_model
from tests.support.daemon import cli, start_daemon, write_config
from tests.support.faultproxy import FaultProxy
from tests.support.scenario import Deployment, ScenarioDriver
from tests.support.tables import make_config, read_tables


@pytest.fixture
def chain():
    node = start_anvil()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = Deployment.deploy(w3)
        yield node, w3, deployment
    finally:
        node.stop()


def test_backfill_of_a_scenario_equals_the_model(database_url, schema, chain):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=11, users=8)
    driver.run_cases()
    driver.run(160)
    config = make_config(database_url, schema, [node.url], deployment.addresses, start_block=deployment.start_block)
    started = time.monotonic()
    assert Indexer(config).run(to_block=w3.eth.block_number) == ExitCode.OK
    elapsed = time.monotonic() - started
    expected = driver.model.expected_tables()
    assert_tables_match_model(database_url, schema, expected)
    assert all(
        expected[t]
        for t in ("balances", "transactions", "emergency_burns", "yield_scales_participants", "oracle_operations_log")
    ), "the scenario must exercise every table"
    print(f"backfill of {w3.eth.block_number} blocks took {elapsed:.2f}s")


def test_sigkill_during_backfill_then_restart_loses_and_duplicates_nothing(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=5, users=40)
    driver.run(60)
    driver.run_bulk(3000, batch_size=20)
    head = w3.eth.block_number
    config = write_config(
        tmp_path / "c.toml", database_url, schema, node.url, deployment, max_block_range=8, initial_block_range=8
    )
    kills = 0
    while kills < 3:
        proc = start_daemon(config, "run", "--to-block", str(head))
        time.sleep(1.0 + 0.4 * kills)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert cli(config, "run", "--to-block", str(head)).returncode == 0
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())
    assert_every_log_stored_once(
        database_url, schema, w3, list(deployment.addresses.values()), deployment.start_block, head
    )
    assert kills >= 1, "the daemon finished before it could be killed"


def test_rebuild_needs_no_rpc_and_gives_identical_tables(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=3, users=6)
    driver.run(80)
    good = write_config(tmp_path / "good.toml", database_url, schema, node.url, deployment)
    assert cli(good, "run", "--to-block", str(w3.eth.block_number)).returncode == 0
    before = read_tables(database_url, schema)
    dead = write_config(tmp_path / "dead.toml", database_url, schema, "http://127.0.0.1:9", deployment)
    node.stop()
    result = cli(dead, "rebuild")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("rebuilt ") == 5
    assert read_tables(database_url, schema) == before


def test_live_following_through_anvil_reorgs_ends_equal_to_the_model(database_url, schema, chain):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=21, users=6)
    config = make_config(database_url, schema, [node.url], deployment.addresses, start_block=deployment.start_block)
    stop = threading.Event()
    indexer = Indexer(config, stop=stop)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(indexer.run()), daemon=True)
    worker.start()
    try:
        driver.run(30)
        time.sleep(0.5)
        w3.provider.make_request("anvil_reorg", [3, []])  # replace the last 3 blocks with empty ones
        driver.model.recheck_canonical(w3)
        driver.run(20)
        snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
        driver.run(10)
        time.sleep(0.5)
        w3.provider.make_request("evm_revert", [snapshot])
        driver.model.recheck_canonical(w3)
        driver.run(15)  # different transactions on top of the reverted state
        w3.provider.make_request("evm_mine", [])
        driver.model.recheck_canonical(w3)
        wait_for_model(database_url, schema, driver.model.expected_tables())
        with psycopg.connect(database_url) as conn:
            reverts = conn.execute(
                f"SELECT count(*) FROM \"{schema}\".stored_events WHERE topic LIKE '%BlocksReverted%'"
            ).fetchone()[0]
        assert reverts >= 2
    finally:
        stop.set()
        worker.join(timeout=20)
    assert result == [ExitCode.OK]


def test_cli_errors_are_one_clear_line(database_url, schema, chain, tmp_path):
    node, _, deployment = chain
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[chain]\nchain_id = 31337\nrpc_urls = ["ftp://x"]\n[contracts]\n'
        '[[contracts.fee_vault]]\naddress = "0x12"\nstart_block = 0\n'
    )
    result = cli(bad, "status")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "chain.rpc_urls" in result.stderr
    assert "contracts.fee_vault[0].address" in result.stderr
    assert "Traceback" not in result.stderr
    nodb = write_config(
        tmp_path / "nodb.toml", "postgresql://postgres:secret@127.0.0.1:1/x", schema, node.url, deployment
    )
    result = cli(nodb, "status")
    assert result.returncode == 1 and "cannot connect" in result.stderr and "secret" not in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    good = write_config(tmp_path / "good.toml", database_url, schema, node.url, deployment)
    for args in (["run", "--only", "projection:nope"], ["run", "--only", "followers"], ["rebuild", "nope"]):
        result = cli(good, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "nope" in result.stderr or "followers" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_rpc_is_retried_with_backoff_and_reported(database_url, schema, chain, tmp_path):
    _, _, deployment = chain
    config = write_config(
        tmp_path / "c.toml", database_url, schema, "http://user:key@127.0.0.1:9/secretkey", deployment
    )
    proc = start_daemon(config, "run", stderr=subprocess.PIPE)
    lines: list[str] = []
    deadline = time.monotonic() + 60  # wait for the retries themselves, not for a fixed time (a loaded machine)
    while sum("will retry" in line for line in lines) < 3 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=20)
    err = "".join(lines) + rest
    retries = [line for line in err.splitlines() if "will retry" in line]
    assert len(retries) >= 3, err
    assert "secretkey" not in err and "user:key" not in err
    status = cli(config, "status", "--json")
    assert "connection failed" in status.stdout


def test_replay_with_no_daemon_running_re_ingests_without_duplicates(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=8, users=6)
    driver.run(90)
    head = w3.eth.block_number
    config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    assert cli(config, "run", "--to-block", str(head)).returncode == 0
    result = cli(config, "replay", "--from-block", str(deployment.start_block + 5))
    assert result.returncode == 0, result.stderr
    assert "replay complete" in result.stdout
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())
    with psycopg.connect(database_url) as conn:
        logs_after_revert = conn.execute(
            f"""SELECT count(*) FROM "{schema}".stored_events,
                jsonb_array_elements(convert_from(state, 'UTF8')::jsonb->'logs') l
                WHERE notification_id > (SELECT max(notification_id) FROM "{schema}".stored_events
                                         WHERE topic LIKE '%BlocksReverted%')"""
        ).fetchone()[0]
    emitters = [Web3.to_checksum_address(a) for a in deployment.addresses.values()]
    replayed = len(w3.eth.get_logs({"fromBlock": deployment.start_block + 5, "toBlock": head, "address": emitters}))
    assert logs_after_revert == replayed  # exactly the replayed blocks' logs were appended again


@pytest.fixture
def resolved_far_below_the_head(chain):
    """A scenario with disputes filed and resolved, then 500 empty blocks: (node, deployment, model, last block)."""
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=11, users=8)
    driver.run_cases()
    driver.run(40)
    stop_at = w3.eth.block_number
    w3.provider.make_request("anvil_mine", [hex(500)])  # the head is now far beyond any state window
    expected = driver.model.expected_tables()
    assert [r for r in expected["yield_scales_participants"] if not r["is_disputed"]], "no dispute was resolved"
    return node, deployment, driver.model, stop_at


def test_a_backfill_that_stops_far_below_the_head_sees_dispute_resolutions(
    database_url, schema, resolved_far_below_the_head
):
    """`resolveDispute` emits nothing; a node that serves old state (an archive node, anvil) must still let a
    run that ends far below the head (`--to-block`) close the disputes resolved before its last block."""
    node, deployment, model, stop_at = resolved_far_below_the_head
    config = make_config(database_url, schema, [node.url], deployment.addresses, start_block=deployment.start_block)
    assert Indexer(config).run(to_block=stop_at) == ExitCode.OK
    assert_tables_match_model(database_url, schema, model.expected_tables())


def test_a_pruned_node_shows_resolutions_once_the_follower_reaches_its_state(
    database_url, schema, resolved_far_below_the_head
):
    """A full node keeps state for the last blocks only: below them the disputes stay open (nothing can tell
    otherwise), and a run that goes on to the head closes them; no error stops the follower on the way, and
    once the node has refused old state no later range asks it again."""
    node, deployment, model, stop_at = resolved_far_below_the_head
    with FaultProxy(node.url) as proxy:
        proxy.configure(state_blocks=64)
        start, small = deployment.start_block, {"max_block_range": 5, "initial_block_range": 5}
        config = make_config(database_url, schema, [proxy.url], deployment.addresses, start_block=start, **small)
        assert Indexer(config).run(to_block=stop_at) == ExitCode.OK
        # One refused batch (a call per open dispute), though more than ten ranges end with disputes open.
        disputers = {a.sender for a in model.actions.values() if a.kind == "dispute" and a.status == 1}
        assert 0 < proxy.stats["pruned_state"] <= len(disputers)
        assert_tables_match_model(database_url, schema, model.expected_tables(resolutions_visible=False))
        assert Indexer(config).run(to_block=stop_at + 500) == ExitCode.OK
    assert_tables_match_model(database_url, schema, model.expected_tables())
