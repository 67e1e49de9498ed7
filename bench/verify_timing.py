"""`verify` on the benchmark chain: every user the tables and logs know (2,000) checked at one pinned block.

Runs the real command (`rbtc-indexer verify --json`) as a subprocess on a schema that a backfill left at the
chain's head, after placing Multicall3 at its canonical address and indexing the one empty block that follows
(so the pinned block's state holds the multicall code). Reports verify's own duration and the process' wall
time, and the differences it found, by column.

    .venv/bin/python -m bench.verify_timing      # on its own: loads the cached chain, backfills once, times verify
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.chain import RawRpc
from bench.measure import REPO, RunFailed, Workspace
from tests.support.multicall import install_multicall3


def prepare(ws: Workspace, schema: str, timeout: float = 300.0) -> int:
    """Multicall3 at its canonical address, one block mined on it, the schema indexed up to it; return the block."""
    install_multicall3(ws.rpc_url)
    rpc = RawRpc(ws.rpc_url)
    rpc.call("evm_mine", [])
    head = int(rpc.call("eth_blockNumber", []), 16)
    done = subprocess.run(
        [sys.executable, "-m", "indexer", "--config", str(ws.config(schema)), "run", "--to-block", str(head)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RunFailed(f"indexing block {head} exited with {done.returncode}: {done.stderr[-500:]}")
    return head


def time_verify(ws: Workspace, schema: str, runs: int = 3, timeout: float = 300.0) -> dict[str, Any]:
    """`verify --json` `runs` times; medians of verify's own seconds and of the wall time, and what it found."""
    own: list[float] = []
    wall: list[float] = []
    document: dict[str, Any] = {}
    for _ in range(runs):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "indexer", "--config", str(ws.config(schema)), "verify", "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall.append(time.monotonic() - started)
        if done.returncode not in (0, 5):
            raise RunFailed(f"verify exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        document = json.loads(done.stdout)
        own.append(float(document["seconds"]))
    return {
        "seconds": statistics.median(own),
        "seconds_runs": own,
        "wall_seconds": statistics.median(wall),
        "wall_seconds_runs": wall,
        "users_checked": document["users_checked"],
        "chain_calls": document["chain_calls"],
        "chain_requests": document["chain_requests"],
        "method": document["method"],
        "block": document["block"]["number"],
        "differences": document["differences_total"],
        "differences_by_column": document["differences_by_column"],
    }


def main() -> int:
    from bench.chain import ChainParams, cached_chain, load_chain
    from bench.measure import backfill
    from bench.run import _database_url

    info, directory, _ = cached_chain(ChainParams(), print)
    node = load_chain(directory, info)
    ws = Workspace(_database_url(), node.url, info)
    try:
        schema = ws.new_schema("verify")
        print(f"backfill to block {info.head} ...", flush=True)
        backfill(ws, schema, info.head, 600.0)
        print(f"verified at block {prepare(ws, schema)} ...", flush=True)
        print(json.dumps(time_verify(ws, schema), indent=1))
    finally:
        ws.cleanup()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
