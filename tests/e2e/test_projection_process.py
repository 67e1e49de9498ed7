"""`run` with its projections in a child process (`indexer.projection_process`): same tables, one lifetime."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest
from web3 import Web3

from indexer.errors import ExitCode
from indexer.store.locks import projection_lock
from tests.support.anvil import anvil
from tests.support.compare import assert_tables_match_model, wait_for_model
from tests.support.daemon import cli, start_daemon, write_config
from tests.support.scenario import Deployment, ScenarioDriver


class LogLines:
    """The JSON log lines a daemon writes to stderr, collected by a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[dict] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                self.lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.lines.append({"event": line.rstrip()})

    def child_pid(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == "projection process started":
                    return int(line["pid"])
            time.sleep(0.05)
        raise AssertionError(f"no projection process was started: {self.lines[-5:]}")

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.get("event") == event for line in self.lines):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} in the log: {self.lines[-5:]}")


def _exited(pid: int) -> bool:
    """The process has ended: no such pid, or a zombie (an orphan waits for a reaper; the init of some
    containers reaps late or never)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        try:  # our own child (the runs below are started by this test) must be reaped to vanish
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture
def chain(database_url, schema, tmp_path):
    """80 blocks of scenario on anvil and a config that runs the projections in a child process."""
    with anvil() as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        driver = ScenarioDriver(w3, Deployment.deploy(w3), seed=23, users=8)
        driver.run(80)
        config = write_config(tmp_path / "c.toml", database_url, schema, node.url, driver.d)
        config.write_text(config.read_text() + "\n[indexer]\nprojection_process = true\n")
        yield node, w3, driver, config


def test_a_bounded_run_with_a_projection_process_builds_every_table(database_url, schema, chain):
    _, w3, driver, config = chain
    head = w3.eth.block_number
    result = cli(config, "run", "--to-block", str(head))
    assert result.returncode == 0, result.stderr[-2000:]
    started = [orjson.loads(line) for line in result.stderr.splitlines() if "projection process started" in line]
    assert len(started) == 1 and started[0]["projections"]
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())


def test_a_stopped_or_killed_run_takes_its_projection_process_with_it(database_url, schema, chain):
    _, _, driver, config = chain
    daemon = start_daemon(config, "run", stderr=subprocess.PIPE)
    logs = LogLines(daemon)
    child = logs.child_pid()
    assert child != daemon.pid
    wait_for_model(database_url, schema, driver.model.expected_tables())
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == ExitCode.OK
    assert _gone(child, 5), "the projection process outlived a stopped run"

    daemon = start_daemon(config, "run", stderr=subprocess.PIPE)
    child = LogLines(daemon).child_pid()
    driver.run(20)
    wait_for_model(database_url, schema, driver.model.expected_tables())
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=10)
    assert _gone(child, 30), "the projection process outlived a killed run"

    # A restart right away takes over: new activity reaches every table.
    daemon = start_daemon(config, "run", stderr=subprocess.PIPE)
    try:
        driver.run(20)
        wait_for_model(database_url, schema, driver.model.expected_tables())
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == ExitCode.OK


def test_a_projection_process_that_cannot_run_fails_the_run_with_its_exit_code(
    database_url, schema, chain, tmp_path: Path
):
    _, w3, _, config = chain
    assert cli(config, "migrate").returncode == 0
    elsewhere = projection_lock(database_url, schema, "balances")
    assert elsewhere.try_acquire()  # another process already runs that projection
    try:
        result = cli(config, "run", "--to-block", str(w3.eth.block_number), timeout=120)
    finally:
        elsewhere.release()
    assert result.returncode == ExitCode.ALREADY_RUNNING, result.stderr[-2000:]
    assert "the projection process exited with code 4 (already running)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_projection_process_orphaned_while_it_waits_for_its_locks_gives_up_without_taking_them(
    database_url, schema, chain
):
    """A run killed while its projection process waits for the previous run's locks: the orphan must not queue
    for them (a restart right after would then compete with it and fail with 'already running')."""
    _, _, _, config = chain
    assert cli(config, "migrate").returncode == 0
    previous = projection_lock(database_url, schema, "balances")
    assert previous.try_acquire()  # the previous run's projection process, still finishing its batch
    try:
        daemon = start_daemon(config, "run", stderr=subprocess.PIPE)
        logs = LogLines(daemon)
        child = logs.child_pid()
        logs.wait_for("waiting for a lock another process holds")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        assert _gone(child, 60), f"the orphaned projection process did not exit: {logs.lines[-8:]}"
    finally:
        previous.release()
    events = [line.get("event", "") for line in logs.lines]
    assert not [e for e in events if "already runs" in e], events[-10:]
    assert "stopped while waiting for its locks" in events, events[-10:]
