"""The service layer: sd_notify over a real socket, metrics and endpoints over HTTP, and a whole run."""

from __future__ import annotations

import io
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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from indexer.config import Config, HttpConfig
from indexer.errors import ConfigError, ExitCode
from indexer.follow.follower import FollowerProgress
from indexer.ops.http import OpsServer, parse_listen
from indexer.ops.metrics import Metrics, combine
from indexer.ops.progress import BackfillProgress, render, wanted
from indexer.ops.service import Service
from indexer.ops.systemd import Heartbeat, Notifier, Watchdog, watchdog_period
from indexer.runtime.app import Hooks, Indexer, RunState
from indexer.runtime.plan import RunPlan
from indexer.store.events import BlocksReverted, LogsIngested
from projections.engine.runner import ProjectionPosition
from tests.support.protocol_logs import event_log
from tests.support.simchain import SimChain
from tests.support.tables import make_config

ADDRESSES = {
    "oracle_aggregator": "0x" + "a1" * 20,
    "rbtc_synth": "0x" + "b2" * 20,
    "fee_vault": "0x" + "c3" * 20,
    "vault_wrbtc": "0x" + "d4" * 20,
    "yield_scales_pool": "0x" + "e5" * 20,
}
REPO = Path(__file__).resolve().parents[2]
VAULT = ADDRESSES["fee_vault"]
ALICE = "0x" + "11" * 20


# -- helpers ----------------------------------------------------------------------------------------------


class NotifyListener:
    """A bound AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str, bind_to: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 10.0) -> list[str]:
        """Collect datagrams until one has `line` among its lines; return everything received so far."""
        deadline = time.monotonic() + timeout
        while not any(line in m.split("\n") for m in self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} within {timeout}s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def drain(self, seconds: float) -> list[str]:
        """Everything that arrives within `seconds`."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        self.messages.extend(got)
        return got

    def lines(self) -> list[str]:
        return [line for m in self.messages for line in m.split("\n")]


@pytest.fixture
def notify_socket() -> Iterator[NotifyListener]:
    directory = tempfile.mkdtemp(prefix="sd", dir="/tmp")  # short: AF_UNIX paths are limited to 107 bytes
    path = os.path.join(directory, "notify")
    listener = NotifyListener(path, path)
    yield listener
    listener.sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def families(base: str) -> dict[str, list]:
    """name → samples of a /metrics scrape (counter families are named without `_total`)."""
    status, body = get(base + "/metrics")
    assert status == 200
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def sample(fams: dict[str, list], family: str, suffix: str = "", **labels: str) -> float:
    for s in fams[family]:
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {family}{suffix} {labels} in {fams[family]}")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def http_config(config: Config) -> Config:
    return config.model_copy(update={"http": HttpConfig(listen="127.0.0.1:0", enabled=True)})


# -- (a) sd_notify ----------------------------------------------------------------------------------------


def test_notifier_sends_each_message_as_one_datagram(notify_socket):
    notifier = Notifier(notify_socket.address)
    assert notifier.ready("following: lag 0 blocks")
    assert notifier.status("backfilling:\nblock 5 of 10")
    assert notifier.watchdog()
    assert notifier.extend_timeout(1.5)
    assert notifier.stopping()
    notifier.close()
    assert notify_socket.drain(0.5) == [
        "READY=1\nSTATUS=following: lag 0 blocks",
        "STATUS=backfilling: block 5 of 10",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=1500000",
        "STOPPING=1",
    ]


def test_notifier_reaches_an_abstract_socket():
    name = f"rbtc-test-{uuid.uuid4().hex}"
    listener = NotifyListener("@" + name, "\0" + name)
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert listener.wait_for("READY=1", timeout=2)
    finally:
        listener.sock.close()


def test_notifier_is_a_no_op_without_notify_socket():
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()


def test_notifier_survives_a_missing_socket():
    assert not Notifier("/tmp/does-not-exist-" + uuid.uuid4().hex).ready()


def test_watchdog_period_is_half_of_watchdog_usec_for_this_process():
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_period({}) is None
    assert watchdog_period({"WATCHDOG_USEC": "nonsense"}) is None


def test_heartbeat_goes_stale_without_beats():
    now = [100.0]
    heartbeat = Heartbeat(stale_after=5.0, clock=lambda: now[0])
    now[0] += 4.0
    assert heartbeat.fresh()
    now[0] += 2.0
    assert not heartbeat.fresh()
    heartbeat.beat()
    assert heartbeat.fresh() and heartbeat.age() == 0.0


