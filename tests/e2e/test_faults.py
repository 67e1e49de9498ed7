"""An unreliable RPC and database, a crashing daemon: the tables still end equal to the model."""

from __future__ import annotations

import os
import random
import shutil
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
from tests.support.compare import assert_every_log_stored_once, assert_tables_match_model
from tests.support.daemon import cli, start_daemon, write_config
from tests.support.faultproxy import FaultProxy
from tests.support.scenario import Deployment, ScenarioDriver
from tests.support.tables import make_config
from tests.support.tcpproxy import TcpProxy

FAULTS = {
    "http errors": {"error_rate": 0.3},
    "timeouts": {"timeout_rate": 0.15, "timeout_s": 1.5},
    "rate limits": {"rate_limit_rate": 0.3},
    "truncated bodies": {"truncate_rate": 0.3},
    "empty getLogs": {"empty_logs_rate": 0.4},
    "getLogs from another fork": {"forked_logs_rate": 0.4},
    "getLogs with the last logs cut": {"cut_logs_rate": 0.4, "cut_logs_style": "tail"},
    "getLogs with a middle log cut": {"cut_logs_rate": 0.4, "cut_logs_style": "middle"},
    "range limits": {"max_range": 5},
    "lagging backend": {"lag_blocks": 6},
}


@pytest.fixture(scope="module")
def scenario():
    node = start_anvil()
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    driver = ScenarioDriver(w3, deployment, seed=31, users=10)
    driver.run_cases()
    driver.run(120)
    yield node, w3, deployment, driver
    node.stop()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_tables_equal_the_model_under_rpc_faults(database_url, schema, scenario, fault):
    node, w3, deployment, driver = scenario
    head = w3.eth.block_number
    with FaultProxy(node.url, seed=7) as proxy:
        proxy.configure(**FAULTS[fault])
        if fault == "lagging backend":
            threading.Timer(2.0, lambda: proxy.configure(lag_blocks=0)).start()
        config = make_config(
            database_url,
            schema,
            [proxy.url],
            deployment.addresses,
            start_block=deployment.start_block,
            request_timeout=1.0,
            initial_block_range=64,
        )
        assert Indexer(config).run(to_block=head) == ExitCode.OK
        injected = {k: v for k, v in proxy.stats.items() if k not in ("requests", "upstream_calls") and v}
    assert injected, "no fault was injected"
    print(f"{fault}: {injected}")
    assert_every_log_stored_once(
        database_url, schema, w3, list(deployment.addresses.values()), deployment.start_block, head
    )
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())


def test_failover_to_a_second_endpoint_and_back(database_url, schema, scenario):
    node, w3, deployment, driver = scenario
    head = w3.eth.block_number
    with FaultProxy(node.url) as first, FaultProxy(node.url) as second:
        first.configure(down=True)
        threading.Timer(1.5, lambda: first.configure(down=False)).start()
        threading.Timer(2.0, lambda: second.configure(down=True)).start()
        config = make_config(
            database_url,
            schema,
            [first.url, second.url],
            deployment.addresses,
            start_block=deployment.start_block,
            initial_block_range=4,
            max_block_range=4,
        )
        assert Indexer(config).run(to_block=head) == ExitCode.OK
        assert second.stats["upstream_calls"] > 0 and first.stats["upstream_calls"] > 0
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())


def test_thirty_sigkills_with_faults_during_backfill_and_live_following(database_url, schema, tmp_path):
    node = start_anvil()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = Deployment.deploy(w3)
        driver = ScenarioDriver(w3, deployment, seed=41, users=30)
        driver.run(40)
        driver.run_bulk(2500, batch_size=25)
        rng = random.Random(41)
        with FaultProxy(node.url, seed=3) as proxy:
            proxy.configure(error_rate=0.05, rate_limit_rate=0.05, empty_logs_rate=0.05, max_range=40)
            config = write_config(
                tmp_path / "c.toml",
                database_url,
                schema,
                proxy.url,
                deployment,
                initial_block_range=16,
                max_block_range=64,
                request_timeout=2.0,
            )
            kills = 0
            for round_ in range(30):
                proc = start_daemon(config, "run")
                if round_ >= 10:
                    driver.run(rng.randint(1, 4))  # live following: the chain keeps moving
                time.sleep(rng.uniform(0.8, 2.0))
                if proc.poll() is None:
                    kills += 1
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            head = w3.eth.block_number
            final = cli(config, "run", "--to-block", str(head))
            assert final.returncode == 0, final.stderr[-2000:]
            faults = sum(v for k, v in proxy.stats.items() if k not in ("requests", "upstream_calls"))
        print(f"{kills} SIGKILLs, {faults} RPC faults injected")
        assert kills == 30
        assert_tables_match_model(database_url, schema, driver.model.expected_tables())
        assert_every_log_stored_once(
            database_url, schema, w3, list(deployment.addresses.values()), deployment.start_block, head
        )
    finally:
        node.stop()


def terminate_backends(database_url: str, client_ports: list[int]) -> None:
    """End the server side of the given client connections, as a PostgreSQL restart does."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY(%s)", (client_ports,)
        )


def local_cluster() -> str | None:
    """The local PostgreSQL cluster's version, if this test may restart it (the test database is on it)."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return versions[-1] if versions and shutil.which("pg_ctlcluster") and os.geteuid() == 0 else None


@pytest.mark.serial
def test_database_restart_mid_run_is_survived_without_operator_action(database_url, schema, tmp_path):
    """A real restart of the local cluster where the tests may do that; else a proxy whose connections the
    server ends and which refuses new ones for three seconds."""
    node = start_anvil()
    proxy = None
    cluster = local_cluster() if "127.0.0.1:5432" in database_url else None
    dsn = database_url
    if cluster is None:
        host, port = database_url.split("@", 1)[1].split("/", 1)[0].split(":")
        proxy = TcpProxy(host, int(port))
        dsn = database_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
    proc = None
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = Deployment.deploy(w3)
        driver = ScenarioDriver(w3, deployment, seed=51, users=20)
        driver.run(30)
        config = write_config(tmp_path / "c.toml", dsn, schema, node.url, deployment)
        proc = start_daemon(config, "run", stderr=subprocess.PIPE)
        wait_until_indexed(database_url, schema, w3.eth.block_number, proc)
        started = time.monotonic()
        if cluster is not None:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"], check=True)
        else:
            proxy.outage(True, lambda ports: terminate_backends(database_url, ports))
            time.sleep(3.0)
            proxy.outage(False)
        back = time.monotonic()
        driver.run(15)  # the chain moves on while the daemon reconnects
        wait_until_indexed(database_url, schema, w3.eth.block_number, proc)
        print(f"outage {back - started:.1f}s; caught up {time.monotonic() - back:.1f}s after the database was back")
        assert_tables_match_model(database_url, schema, driver.model.expected_tables())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-3000:]
        assert "database" in err  # the outage was noticed and reported
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proxy is not None:
            proxy.close()
        node.stop()


def wait_until_indexed(database_url: str, schema: str, block: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the follower and every projection report `block` (or the daemon dies, or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
        try:
            with psycopg.connect(database_url, connect_timeout=2) as conn:
                row = conn.execute(f'SELECT min(indexed_block), count(*) FROM "{schema}".sync_status').fetchone()
            if row[1] == 6 and row[0] >= block:
                return
        except psycopg.Error:
            pass  # the database is restarting, or the daemon has not migrated yet
        time.sleep(0.2)
    raise AssertionError(f"not indexed up to block {block} within {timeout}s")
