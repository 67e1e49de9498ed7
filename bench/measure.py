"""The measurements: backfill, rebuild and head latency of the real daemon (as subprocesses), and table checks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.chain import BenchDriver, ChainInfo, deployment_for, lean_web3
from tests.support.compare import sorted_model, tables_for_model
from tests.support.model import ScenarioModel

REPO = Path(__file__).resolve().parents[1]
STALL_SECONDS = 60.0  # a run whose follower makes no progress for this long is stopped and reported


class RunFailed(RuntimeError):
    """The daemon exited with an error, stalled, or ran out of time."""


@dataclass
class Workspace:
    """Database schemas and config files of one benchmark run; everything is removed at the end."""

    database_url: str
    rpc_url: str
    info: ChainInfo
    prefix: str = field(default_factory=lambda: f"bench_{os.getpid()}_{random.randrange(16**4):04x}")
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rbtc-bench-")))
    schemas: list[str] = field(default_factory=list)
    max_block_range: int = 2000
    initial_block_range: int = 100
    extra_chain_toml: str = ""  # more [chain] keys, e.g. 'completeness = "bloom"\n'
    extra_indexer_toml: str = ""  # an [indexer] section's keys

    def new_schema(self, label: str) -> str:
        name = f"{self.prefix}_{label}"
        self.drop(name)
        self.schemas.append(name)
        return name

    def drop(self, schema: str) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
                (schema, f"{schema}\\_rb\\_%"),
            ).fetchall()
            for (found,) in rows:
                conn.execute(f'DROP SCHEMA "{found}" CASCADE')

    def cleanup(self) -> None:
        for schema in self.schemas:
            try:
                self.drop(schema)
            except psycopg.Error as exc:
                print(f"warning: could not drop schema {schema}: {exc}", file=sys.stderr)
        for path in self.tmp.glob("*"):
            path.unlink()
        self.tmp.rmdir()

    def config(self, schema: str, poll_interval: float | None = 0.05) -> Path:
        """The daemon's config for `schema`; poll_interval None leaves the project's default (and every other
        [chain] setting but the block ranges is the default: newHeads over WebSocket on the RPC port)."""
        contracts = "".join(
            f'[[contracts.{role}]]\naddress = "{address}"\nstart_block = {self.info.start_block}\n\n'
            for role, address in self.info.addresses.items()
        )
        path = self.tmp / f"{schema}.toml"
        path.write_text(
            f'[chain]\nchain_id = 31337\nrpc_urls = ["{self.rpc_url}"]\n'
            + (f"poll_interval = {poll_interval}\n" if poll_interval is not None else "")
            + f"max_block_range = {self.max_block_range}\ninitial_block_range = {self.initial_block_range}\n"
            + f"{self.extra_chain_toml}\n"
            f'[database]\nurl = "{self.database_url}"\nschema = "{schema}"\n\n[http]\nenabled = false\n\n'
            f'[log]\nformat = "json"\nlevel = "info"\n\n'
            + (f"[indexer]\n{self.extra_indexer_toml}\n" if self.extra_indexer_toml else "")
            + contracts
        )
        return path


def _popen(config: Path, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indexer", "--config", str(config), *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _vm_hwm_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    """pid's child processes, their children, and so on (Linux /proc). Every thread's list is read: a `run`
    starts its projection process from a worker thread, and each thread lists only the children it started."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        children: list[int] = []
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
        found += children
        todo += children
    return found


