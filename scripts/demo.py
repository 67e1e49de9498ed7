"""`make demo`: a local chain with the project's ReserveBTC-compatible contracts, a scenario that keeps
producing every kind of protocol activity, and the indexer daemon following it live.

Uses RBTC_INDEXER_DATABASE_URL when set, else the local PostgreSQL server. Runs until Ctrl-C, or for
DEMO_SECONDS seconds when that is set. Every few seconds it prints the read tables' state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from web3 import Web3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.anvil import free_port, start_anvil  # noqa: E402
from tests.support.scenario import Deployment, ScenarioDriver  # noqa: E402

DATABASE_URL = os.environ.get("RBTC_INDEXER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEMA = "rbtc_demo"
WORK = REPO / ".demo"


def write_config(rpc_url: str, deployment: Deployment, api_port: int) -> Path:
    WORK.mkdir(exist_ok=True)
    contracts = "".join(
        f'[[contracts.{role}]]\naddress = "{address}"\nstart_block = {deployment.start_block}\n\n'
        for role, address in deployment.addresses.items()
    )
    path = WORK / "config.toml"
    path.write_text(
        f'[chain]\nchain_id = 31337\nrpc_urls = ["{rpc_url}"]\npoll_interval = 0.1\n\n'
        f'[database]\nurl = "{DATABASE_URL}"\nschema = "{SCHEMA}"\n\n[http]\nlisten = "127.0.0.1:9108"\n\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\n\n'
        f'[log]\nformat = "console"\n\n{contracts}'
    )
    return path


def show_tables() -> None:
    try:
        _show_tables()
    except psycopg.errors.UndefinedTable:
        print("\n== the indexer has not created its tables yet ==")


def _show_tables() -> None:
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("balances", "transactions", "emergency_burns", "yield_scales_participants",
                      "oracle_operations_log")
        }
        status = conn.execute(
            "SELECT head_block, indexed_block, lag_blocks FROM sync_status WHERE component = 'follower'"
        ).fetchone()
        top = conn.execute(
            "SELECT user_address, last_sats, rbtc_balance, fee_vault_wei FROM balances "
            "ORDER BY rbtc_balance DESC, user_address LIMIT 3"
        ).fetchall()
        recent = conn.execute(
            "SELECT block_number, tx_type, amount, is_emergency_burn FROM transactions "
            "ORDER BY block_number DESC, log_index DESC LIMIT 3"
        ).fetchall()
    print(f"\n== chain head {status[0] if status else '?'}, indexed {status[1] if status else '?'}, "
          f"lag {status[2] if status else '?'} blocks ==")
    print("   rows: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    for user, last_sats, rbtc, fee in top:
        print(f"   balance {user}: last_sats {last_sats} rbtc {rbtc} fee_vault_wei {fee}")
    for block, kind, amount, emergency in recent:
        print(f"   tx block {block}: {kind} {amount}{' (emergency burn)' if emergency else ''}")
    sys.stdout.flush()


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "0")) or None
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    node = start_anvil()
    daemon = None
    server = None
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        print(f"anvil at {node.url}; deploying contracts")
        deployment = Deployment.deploy(w3)
        for role, address in deployment.addresses.items():
            print(f"   {role}: {address}")
        api_port = int(os.environ.get("DEMO_API_PORT", "0")) or free_port()
        config = write_config(node.url, deployment, api_port)
        driver = ScenarioDriver(w3, deployment, seed=int(time.time()), users=12)
        driver.run(40)
        daemon = subprocess.Popen([sys.executable, "-m", "indexer", "--config", str(config), "run"], cwd=REPO)
        server = subprocess.Popen([sys.executable, "-m", "indexer", "--config", str(config), "serve"], cwd=REPO)
        print("indexer running (metrics on http://127.0.0.1:9108/metrics); Ctrl-C stops the demo")
        print(f"read API on http://127.0.0.1:{api_port}/ (status page), for example")
        print(f"   http://127.0.0.1:{api_port}/api/realtime/proof-of-reserves")
        print(f"   http://127.0.0.1:{api_port}/rest/v1/transactions?select=*&order=block_timestamp.desc&limit=5")
        print(f"   curl -N 'http://127.0.0.1:{api_port}/api/realtime/stream?topics=indexer'")
        started = time.monotonic()
        rounds = 0
        while seconds is None or time.monotonic() - started < seconds:
            driver.run(4)
            rounds += 1
            if rounds % 15 == 0:
                w3.provider.make_request("anvil_reorg", [2, []])
                print("\n-- the chain reorganised: the last 2 blocks were replaced --")
            if rounds % 3 == 0:
                show_tables()
            if daemon.poll() is not None:
                print(f"the indexer exited with code {daemon.returncode}")
                return daemon.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=20)
        node.stop()
    show_tables()
    return 0


if __name__ == "__main__":
    sys.exit(main())