def test_watchdog_pings_only_while_healthy(notify_socket):
    healthy = threading.Event()
    healthy.set()
    watchdog = Watchdog(Notifier(notify_socket.address), 0.05, healthy.is_set).start()
    try:
        notify_socket.wait_for("WATCHDOG=1", timeout=2)
        healthy.clear()
        time.sleep(0.1)
        notify_socket.drain(0.1)  # pings already in flight
        assert notify_socket.drain(0.3) == []
        healthy.set()
        assert "WATCHDOG=1" in notify_socket.drain(0.3)
    finally:
        watchdog.stop()


# -- (b) metrics over HTTP --------------------------------------------------------------------------------


@pytest.fixture
def metrics_server() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics()
    server = OpsServer("127.0.0.1:0", metrics.registry, alive=lambda: True, ready=lambda: False,
                       status=lambda: {"live": {}}).start()
    try:
        yield metrics, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_metrics_endpoint_exposes_every_family(metrics_server):
    metrics, base = metrics_server
    metrics.declare(True, ["balances"])
    fams = families(base)
    for name in ("head_block", "finalized_block", "indexed_block", "lag_blocks", "lag_seconds", "ready",
                 "block_to_row_latency_seconds", "rpc_requests", "rpc_errors", "rpc_request_duration_seconds",
                 "getlogs_block_range", "reorgs", "reorg_depth_blocks", "logs_appended", "undecodable_logs",
                 "projection_events_applied"):
        assert f"rbtc_indexer_{name}" in fams, name


def test_metrics_move_when_hooks_are_called(metrics_server):
    metrics, base = metrics_server
    hooks = metrics.hooks()
    progress = FollowerProgress(head=120, finalized=100, indexed_block=50, logs_appended=7, undecodable_logs=1)
    ingested = LogsIngested(chain_id=1, from_block=1, to_block=50, to_hash=None, finalized=100, head=120, logs=[])
    hooks.on_append(progress, ingested)
    progress.indexed_block, progress.logs_appended = 47, 9
    hooks.on_append(progress, BlocksReverted(chain_id=1, from_block=48, to_block=50, reason="reorg"))
    hooks.rpc_observer("eth_getLogs", "http://node", 0.02, None)
    hooks.rpc_observer("eth_getLogs", "http://node", 10.0, "timeout")
    tracking = ProjectionPosition("balances", notification_id=3, finalized_seen=100, indexed_block=40, events_applied=5)
    hooks.on_batch("balances", tracking, 5, [time.time() - 0.2, time.time() - 0.3])
    metrics.observe_follower(progress, span=750)

    fams = families(base)
    assert sample(fams, "rbtc_indexer_head_block") == 120
    assert sample(fams, "rbtc_indexer_finalized_block") == 100
    assert sample(fams, "rbtc_indexer_indexed_block", component="follower") == 47
    assert sample(fams, "rbtc_indexer_indexed_block", component="projection:balances") == 40
    assert sample(fams, "rbtc_indexer_lag_blocks", component="follower") == 73
    assert sample(fams, "rbtc_indexer_lag_blocks", component="projection:balances") == 80
    assert sample(fams, "rbtc_indexer_lag_seconds", component="follower") >= 0
    assert sample(fams, "rbtc_indexer_logs_appended", "_total") == 9
    assert sample(fams, "rbtc_indexer_undecodable_logs", "_total") == 1
    assert sample(fams, "rbtc_indexer_reorgs", "_total", reason="reorg") == 1
    assert sample(fams, "rbtc_indexer_reorg_depth_blocks", "_sum", reason="reorg") == 3
    assert sample(fams, "rbtc_indexer_rpc_requests", "_total", method="eth_getLogs", endpoint="http://node") == 2
    assert sample(fams, "rbtc_indexer_rpc_errors", "_total", method="eth_getLogs", endpoint="http://node",
                  kind="timeout") == 1
    assert sample(fams, "rbtc_indexer_rpc_request_duration_seconds", "_count", method="eth_getLogs") == 2
    assert sample(fams, "rbtc_indexer_getlogs_block_range") == 750
    assert sample(fams, "rbtc_indexer_projection_events_applied", "_total", projection="balances") == 5
    assert sample(fams, "rbtc_indexer_block_to_row_latency_seconds", "_count", projection="balances") == 2
    assert 0.4 <= sample(fams, "rbtc_indexer_block_to_row_latency_seconds", "_sum", projection="balances") < 5
    assert sample(fams, "rbtc_indexer_block_to_row_latency_seconds", "_bucket", projection="balances",
                  le="0.005") == 0