def _wait(proc: subprocess.Popen, timeout: float, poll: Any = None, interval: float = 0.02) -> tuple[int, float]:
    """Wait for proc, calling poll() and sampling VmHWM every interval; return (exit code, peak RSS in MB).

    The peak RSS is the sum of the peaks of the process and of every process it started (the projection
    process of a `run`): an upper bound of what they held at once. VmHWM is a high-water mark, so sampling
    misses at most the growth of the last interval. (The rusage of wait4 is no use here: a child's ru_maxrss
    keeps the forked parent's RSS across exec.)
    """
    deadline = time.monotonic() + timeout
    peaks: dict[int, float] = {}
    while True:
        for pid in [proc.pid, *_descendants(proc.pid)]:
            peaks[pid] = max(peaks.get(pid, 0.0), _vm_hwm_mb(pid))
        code = proc.poll()
        if code is not None:
            return code, sum(peaks.values())
        if time.monotonic() > deadline:
            _kill(proc)
            raise RunFailed(f"timed out after {timeout:.0f}s")
        if poll is not None:
            poll()
        time.sleep(interval)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _scalar(conn: psycopg.Connection, query: str, params: tuple = ()) -> Any:
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.Error:
        return None  # the schema is not migrated yet
    return row[0] if row else None


def backfill(ws: Workspace, schema: str, to_block: int, timeout: float) -> dict[str, float]:
    """`run --to-block` on an empty schema: wall time, time to the first processed block, peak RSS."""
    config = ws.config(schema)
    log = ws.tmp / f"{schema}.log"
    logs = ws.info.logs_up_to(to_block)
    with psycopg.connect(ws.database_url, autocommit=True) as conn:
        started = time.monotonic()
        proc = _popen(config, ["run", "--to-block", str(to_block)], log)
        state = {"first": None, "progress": -1, "moved": started}

        def poll() -> None:
            now = time.monotonic()
            if state["first"] is None:
                block = _scalar(conn, f'SELECT max(indexed_block) FROM "{schema}".projection_tracking')
                if block is not None and block >= ws.info.start_block:
                    state["first"] = now - started
            if now - state["moved"] > 2.0 or state["first"] is None:
                block = _scalar(conn, f'SELECT max(indexed_block) FROM "{schema}".follower_cursor') or -1
                if block != state["progress"]:
                    state["progress"], state["moved"] = block, now
                elif now - state["moved"] > STALL_SECONDS:
                    _kill(proc)
                    raise RunFailed(
                        f"no progress for {STALL_SECONDS:.0f}s at block {block} (the follower's append hung?)"
                    )

        try:
            code, rss = _wait(proc, timeout, poll)
        finally:
            _kill(proc)
        seconds = time.monotonic() - started
    if code != 0:
        raise RunFailed(f"backfill exited with {code}:\n{_tail(log)}")
    return {
        "seconds": seconds,
        "logs": logs,
        "logs_per_s": logs / seconds,
        "time_to_first_block_s": state["first"] if state["first"] is not None else seconds,
        "peak_rss_mb": rss,
    }


def rebuild(ws: Workspace, schema: str, logs: int, timeout: float) -> dict[str, float]:
    """`rebuild` (every projection, from the store alone): events per second over the wall time."""
    log = ws.tmp / f"{schema}-rebuild.log"
    started = time.monotonic()
    proc = _popen(ws.config(schema), ["rebuild"], log)
    try:
        code, rss = _wait(proc, timeout, interval=0.05)
    finally:
        _kill(proc)
    seconds = time.monotonic() - started
    if code != 0:
        raise RunFailed(f"rebuild exited with {code}:\n{_tail(log)}")
    rebuilt = [line[len("rebuilt ") :] for line in log.read_text().splitlines() if line.startswith("rebuilt ")]
    if len(rebuilt) != 5:
        raise RunFailed(f"rebuild printed {len(rebuilt)} projections, not 5:\n{_tail(log)}")
    return {
        "seconds": seconds,
        "events_per_s": logs / seconds,
        "peak_rss_mb": rss,
    }


