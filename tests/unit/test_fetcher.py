"""The log fetcher's checks: logs blooms computed as nodes compute them, and lying nodes caught."""

from __future__ import annotations

import pytest
from web3 import Web3

from indexer.chain.rpc import RpcClient
from indexer.fetch.fetcher import AdaptiveSpan, Header, InconsistentResponse, LogFetcher, bloom_bits, bloom_has
from tests.support.anvil import start_anvil
from tests.support.faultproxy import FaultProxy
from tests.support.scenario import Deployment, ScenarioDriver


def test_bloom_bits_match_the_nodes_blooms_and_empty_answers_are_refused():
    node = start_anvil()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = Deployment.deploy(w3)
        ScenarioDriver(w3, deployment, seed=2, users=4).run(25)
        head = w3.eth.block_number
        rpc = RpcClient([node.url])
        starts = {a: deployment.start_block for a in deployment.addresses.values()}
        fetched = LogFetcher(rpc, starts, AdaptiveSpan(1000, 1000)).fetch(
            deployment.start_block, head, all_headers=True
        )
        assert fetched.logs
        for lg in fetched.logs:
            assert bloom_has(
                fetched.headers[lg["block_number"]].logs_bloom, bloom_bits(bytes.fromhex(lg["address"][2:]))
            )
        quiet = [h for h in fetched.headers.values() if not any(lg["block_number"] == h.number for lg in fetched.logs)]
        assert all(not bloom_has(h.logs_bloom, bloom_bits(bytes.fromhex(a[2:]))) for h in quiet for a in starts)

        with FaultProxy(node.url, seed=1) as proxy:
            proxy.configure(empty_logs_rate=1.0)
            lying = LogFetcher(RpcClient([proxy.url]), starts, AdaptiveSpan(1000, 1000))
            with pytest.raises(InconsistentResponse, match="eth_getLogs and the receipts of block"):
                lying.fetch(deployment.start_block, head, all_headers=False)
    finally:
        node.stop()


def test_header_parses_the_logs_bloom():
    raw = {"number": "0x1", "hash": "0xab", "parentHash": "0xcd", "timestamp": "0x2", "logsBloom": "0x" + "00" * 256}
    assert Header.from_rpc(raw).logs_bloom == bytes(256)