def test_ready_passes_carry_projections_over_empty_blocks():
    metrics = Metrics()
    progress = FollowerProgress(head=200, finalized=190, indexed_block=200)
    metrics.observe_follower(progress)
    metrics.on_batch("balances", ProjectionPosition("balances", 1, 190, 150, 0), 0, [])
    metrics.on_ready()  # the first pass only notes where the follower is
    assert metrics.indexed()["projection:balances"] == 150
    metrics.on_ready()  # the next pass applied everything stored by then
    assert metrics.indexed()["projection:balances"] == 200
    assert metrics.lag()["projection:balances"]["lag_blocks"] == 0


def test_lag_seconds_counts_from_when_the_head_was_first_seen():
    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.observe_follower(FollowerProgress(head=10, indexed_block=10))
    now[0] += 5
    metrics.observe_follower(FollowerProgress(head=12, indexed_block=10))
    now[0] += 3
    assert metrics.lag()["follower"]["lag_seconds"] == 0.0  # not refreshed yet
    metrics.observe_follower(FollowerProgress(head=12, indexed_block=10))
    assert metrics.lag()["follower"]["lag_seconds"] == 3.0
    metrics.observe_follower(FollowerProgress(head=12, indexed_block=12))
    assert metrics.lag()["follower"]["lag_seconds"] == 0.0


def test_combined_hooks_call_everyone_and_swallow_failures():
    calls: list[str] = []

    def broken(*_: object) -> None:
        raise RuntimeError("bug in an observer")

    hooks = combine(Hooks(on_ready=broken, rpc_observer=broken), None,
                    Hooks(on_ready=lambda: calls.append("ready"), rpc_observer=lambda *a: calls.append(a[0])))
    hooks.on_ready()
    hooks.rpc_observer("eth_chainId", "http://node", 0.1, None)
    assert calls == ["ready", "eth_chainId"]
    assert hooks.on_append is None and hooks.on_batch is None


# -- (c) endpoints and the service's notifications, around a scripted indexer -----------------------------


class ScriptedIndexer:
    """Quacks like an Indexer: a follower at block 3 of 10 until `go_ready`, then stays up until stopped."""

    def __init__(self, config: Config):
        self.config = config
        self.dsn, self.schema = config.database.url, config.database.schema_
        self.stop = threading.Event()
        self.hooks = Hooks()
        self.state = RunState()
        self.go_ready = threading.Event()

    def run(self, only: list[str] | None, to_block: int | None) -> int:
        progress = FollowerProgress(head=10, finalized=5, indexed_block=3)
        self.state.follower = SimpleNamespace(progress=progress, fetcher=SimpleNamespace(span=SimpleNamespace(
            value=500)))
        self.hooks.rpc_observer("batch", "http://node", 0.01, None)
        for _ in range(200):
            if self.go_ready.wait(0.05):
                break
            self.hooks.rpc_observer("eth_blockNumber", "http://node", 0.01, None)
        progress.indexed_block, progress.logs_appended, progress.caught_up = 10, 4, True
        self.hooks.on_append(progress, LogsIngested(1, 4, 10, "0xabc", 5, 10, logs=[]))
        self.hooks.on_ready()
        self.stop.wait(20)
        return ExitCode.OK