def stored_logs(database_url: str, schema: str) -> int:
    """Logs in the event store (every LogsIngested event's logs)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"""SELECT count(*) FROM "{schema}".stored_events,
                jsonb_array_elements(convert_from(state, 'UTF8')::jsonb->'logs') AS l"""
        ).fetchone()
    return int(row[0]) if row else 0


def tables_match(database_url: str, schema: str, expected: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Names of the tables that differ from the model (empty when all match)."""
    want = sorted_model(expected)
    got = tables_for_model(database_url, schema, expected)
    return [table for table in want if got[table] != want[table]]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def head_latency(
    ws: Workspace,
    schema: str,
    model: ScenarioModel,
    blocks: int,
    seed: int,
    say: Any = print,
    poll_interval: float | None = 0.02,
) -> dict[str, Any]:
    """Daemon at the head of a caught-up schema; mine `blocks` blocks of activity one at a time and time each
    from the return of evm_mine until rows of that block are in both `balances` and `transactions`.

    poll_interval None runs the daemon with the shipped defaults (0.5 s poll, woken by newHeads)."""
    w3 = lean_web3(ws.rpc_url)
    params = ws.info.params
    driver = BenchDriver(w3, deployment_for(w3, ws.info), seed, params["users"], params["active_users"], model=model)
    driver.rpc.call("evm_setAutomine", [False])
    active = {u.address for u in driver.users}
    bulk_users = [u.address for u in driver.all_users if u.address not in active]
    log = ws.tmp / f"{schema}-daemon.log"
    proc = _popen(ws.config(schema, poll_interval=poll_interval), ["run"], log)
    latencies: list[float] = []
    timeouts = 0
    try:
        with psycopg.connect(ws.database_url, autocommit=True) as conn:
            head = int(driver.rpc.call("eth_blockNumber", []), 16)
            deadline = time.monotonic() + 120
            while (_scalar(conn, f'SELECT min(indexed_block) FROM "{schema}".projection_tracking') or -1) < head:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RunFailed(f"the daemon did not start following:\n{_tail(log)}")
                time.sleep(0.05)
            query = (
                f'SELECT EXISTS (SELECT 1 FROM "{schema}".balances WHERE user_address = ANY(%s) '
                f"AND updated_block >= %s), "
                f'EXISTS (SELECT 1 FROM "{schema}".transactions WHERE tx_hash = ANY(%s))'
            )
            for i in range(blocks):
                chunk = driver.rng.sample(bulk_users, driver.rng.randint(3, 12))
                current = driver.last_sats_of(chunk)
                plans = driver.bulk_plans(chunk, current, (len(chunk), len(chunk)))
                if driver.rng.random() < 0.5:
                    plans += [driver._plan() for _ in range(driver.rng.randint(1, 3))]
                hashes = driver.send_plans(plans)
                block = head + 1
                driver.rpc.call("evm_mine", [])
                mined = time.perf_counter()
                users = [u.lower() for u in chunk]
                limit = mined + 10.0
                while True:
                    balances_seen, tx_seen = conn.execute(query, (users, block, hashes)).fetchone()  # type: ignore[misc]
                    if balances_seen and tx_seen:
                        latencies.append((time.perf_counter() - mined) * 1000)
                        break
                    if time.perf_counter() > limit or proc.poll() is not None:
                        timeouts += 1
                        latencies.append(float("inf"))
                        break
                    time.sleep(0.003)
                actions = driver.record(plans, hashes)
                if any(a.block_number != block for a in actions):
                    raise RunFailed(f"block {block}: a transaction landed in another block")
                head = block
                if (i + 1) % 50 == 0:
                    say(f"  head latency: {i + 1}/{blocks} blocks")
            expected = model.expected_tables()
            deadline = time.monotonic() + 60
            differing = tables_match(ws.database_url, schema, expected)
            while differing and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
                differing = tables_match(ws.database_url, schema, expected)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill(proc)
    finite = [v for v in latencies if v != float("inf")] or [float("inf")]
    return {
        "blocks": blocks,
        "timeouts": timeouts,
        "p50_ms": _percentile(latencies, 0.5) if timeouts * 2 < blocks else float("inf"),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "min_ms": min(finite),
        "differing_tables": differing,
        "daemon_exit": proc.returncode,
        "poll_interval": poll_interval if poll_interval is not None else "default",
        "subscribed_to_new_heads": "subscribed to new heads" in log.read_text(errors="replace"),
    }
