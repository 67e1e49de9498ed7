"""Real conditions on a real anvil: odd finality answers, replays and rebuilds that are interrupted or lost,
locks lost with their connection, failover endpoints of another chain, nodes without optional fields."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from web3 import Web3

from indexer.config import load_config
from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from indexer.store.event_store import EventStore
from projections.engine import registry
from projections.engine.rebuild import RebuildAbandoned, rebuild
from tests.support.anvil import free_port, start_anvil
from tests.support.compare import assert_tables_match_model, wait_for_model
from tests.support.daemon import REPO, cli, start_daemon, write_config
from tests.support.faultproxy import FaultProxy
from tests.support.scenario import Deployment, ScenarioDriver
from tests.support.tables import read_tables


@pytest.fixture
def chain():
    node = start_anvil()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        yield node, w3, Deployment.deploy(w3)
    finally:
        node.stop()


def _in_thread(indexer: Indexer, **kwargs) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(indexer.run(**kwargs)), daemon=True)
    thread.start()
    return thread, result


def _live_tables(database_url: str, schema: str) -> dict[str, list]:
    return read_tables(database_url, schema, None)


# -- finality -------------------------------------------------------------------------------------------


def test_one_null_finalized_answer_does_not_lower_finality(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=31, users=6)
    driver.run(100)  # anvil's finalized block is head - 64
    with FaultProxy(node.url, seed=3) as proxy:
        proxy.configure(null_finalized=1)
        config = write_config(tmp_path / "c.toml", database_url, schema, proxy.url, deployment, confirmations=2)
        stop = threading.Event()
        thread, result = _in_thread(Indexer(load_config(config), stop=stop))
        try:
            wait_for_model(database_url, schema, driver.model.expected_tables())
            assert proxy.stats["null_finalized"] == 1
            # An ordinary reorg: deeper than `confirmations`, far above the node's finalized block.
            w3.provider.make_request("anvil_reorg", [5, []])
            driver.model.recheck_canonical(w3)
            driver.run(5)
            wait_for_model(database_url, schema, driver.model.expected_tables())
            assert thread.is_alive(), f"the daemon stopped: exit {result}"
        finally:
            stop.set()
            thread.join(timeout=30)
    assert result == [ExitCode.OK]


@pytest.mark.parametrize("variant", ["no finalized tag", "no blockTimestamp", "per-contract start blocks"])
def test_nodes_and_configurations_that_differ(database_url, schema, chain, tmp_path, variant):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=41, users=6)
    driver.run(90)
    head = w3.eth.block_number
    with FaultProxy(node.url, seed=4) as proxy:
        if variant == "no finalized tag":
            proxy.configure(null_finalized=-1)
        if variant == "no blockTimestamp":
            proxy.configure(strip_block_timestamp=True)
        config = write_config(tmp_path / "c.toml", database_url, schema, proxy.url, deployment, max_block_range=16)
        if variant == "per-contract start blocks":
            text = config.read_text()
            for role, address in deployment.addresses.items():
                text = text.replace(
                    f'address = "{address}"\nstart_block = {deployment.start_block}',
                    f'address = "{address}"\nstart_block = {deployment.deploy_blocks[role]}',
                )
            config.write_text(text)
            assert len({deployment.deploy_blocks[r] for r in deployment.addresses}) >= 3
        proc = start_daemon(config, "run", "--to-block", str(head), stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        if variant == "no finalized tag":
            assert proxy.stats["null_finalized"] >= 5
            assert "node has no 'finalized' block tag" in err
        if variant == "no blockTimestamp":
            assert proxy.stats["requests"] > 0
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())


# -- replay and rebuild ---------------------------------------------------------------------------------


def test_replay_below_the_undo_window_on_a_store_of_many_events(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=8, users=6)
    driver.run(150)
    head = w3.eth.block_number
    config = write_config(
        tmp_path / "c.toml", database_url, schema, node.url, deployment, max_block_range=8, initial_block_range=8
    )
    assert cli(config, "run", "--to-block", str(head)).returncode == 0
    with psycopg.connect(database_url) as conn:
        events = conn.execute(f'SELECT count(*) FROM "{schema}".stored_events').fetchone()[0]
    assert events > 10  # more than one rebuild page of stored events
    result = cli(config, "replay", "--from-block", str(deployment.start_block + 5))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())
    again = cli(config, "run", "--to-block", str(head))
    assert again.returncode == 0, again.stderr[-3000:]
    rebuilt = cli(config, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())


class _StopAfterPages(EventStore):
    """The real store, with a stop requested once a rebuild has read `pages` pages (a SIGTERM mid-rebuild)."""

    def arm(self, stop: threading.Event, pages: int) -> None:
        self._stop, self._pages = stop, pages

    def notifications(self, after, limit, stop=None):
        page = super().notifications(after, limit, stop)
        self._pages -= 1
        if self._pages <= 0:
            self._stop.set()
        return page


def test_a_stop_during_a_rebuild_abandons_the_shadow_and_keeps_the_live_tables(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=9, users=6)
    driver.run(120)
    config = write_config(
        tmp_path / "c.toml", database_url, schema, node.url, deployment, max_block_range=8, initial_block_range=8
    )
    assert cli(config, "run", "--to-block", str(w3.eth.block_number)).returncode == 0
    before = _live_tables(database_url, schema)
    with psycopg.connect(database_url) as conn:
        tracking_before = conn.execute(f'SELECT * FROM "{schema}".projection_tracking ORDER BY 1').fetchall()
    store = _StopAfterPages(database_url, schema, 3)
    stop = threading.Event()
    for pages in (2, 4):  # during the first pass, and during the catch-up under the tracking locks
        stop.clear()
        store.arm(stop, pages)
        with pytest.raises(RebuildAbandoned):
            rebuild(database_url, schema, store, registry.build(), page_size=2, stop=stop)
        assert _live_tables(database_url, schema) == before
        with psycopg.connect(database_url) as conn:
            assert conn.execute(f'SELECT * FROM "{schema}".projection_tracking ORDER BY 1').fetchall() == (
                tracking_before
            )
            shadows = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}_rb_%",)
            ).fetchone()[0]
            assert shadows == 0
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())
    store.datastore.close()


def test_a_replay_request_is_done_only_once_performed(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=12, users=6)
    driver.run(40)
    with FaultProxy(node.url, seed=5) as proxy:
        config = write_config(tmp_path / "c.toml", database_url, schema, proxy.url, deployment)
        daemon = start_daemon(config, "run")
        try:
            wait_for_model(database_url, schema, driver.model.expected_tables())
            # The replay reads the block below it: refused, so the replay fails (and the follower's rounds too).
            proxy.configure(refuse_methods=frozenset({"eth_getBlockByNumber"}))
            waited = cli(config, "replay", "--from-block", str(deployment.start_block + 3), "--timeout", "6")
            assert waited.returncode == 1, waited.stdout
            assert "did not perform replay request" in waited.stderr
            assert "invalid params for eth_getBlockByNumber" in waited.stderr
            with psycopg.connect(database_url) as conn:
                pending = conn.execute(f'SELECT done_at FROM "{schema}".replay_requests').fetchall()
            assert pending == [(None,)]
            proxy.configure(refuse_methods=frozenset())  # the queued request is performed once the node answers
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with psycopg.connect(database_url) as conn:
                    done = conn.execute(f'SELECT done_at FROM "{schema}".replay_requests').fetchone()[0]
                if done is not None:
                    break
                time.sleep(0.2)
            assert done is not None
            wait_for_model(database_url, schema, driver.model.expected_tables())
            with psycopg.connect(database_url) as conn:
                reverts = conn.execute(
                    f"SELECT count(*) FROM \"{schema}\".stored_events WHERE topic LIKE '%BlocksReverted%'"
                ).fetchone()[0]
            assert reverts == 1
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)


# -- single writer and chain identity -------------------------------------------------------------------


def test_advisory_locks_are_re_taken_after_their_connection_is_lost(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=13, users=4)
    driver.run(20)
    config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    daemon = start_daemon(config, "run", "--only", "follower")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and daemon.poll() is None:
            status = cli(config, "status", "--json")
            if '"indexed_block": ' + str(w3.eth.block_number) in status.stdout:
                break
            time.sleep(0.3)
        second = cli(config, "run", "--only", "follower", "--to-block", "1")
        assert second.returncode == ExitCode.ALREADY_RUNNING, second.stderr
        with psycopg.connect(database_url, autocommit=True) as conn:
            holders = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (f"rbtc-indexer lock rbtc-follower:{schema}:31337",),
            ).fetchall()
            assert len(holders) == 1, holders
            conn.execute("SELECT pg_terminate_backend(%s)", (holders[0][0],))
        time.sleep(3)  # the daemon notices within its lock check interval and re-takes the lock
        third = cli(config, "run", "--only", "follower", "--to-block", "1")
        assert third.returncode == ExitCode.ALREADY_RUNNING, third.stderr
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_a_failover_endpoint_of_another_chain_is_a_configuration_error(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    ScenarioDriver(w3, deployment, seed=14, users=4).run(10)
    with FaultProxy(node.url, seed=6) as proxy, FaultProxy(node.url, seed=7) as other:
        other.configure(chain_id=31338)
        config = write_config(tmp_path / "c.toml", database_url, schema, proxy.url, deployment)
        both = f'rpc_urls = ["{proxy.url}", "{other.url}"]'
        config.write_text(config.read_text().replace(f'rpc_urls = ["{proxy.url}"]', both))
        daemon = start_daemon(config, "run", stderr=subprocess.PIPE)
        time.sleep(3)
        assert daemon.poll() is None
        proxy.down = True  # failover to the second endpoint, which serves another chain
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == ExitCode.USAGE, err[-3000:]
    assert "serves chain id 31338" in err


# -- health, readiness and the watchdog -----------------------------------------------------------------


def _http(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return 0  # not listening (yet)


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_stuck_follower_turns_health_and_readiness_red_and_stops_the_watchdog(
    database_url, schema, chain, tmp_path
):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=15, users=4)
    driver.run(20)
    port = free_port()
    sock_dir = tempfile.mkdtemp(prefix="sd", dir="/tmp")
    sock_path = os.path.join(sock_dir, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(0.2)

    def pings(seconds: float) -> int:
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                count += listener.recv(4096).decode().split("\n").count("WATCHDOG=1")
            except TimeoutError:
                pass
        return count

    with FaultProxy(node.url, seed=8) as proxy:
        config = write_config(tmp_path / "c.toml", database_url, schema, proxy.url, deployment)
        config.write_text(
            config.read_text().replace("[http]\nenabled = false", f'[http]\nlisten = "127.0.0.1:{port}"')
            + "\n[indexer]\nready_max_lag_blocks = 2\nstall_timeout = 3\n"
        )
        env = {**os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000", "PYTHONUNBUFFERED": "1"}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "indexer", "--config", str(config), "run"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            assert _until(lambda: _http(base + "/readyz") == 200, 60)
            assert _http(base + "/healthz") == 200 and pings(1.0) >= 1
            with psycopg.connect(database_url) as conn:
                lag = conn.execute(
                    f"SELECT component, lag_seconds FROM \"{schema}\".sync_status ORDER BY 1"
                ).fetchall()
            assert lag and all(seconds == 0.0 for _, seconds in lag), lag

            # Every eth_getLogs answer is now refused by the checks: the follower retries for ever, busy but stuck.
            proxy.configure(empty_logs_rate=1.0)
            driver.run(6)
            assert _until(lambda: _http(base + "/readyz") == 503, 20)  # behind by more than 2 blocks: not ready
            assert _http(base + "/healthz") == 200  # not yet stuck for stall_timeout
            assert _until(lambda: _http(base + "/healthz") == 503, 20)
            pings(0.5)  # a ping may be in flight
            assert pings(2.0) == 0, "the watchdog was fed while the follower was stuck"

            proxy.clear_faults()
            assert _until(lambda: _http(base + "/readyz") == 200, 60)  # caught up again: ready again
            assert _http(base + "/healthz") == 200 and pings(1.5) >= 1
            wait_for_model(database_url, schema, driver.model.expected_tables())
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=30)
            listener.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
    assert daemon.returncode == 0, err[-3000:]
    assert "follower made no progress while behind the head" in err


# -- secrets --------------------------------------------------------------------------------------------

SECRET = "pl4nt3dS3cr3t"


def _wait_until_ready(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5):
                return
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, f"/readyz not 200 within {timeout}s"
            time.sleep(0.1)


def test_no_planted_secret_reaches_logs_metrics_or_status(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=16, users=4)
    driver.run(30)
    port = free_port()
    with FaultProxy(node.url, seed=9) as proxy:  # answers on any path, as providers with keys in paths do
        dead = f"http://user:{SECRET}@127.0.0.1:{free_port()}/v3/{SECRET}?apikey={SECRET}"
        live = f"http://{SECRET}@127.0.0.1:{proxy.port}?key={SECRET}#{SECRET}"
        dsn = database_url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
        assert SECRET in dsn
        config = write_config(tmp_path / "c.toml", "postgresql://placeholder@127.0.0.1/none", schema, "http://x",
                              deployment)
        config.write_text(
            config.read_text().replace("[http]\nenabled = false", f'[http]\nlisten = "127.0.0.1:{port}"')
            .replace('level = "info"', 'level = "debug"').replace('[log]\nformat = "json"',
                                                                  '[log]\nformat = "json"\nlevel = "debug"')
        )
        env = {**os.environ, "RBTC_INDEXER_RPC_URL": f"{dead},{live}", "RBTC_INDEXER_DATABASE_URL": dsn,
               "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "indexer", "--config", str(config)]
        outputs: list[str] = []
        daemon = subprocess.Popen([*command, "run"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_model(database_url, schema, driver.model.expected_tables())
            _wait_until_ready(base)  # the tables can match a moment before the ready pass runs
            for path in ("/metrics", "/status", "/healthz", "/readyz"):
                with urllib.request.urlopen(base + path, timeout=5) as response:
                    outputs.append(response.read().decode())
            assert 'endpoint="http://127.0.0.1:' in outputs[0]  # the endpoint label is there, without its key
            for args in (["status", "--json"], ["status"], ["replay", "--from-block", str(deployment.start_block)]):
                done = subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stderr
                outputs += [done.stdout, done.stderr]
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=30)
        outputs += [out, err]
    assert daemon.returncode == 0, err[-3000:]
    assert "will retry" in err  # the dead endpoint was tried and reported
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f'SELECT * FROM "{schema}".sync_status').fetchall()
    outputs.append(repr(rows))
    leaks = [text[max(0, text.find(SECRET) - 200): text.find(SECRET) + 50] for text in outputs if SECRET in text]
    assert not leaks, leaks


def test_fix_the_abi_and_rebuild_decodes_the_stored_logs_again(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=18, users=6)
    driver.run(60)
    broken = json.loads((REPO / "abi" / "FeeVault.json").read_text())
    broken = [item for item in broken if item.get("name") != "Deposited"]
    (tmp_path / "FeeVault-broken.json").write_text(json.dumps(broken))
    config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    good = config.read_text()
    address = deployment.addresses["fee_vault"]
    with_broken_abi = f'address = "{address}"\nabi = "FeeVault-broken.json"\n'
    config.write_text(good.replace(f'address = "{address}"\n', with_broken_abi))
    assert cli(config, "run", "--to-block", str(w3.eth.block_number)).returncode == 0
    with psycopg.connect(database_url) as conn:
        undecodable = conn.execute(
            f"SELECT undecodable_logs FROM \"{schema}\".sync_status WHERE component = 'follower'"
        ).fetchone()[0]
    assert undecodable > 0  # the Deposited logs were kept, undecoded
    expected = driver.model.expected_tables()
    with pytest.raises(AssertionError):
        assert_tables_match_model(database_url, schema, expected)
    config.write_text(good)  # the ABI is fixed
    rebuilt = cli(config, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert_tables_match_model(database_url, schema, expected)
    assert f"({_logs_events(database_url, schema)} decoded again" in rebuilt.stdout


def _logs_events(database_url: str, schema: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            f"SELECT count(*) FROM \"{schema}\".stored_events WHERE topic LIKE %s", ("%LogsIngested%",)
        ).fetchone()[0]


def test_a_rebuild_decodes_again_only_what_another_decoder_decoded(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = ScenarioDriver(w3, deployment, seed=19, users=6)
    driver.run(40)
    config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    assert cli(config, "run", "--to-block", str(w3.eth.block_number)).returncode == 0
    expected = driver.model.expected_tables()
    events = _logs_events(database_url, schema)
    assert events > 0
    # Same ABIs as when the logs were stored: nothing to decode again, the same tables.
    same = cli(config, "rebuild")
    assert same.returncode == 0, same.stderr[-3000:]
    assert "(0 decoded again" in same.stdout
    assert_tables_match_model(database_url, schema, expected)
    # Events stored before decoders had fingerprints carry none: those are decoded again.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            f"UPDATE \"{schema}\".stored_events SET state = convert_to((convert_from(state, 'UTF8')::jsonb "
            "- 'decoded_with')::text, 'UTF8') WHERE topic LIKE %s",
            ("%LogsIngested%",),
        )
    old = cli(config, "rebuild")
    assert old.returncode == 0, old.stderr[-3000:]
    assert f"({events} decoded again" in old.stdout
    assert_tables_match_model(database_url, schema, expected)