def test_endpoints_and_notifications_follow_readiness(database_url, schema, notify_socket):
    config = http_config(make_config(database_url, schema, ["http://127.0.0.1:9"], ADDRESSES))
    indexer = ScriptedIndexer(config)
    service = Service(indexer, env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"},  # type: ignore[arg-type]
                      tick=0.05)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run(None, None)), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: service.http is not None and indexer.state.follower is not None)
        port = service.http.port
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/healthz")[0] == 200
        status, body = get(base + "/readyz")
        assert status == 503 and orjson.loads(body) == {"ready": False}
        notify_socket.wait_for("WATCHDOG=1")
        assert wait_until(lambda: any(line.startswith("STATUS=backfilling: block 3 of 10")
                                      for line in notify_socket.lines() + notify_socket.drain(0.1)), 5)
        assert "READY=1" not in notify_socket.lines()
        status, body = get(base + "/status")  # the schema was never migrated: the live part still answers
        document = orjson.loads(body)
        assert status == 503 and "error" in document
        assert document["live"]["follower"]["indexed_block"] == 3 and document["live"]["ready"] is False

        indexer.go_ready.set()
        notify_socket.wait_for("READY=1")
        assert get(base + "/readyz")[0] == 200
        fams = families(base)
        assert sample(fams, "rbtc_indexer_ready") == 1
        assert sample(fams, "rbtc_indexer_indexed_block", component="follower") == 10
        assert sample(fams, "rbtc_indexer_rpc_requests", "_total", method="batch") == 1

        indexer.stop.set()
        thread.join(10)
        assert result == [ExitCode.OK]
        notify_socket.wait_for("STOPPING=1")
    finally:
        indexer.stop.set()
        thread.join(10)
    ready_at = next(i for i, m in enumerate(notify_socket.messages) if m.startswith("READY=1"))
    stopping_at = next(i for i, m in enumerate(notify_socket.messages) if m.startswith("STOPPING=1"))
    assert ready_at < stopping_at
    with pytest.raises(OSError):  # the endpoints are gone with the run
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_status_endpoint_serves_the_status_document(database_url, schema):
    config = http_config(make_config(database_url, schema, ["http://127.0.0.1:9"], ADDRESSES))
    Indexer(config).migrate()
    service = Service(ScriptedIndexer(config), env={})  # type: ignore[arg-type]
    server = OpsServer("127.0.0.1:0", service.metrics.registry, alive=service.alive, ready=service.is_ready,
                       status=service.status_document).start()
    try:
        status, body = get(f"http://127.0.0.1:{server.port}/status")
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 503  # the service is not running
        assert get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
    finally:
        server.stop()
    document = orjson.loads(body)
    assert status == 200
    assert document["schema"] == schema and document["store"]["last_notification_id"] == 0
    assert document["live"]["running"] is False and document["live"]["follower"] is None


def test_plan_mirrors_only():
    assert RunPlan.parse(None).follower and "balances" in RunPlan.parse(None).projections
    assert RunPlan.parse(["follower"]) == RunPlan(True, ())
    assert RunPlan.parse(["projection:balances"]) == RunPlan(False, ("balances",))
    assert RunPlan.parse(["projection:balances", "follower"]) == RunPlan(True, ("balances",))
    for bad in (["projection:nope"], ["followers"]):
        with pytest.raises(ConfigError, match=repr(bad[0])):
            RunPlan.parse(bad)


def test_parse_listen():
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9108") == ("0.0.0.0", 9108)
    with pytest.raises(ValueError):
        parse_listen("localhost")


# -- progress bar -----------------------------------------------------------------------------------------


def test_progress_bar_shows_rate_and_eta_then_finishes_its_line():
    now = [0.0]
    out = io.StringIO()
    bar = BackfillProgress(out, clock=lambda: now[0])
    bar.update(0, 1000, 0, caught_up=False)
    now[0] = 10.0
    bar.update(500, 1000, 2000, caught_up=False)
    line = out.getvalue().rsplit("\r", 1)[-1]
    assert "50.0%" in line and "block 500/1000" in line and "200 logs/s" in line and "ETA 0:00:10" in line
    bar.update(1000, 1000, 4000, caught_up=True)
    assert out.getvalue().endswith("\n") and bar.finished
    bar.update(10, 2000, 0, caught_up=False)  # never comes back once caught up
    assert out.getvalue().endswith("\n")


def test_progress_bar_only_on_a_terminal():
    assert not wanted(io.StringIO(), "console")
    tty = SimpleNamespace(isatty=lambda: True)
    assert wanted(tty, "console")  # type: ignore[arg-type]
    assert "ETA --:--:--" in render(0, 10, 0, 10, 0.0, None)


# -- (d) the real thing -----------------------------------------------------------------------------------


def deposit(n: int):
    return event_log("fee_vault", VAULT, "Deposited", "0x" + f"{n:064x}", user=ALICE, amount=10**15 + n)


