"""A plain hand-written indexer, as a user would write one with web3.py, to compare the daemon against.

`eth_getLogs` over the protocol addresses in fixed 1000-block ranges, each log decoded with web3's contract
events (`contract.events.X().process_log`), one INSERT per log into a simple table, one commit per range.
It stores what the daemon's store keeps per log (position, emitter, event, decoded arguments, block time),
but builds no read tables, so it is a lower bound on the work the daemon does.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from hexbytes import HexBytes
from web3 import Web3

from bench.chain import CONTRACT_NAMES, ChainInfo
from tests.support.scenario import load_artifact

RANGE = 1000


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, HexBytes)):
        return "0x" + bytes(value).hex()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def run_baseline(rpc_url: str, database_url: str, schema: str, info: ChainInfo, max_logs: int | None) -> dict[str, Any]:
    """Index from the start block until at least max_logs logs (None: the whole chain); return the figures."""
    end = info.head
    if max_logs is not None and max_logs < info.logs:
        total = 0
        for block in sorted(info.block_logs):
            total += info.block_logs[block]
            if total >= max_logs:
                end = block
                break
    started = time.monotonic()
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 120}))
    contracts = {}
    for role, name in CONTRACT_NAMES.items():
        address = Web3.to_checksum_address(info.addresses[role])
        contracts[address] = w3.eth.contract(address=address, abi=load_artifact(name)["abi"])
    events = {}  # (address, topic0) -> event class
    for address, contract in contracts.items():
        for item in contract.abi:
            if item["type"] == "event":
                event = contract.events[item["name"]]
                topic = Web3.keccak(text=f"{item['name']}({','.join(i['type'] for i in item['inputs'])})")
                events[(address, bytes(topic))] = event
    indexed = 0
    with psycopg.connect(database_url) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(
            f'CREATE TABLE "{schema}".protocol_logs (block_number bigint, block_hash text, block_timestamp bigint, '
            "tx_hash text, log_index int, address text, event text, args jsonb, PRIMARY KEY (tx_hash, log_index))"
        )
        conn.commit()
        for start in range(info.start_block, end + 1, RANGE):
            logs = w3.eth.get_logs(
                {"fromBlock": start, "toBlock": min(start + RANGE - 1, end), "address": list(contracts)}
            )
            with conn.cursor() as cur:
                for log in logs:
                    event = events[(log["address"], bytes(log["topics"][0]))]
                    decoded = event().process_log(log)
                    cur.execute(
                        f'INSERT INTO "{schema}".protocol_logs VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
                        (
                            decoded["blockNumber"],
                            "0x" + bytes(decoded["blockHash"]).hex(),
                            _int(log["blockTimestamp"]),
                            "0x" + bytes(decoded["transactionHash"]).hex(),
                            decoded["logIndex"],
                            decoded["address"].lower(),
                            decoded["event"],
                            json.dumps({k: _plain(v) for k, v in decoded["args"].items()}),
                        ),
                    )
            conn.commit()
            indexed += len(logs)
    seconds = time.monotonic() - started
    return {"logs": indexed, "to_block": end, "seconds": seconds, "logs_per_s": indexed / seconds}
