"""The ceiling: how fast the node alone hands out a chain's protocol logs (fetch + JSON-parse, nothing else).

`eth_getLogs` over the watched addresses in consecutive ranges of `span` blocks, over one keep-alive HTTP
session, each answer parsed with orjson (the daemon's parser) and counted. No headers, no decoding, no
database: whatever the indexer does on top of this costs time, so backfill logs/s divided by this figure is
the share of the limit the pipeline reaches on this node and machine.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

import orjson
import requests

from bench.chain import ChainInfo


class CeilingResult(TypedDict):
    logs: int
    seconds: float
    logs_per_s: float
    span: int
    requests: int


def fetch_and_parse(url: str, info: ChainInfo, to_block: int, span: int = 2000) -> CeilingResult:
    """Fetch and parse every protocol log from the start block to `to_block`; fails loudly on a short count."""
    addresses = sorted(info.addresses.values())
    session = requests.Session()
    headers = {"Content-Type": "application/json"}
    logs = calls = 0
    started = time.perf_counter()
    for first in range(info.start_block, to_block + 1, span):
        last = min(to_block, first + span - 1)
        body = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": calls,
                "method": "eth_getLogs",
                "params": [{"fromBlock": hex(first), "toBlock": hex(last), "address": addresses}],
            }
        )
        reply = orjson.loads(session.post(url, data=body, headers=headers, timeout=300).content)
        calls += 1
        if "error" in reply:
            raise RuntimeError(f"eth_getLogs {first}..{last}: {reply['error']}")
        logs += len(reply["result"])
    seconds = time.perf_counter() - started
    expected = info.logs_up_to(to_block)
    if logs != expected:
        raise RuntimeError(f"the node returned {logs} logs up to block {to_block}, the chain holds {expected}")
    return {"logs": logs, "seconds": seconds, "logs_per_s": logs / seconds, "span": span, "requests": calls}


def headers_per_s(url: str, first: int, count: int, batch: int = 100, in_flight: int = 1) -> float:
    """How fast the node hands out block headers (`eth_getBlockByNumber` without transactions, JSON-RPC batches
    of `batch`, the daemon's header batch size, `in_flight` batches at once, as the daemon sends them), parsed
    with orjson: the limit of any scan that reads every block's header (the receipts completeness check reads
    every bloom)."""
    local = threading.local()
    headers = {"Content-Type": "application/json"}

    def fetch(start: int) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        numbers = range(start, min(first + count, start + batch))
        body = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(n), False]}
                for i, n in enumerate(numbers)
            ]
        )
        replies = orjson.loads(session.post(url, data=body, headers=headers, timeout=300).content)
        return sum(1 for r in replies if r.get("result"))

    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        fetched = sum(pool.map(fetch, range(first, first + count, batch)))
    if fetched != count:
        raise RuntimeError(f"the node returned {fetched} of {count} headers")
    return count / (time.perf_counter() - started)