def test_service_runs_a_bounded_backfill_and_tells_systemd(database_url, schema, notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with SimChain(finalized_depth=3) as chain:
        for n in range(1, 6):
            chain.mine([deposit(n)])
        chain.mine([], count=5)
        config = http_config(make_config(database_url, schema, [chain.url], ADDRESSES))
        service = Service(Indexer(config))
        assert service.run(None, to_block=chain.head) == ExitCode.OK
    notify_socket.drain(0.2)
    lines = notify_socket.lines()
    assert "READY=1" in lines and "STOPPING=1" in lines
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert any(line.startswith("STATUS=stopped: exit code 0") for line in lines)
    assert service.metrics.indexed()["follower"] == chain.head
    assert service.metrics.lag()["projection:balances"] == {"indexed_block": chain.head, "lag_blocks": 0,
                                                             "lag_seconds": 0.0}


def test_service_follows_the_head_and_serves_live_endpoints(database_url, schema, notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    with SimChain(finalized_depth=3) as chain:
        for n in range(1, 4):
            chain.mine([deposit(n)])
        chain.mine([], count=3)
        config = http_config(make_config(database_url, schema, [chain.url], ADDRESSES))
        indexer = Indexer(config)
        service = Service(indexer, tick=0.1)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(service.run(None, None)), daemon=True)
        thread.start()
        try:
            notify_socket.wait_for("READY=1", timeout=60)
            assert service.http is not None
            base = f"http://127.0.0.1:{service.http.port}"
            assert get(base + "/readyz")[0] == 200 and get(base + "/healthz")[0] == 200
            notify_socket.wait_for("WATCHDOG=1")

            chain.mine([deposit(10), deposit(11)])
            chain.mine([], count=2)
            head = chain.head

            def current() -> bool:
                fams = families(base)
                return (sample(fams, "rbtc_indexer_indexed_block", component="follower") == head
                        and sample(fams, "rbtc_indexer_indexed_block", component="projection:balances") == head)

            assert wait_until(current, 30)
            fams = families(base)
            assert sample(fams, "rbtc_indexer_head_block") == head
            assert sample(fams, "rbtc_indexer_logs_appended", "_total") == 5
            assert sample(fams, "rbtc_indexer_projection_events_applied", "_total", projection="balances") >= 5
            assert sample(fams, "rbtc_indexer_block_to_row_latency_seconds", "_count", projection="balances") >= 1
            assert sample(fams, "rbtc_indexer_rpc_requests", "_total", method="eth_chainId") >= 1
            status, body = get(base + "/status")
            document = orjson.loads(body)
            assert status == 200
            assert document["follower"]["indexed_block"] == head
            assert document["live"]["follower"]["indexed_block"] == head and document["live"]["ready"] is True
        finally:
            indexer.stop.set()
            thread.join(30)
    assert result == [ExitCode.OK]
    notify_socket.wait_for("STOPPING=1")


def test_a_failing_run_still_says_stopping(database_url, schema, notify_socket):
    class Broken(ScriptedIndexer):
        def run(self, only: list[str] | None, to_block: int | None) -> int:
            raise RuntimeError("database went away")

    config = make_config(database_url, schema, ["http://127.0.0.1:9"], ADDRESSES)
    service = Service(Broken(config), env={"NOTIFY_SOCKET": notify_socket.address})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        service.run(None, None)
    notify_socket.wait_for("STOPPING=1")
    assert "STATUS=stopped: RuntimeError: database went away" in notify_socket.lines()
    assert "READY=1" not in notify_socket.lines()


def test_the_daemon_process_is_ready_then_stops_cleanly_on_sigterm(database_url, schema, notify_socket, tmp_path):
    with SimChain(finalized_depth=3) as chain:
        for n in range(1, 4):
            chain.mine([deposit(n)])
        contracts = "\n".join(f'[[contracts.{role}]]\naddress = "{a}"\nstart_block = 0\n'
                              for role, a in ADDRESSES.items())
        path = tmp_path / "config.toml"
        path.write_text(
            f'[chain]\nchain_id = 31337\nrpc_urls = ["{chain.url}"]\npoll_interval = 0.05\n\n{contracts}\n'
            f'[database]\nurl = "{database_url}"\nschema = "{schema}"\n\n'
            '[http]\nlisten = "127.0.0.1:0"\n\n[log]\nformat = "json"\nlevel = "warning"\n'
        )
        env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1000000"}
        env.pop("RBTC_INDEXER_RPC_URL", None)
        env.pop("RBTC_INDEXER_DATABASE_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-c", "from indexer.cli.main import main; main()", "--config", str(path), "run"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            notify_socket.wait_for("READY=1", timeout=60)
            notify_socket.wait_for("WATCHDOG=1")
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert process.returncode == 0, stderr.decode()[-2000:]
    notify_socket.wait_for("STATUS=stopped: exit code 0 (clean)")
    lines = notify_socket.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
