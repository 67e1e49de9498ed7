"""Replay, rebuild and restart on a real-size store: the benchmark chain (about 250,000 protocol logs).

The chain is generated once by `bench/chain.py` into `bench/cache` (about five minutes here) and reloaded from there
afterwards. One store is built by a backfill, then replayed from a block near the start, from the middle and
from inside the undo window, with the daemon stopped and running, rebuilt, and restarted; after each step
every read table equals the scenario model of the chain (which never looks at the indexer's code).
The figures (store size, replay and rebuild times) are printed with `pytest -s`.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from bench.chain import ChainParams, cached_chain, load_chain, read_model
from tests.support.compare import assert_tables_match_model, wait_for_model
from tests.support.daemon import cli, start_daemon

MIN_LOGS = 200_000
UNDO_WINDOW_DEPTH = 10  # blocks below the head: above anvil's finalized block (head - 64)


@pytest.fixture(scope="module")
def bench_chain():
    """The cached benchmark chain on a running anvil, and its scenario model's expected tables."""
    info, directory, _ = cached_chain(ChainParams(), say=lambda message: print(message, flush=True))
    node = load_chain(directory, info)
    try:
        yield node, info, read_model(directory).expected_tables()
    finally:
        node.stop()


def _config(path: Path, database_url: str, schema: str, rpc_url: str, info) -> Path:
    contracts = "".join(
        f'[[contracts.{role}]]\naddress = "{address}"\nstart_block = {info.start_block}\n\n'
        for role, address in info.addresses.items()
    )
    path.write_text(
        f'[chain]\nchain_id = 31337\nrpc_urls = ["{rpc_url}"]\npoll_interval = 0.05\n\n'
        f'[database]\nurl = "{database_url}"\nschema = "{schema}"\n\n[http]\nenabled = false\n\n'
        f'[log]\nformat = "json"\nlevel = "info"\n\n{contracts}'
    )
    return path


def _stored(database_url: str, schema: str) -> tuple[int, int]:
    """(stored events, stored logs) of a schema's event store."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"""SELECT count(*), coalesce(sum(jsonb_array_length(convert_from(state, 'UTF8')::jsonb->'logs')), 0)
                FROM "{schema}".stored_events WHERE topic LIKE '%LogsIngested%'"""
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_settled(database_url: str, schema: str, head: int, timeout: float) -> None:
    """Until the follower has stored up to `head` and every projection has applied the whole store (so an
    automatic rebuild, which moves the tracking rows only when it swaps, is over)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                f"""SELECT (SELECT indexed_block FROM "{schema}".follower_cursor),
                           (SELECT max(notification_id) FROM "{schema}".stored_events),
                           (SELECT min(notification_id) FROM "{schema}".projection_tracking),
                           (SELECT count(*) FROM "{schema}".projection_tracking)"""
            ).fetchone()
        assert row is not None
        if row[0] == head and row[1] == row[2] and row[3] == 5:
            return
        assert time.monotonic() < deadline, f"not settled within {timeout}s: {row}"
        time.sleep(0.2)


def _wait_for_lock_holder(database_url: str, application_name: str, timeout: float) -> None:
    """Until a session holding the named advisory lock exists (the daemon is up and is the writer)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                "WHERE a.application_name = %s AND l.locktype = 'advisory' AND l.granted",
                (application_name,),
            ).fetchone()
        if row and row[0]:
            return
        assert time.monotonic() < deadline, f"no holder of {application_name} within {timeout}s"
        time.sleep(0.2)


def _timed(config: Path, *args: str, timeout: float = 600) -> float:
    started = time.monotonic()
    result = cli(config, *args, timeout=timeout)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}: {result.stderr[-3000:]}"
    print(f"scale test: {' '.join(args)}: {seconds:.1f}s", flush=True)
    return seconds


# Seven CLI steps and seven full comparisons of about 500,000 rows: about 11 minutes on this 2-core machine
# alone, more inside the whole suite; the suite-wide 600 s limit is for ordinary tests.
@pytest.mark.timeout(2400)
def test_replay_rebuild_and_restart_on_a_real_size_store(database_url, schema, tmp_path, bench_chain):
    node, info, expected = bench_chain
    total_logs = sum(info.block_logs.values())
    assert total_logs >= MIN_LOGS, f"the benchmark chain holds only {total_logs} logs"
    config = _config(tmp_path / "c.toml", database_url, schema, node.url, info)
    figures: dict[str, float] = {}

    figures["backfill_s"] = _timed(config, "run", "--to-block", str(info.head))
    events, logs = _stored(database_url, schema)
    assert logs == total_logs
    assert_tables_match_model(database_url, schema, expected)

    # Daemon stopped: the command replays: reverts, re-ingests, and rebuilds what the undo journal cannot undo.
    near_start = info.start_block + 5
    figures["replay_near_start_stopped_s"] = _timed(config, "replay", "--from-block", str(near_start))
    assert_tables_match_model(database_url, schema, expected)
    assert _stored(database_url, schema)[1] == 2 * total_logs - _logs_before(info, near_start)

    figures["rebuild_stopped_s"] = _timed(config, "rebuild")
    assert_tables_match_model(database_url, schema, expected)

    # Daemon running: the request is queued, the daemon performs it, the command waits until it is done.
    daemon_log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 (closed below)
    daemon = start_daemon(config, "run", stderr=daemon_log.fileno())
    try:
        _wait_for_lock_holder(database_url, f"rbtc-indexer lock rbtc-follower:{schema}:31337", timeout=120)
        _wait_settled(database_url, schema, info.head, timeout=120)
        middle = info.block_with_half_the_logs()
        started = time.monotonic()
        _timed(config, "replay", "--from-block", str(middle))
        _wait_settled(database_url, schema, info.head, timeout=300)
        figures["replay_middle_running_s"] = time.monotonic() - started
        assert_tables_match_model(database_url, schema, expected)
        inside = info.head - UNDO_WINDOW_DEPTH
        started = time.monotonic()
        _timed(config, "replay", "--from-block", str(inside))
        _wait_settled(database_url, schema, info.head, timeout=120)
        figures["replay_undo_window_running_s"] = time.monotonic() - started
        assert_tables_match_model(database_url, schema, expected)
        figures["rebuild_running_s"] = _timed(config, "rebuild")
        wait_for_model(database_url, schema, expected, timeout=120)
        assert daemon.poll() is None, "the daemon stopped: " + (tmp_path / "daemon.log").read_text()[-4000:]
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        daemon_log.close()
    assert code == 0, (tmp_path / "daemon.log").read_text()[-4000:]

    # Restart: a bounded run on the replayed store finds nothing to do and leaves the tables as they are.
    figures["restart_s"] = _timed(config, "run", "--to-block", str(info.head))
    assert_tables_match_model(database_url, schema, expected)
    events, logs = _stored(database_url, schema)
    print(f"\nscale test: chain of {total_logs} logs in {info.head - info.start_block + 1} blocks; "
          f"store now {events} LogsIngested events holding {logs} logs; "
          + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)


def _logs_before(info, block: int) -> int:
    return sum(n for b, n in info.block_logs.items() if b < block)

