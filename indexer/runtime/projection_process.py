"""The projection workers of a `run` in a child process (`indexer.projection_process`).

The follower and the projection workers each spend most of their time in Python; in one process they share one
interpreter lock, so at most one of them runs at a time. In a child process of their own they run side by side.
The child is the same command, `run --only projection:... --no-http`: it takes the projection locks, applies
the store's events (woken by the store's NOTIFY as in one process) and exits with its own exit code; the parent
keeps the follower, the HTTP endpoints, systemd and verification, and watches the child's progress in
`projection_tracking`.

Guarantees: the child never outlives the parent (it is sent SIGTERM when the parent dies); a stop of the parent
stops the child and waits for it; a child that exits on its own is a failure of the run, with the child's exit
code (exit 0 counts only for a bounded run).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import psycopg
import structlog

from indexer.errors import ExitCode, Fatal
from indexer.store.event_store import EVENTS_TABLE
from indexer.store.status import PROJECTION_PREFIX

log = structlog.get_logger("indexer")

STOP_TIMEOUT = 60.0  # seconds a stopping child gets to finish its batch before it is killed
# A child started while the previous run's child still finishes its last batch (its parent was killed) waits
# this long for the projection locks rather than failing the new run.
LOCK_HANDOVER_WAIT = 15.0
_PR_SET_PDEATHSIG = 1
PARENT_PID_VARIABLE = "RBTC_INDEXER_PARENT_PID"
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")  # the parent alone speaks to systemd


class ProjectionProcessFailed(Fatal):
    """The projection process exited on its own; the run stops with the child's exit code."""

    def __init__(self, code: int):
        super().__init__(f"the projection process exited with code {code} ({ExitCode.describe(code)})")
        self.code = code
        self.exit_code = ExitCode(code) if code in ExitCode._value2member_map_ else ExitCode.ERROR


def started_by_a_run(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether this process is the projection process of a `run`."""
    return bool(env.get(PARENT_PID_VARIABLE))


def bind_to_parent(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """In a projection process: ask the kernel for SIGTERM when the parent dies (Linux), and say whether the
    parent that started it is still there (False: it died before that request, so the child must not run)."""
    expected = env.get(PARENT_PID_VARIABLE)
    if not expected:
        return True
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == int(expected)


class ProjectionProcess:
    """One child `run` of the given projections, started by `start()` and ended by `stop()`."""

    def __init__(
        self, config_path: str, names: Sequence[str], to_block: int | None, log_format: str | None = None
    ) -> None:
        self.config_path = config_path
        self.names = tuple(names)
        self.to_block = to_block
        self.log_format = log_format
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The child's command line."""
        args = [sys.executable, "-m", "indexer", "--config", self.config_path]
        if self.log_format:
            args += ["--log-format", self.log_format]
        args += ["run", "--no-http"]
        for name in self.names:
            args += ["--only", f"{PROJECTION_PREFIX}{name}"]
        if self.to_block is not None:
            args += ["--to-block", str(self.to_block)]
        return args

    def start(self) -> ProjectionProcess:
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARIABLES}
        env[PARENT_PID_VARIABLE] = str(os.getpid())
        self._proc = subprocess.Popen(self.command(), env=env)
        log.info("projection process started", pid=self._proc.pid, projections=list(self.names))
        return self

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def exit_code(self) -> int | None:
        """The child's exit code once it has exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the child and wait for it (SIGKILL after `timeout`); its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("projection process did not stop; killing it", pid=proc.pid, seconds=timeout)
                proc.kill()
                proc.wait()
        return proc.returncode


def caught_up(conn: psycopg.Connection, names: Sequence[str]) -> bool:
    """Every named projection has applied every event in the store (a tracking row per name)."""
    last = f'(SELECT coalesce(max(notification_id), 0) FROM "{EVENTS_TABLE}")'
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE t.notification_id >= {last}), count(*) "
        "FROM projection_tracking AS t WHERE t.projection = ANY(%s)",
        (list(names),),
    ).fetchone()
    return row is not None and row[1] == len(names) and row[0] == len(names)
