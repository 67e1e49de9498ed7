"""Completeness of eth_getLogs answers, on recorded-style JSON-RPC answers of a lying or honest node.

A bloom proves only absence: a "maybe" without a returned log is settled by the block's receipts, a cut
answer is caught by the receipts, and a returned log missing from its block's bloom is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from eth_utils.crypto import keccak

from indexer.chain.rpc import RpcError
from indexer.fetch.fetcher import AdaptiveSpan, InconsistentResponse, LogFetcher, bloom_bits
from tests.support.simchain import logs_bloom

WATCHED = "0x" + "77" * 20
SILENT = "0x" + "55" * 20
NOISE = "0x" + "99" * 20
SYNCED = "0x" + keccak(text="Synced(address,uint64,int64,uint256,uint32,uint64)").hex()


def covering_topics(address: str) -> list[str]:
    wanted, out, i = set(bloom_bits(bytes.fromhex(address[2:]))), [], 0
    while wanted:
        topic = keccak(i.to_bytes(32, "big"))
        if wanted & set(bloom_bits(topic)):
            wanted -= set(bloom_bits(topic))
            out.append("0x" + topic.hex())
        i += 1
    return out


def raw_log(block: int, index: int, tx: int, address: str, topics: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "topics": topics,
        "data": "0x",
        "blockNumber": hex(block),
        "blockHash": f"0x{block:064x}",
        "transactionHash": f"0x{tx:064x}",
        "transactionIndex": hex(tx % 10),
        "logIndex": hex(index),
        "removed": False,
    }


class RecordedNode:
    """Answers from a fixed chain of blocks 1..8; `cut` drops logs from eth_getLogs answers (a lying node)."""

    def __init__(self, *, block_receipts: bool = True) -> None:
        cover = covering_topics(SILENT)
        self.logs = {
            5: [raw_log(5, 0, 50, WATCHED, [SYNCED]), raw_log(5, 1, 51, NOISE, cover)],
            6: [raw_log(6, 0, 60, NOISE, [*cover[:3]]), raw_log(6, 1, 61, NOISE, [SYNCED, *cover[3:]])],
            7: [raw_log(7, 0, 70, WATCHED, [SYNCED]), raw_log(7, 1, 70, WATCHED, [SYNCED])],
        }
        self.block_receipts = block_receipts
        self.cut: set[tuple[int, int]] = set()
        self.bloom_override: dict[int, str] = {}
        self.calls: list[str] = []

    def block(self, number: int) -> dict[str, Any]:
        logs = self.logs.get(number, [])
        return {
            "number": hex(number),
            "hash": f"0x{number:064x}",
            "parentHash": f"0x{number - 1:064x}",
            "timestamp": hex(1000 + number),
            "logsBloom": self.bloom_override.get(number, logs_bloom(logs)),
            "transactions": sorted({lg["transactionHash"] for lg in logs}),
        }

    def receipts(self, number: int) -> list[dict[str, Any]]:
        return [self.receipt(h) for h in self.block(number)["transactions"]]

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        logs = [lg for block in self.logs.values() for lg in block if lg["transactionHash"] == tx_hash]
        return {
            "transactionHash": tx_hash,
            "transactionIndex": logs[0]["transactionIndex"],
            "blockNumber": logs[0]["blockNumber"],
            "blockHash": logs[0]["blockHash"],
            "from": "0x" + "ab" * 20,
            "to": logs[0]["address"],
            "gasUsed": "0x5208",
            "effectiveGasPrice": "0x7",
            "status": "0x1",
            "logs": logs,
        }

    def answer(self, method: str, params: list[Any]) -> Any:
        self.calls.append(method)
        if method == "eth_getBlockByNumber":
            return self.block(int(params[0], 16))
        if method == "eth_getLogs":
            flt = params[0]
            start, stop = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            return [
                lg
                for n in range(start, stop + 1)
                for lg in self.logs.get(n, [])
                if lg["address"] in flt["address"] and (n, int(lg["logIndex"], 16)) not in self.cut
            ]
        if method == "eth_getBlockReceipts" and self.block_receipts:
            return self.receipts(int(params[0], 16))
        if method == "eth_getTransactionReceipt":
            return self.receipt(params[0])
        raise RpcError(f"the method {method} does not exist", code=-32601, retryable=False)

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return [self.answer(m, p) for m, p in calls]

    def call(self, method: str, params: list[Any]) -> Any:
        return self.answer(method, params)


def fetcher(node: RecordedNode, completeness: str = "receipts") -> LogFetcher:
    return LogFetcher(
        node,  # type: ignore[arg-type]
        {WATCHED: 1, SILENT: 1},
        AdaptiveSpan(100, 100),
        completeness=completeness,  # type: ignore[arg-type]
        watched_topics={SYNCED},
    )


def test_a_bloom_maybe_without_logs_is_cleared_by_the_receipts():
    node = RecordedNode()
    f = fetcher(node)
    fetched = f.fetch(1, 8, all_headers=False)
    assert [(lg["block_number"], lg["log_index"]) for lg in fetched.logs] == [(5, 0), (7, 0), (7, 1)]
    assert f.receipt_checks == 3  # blocks 5 and 7 (with logs) and 6 (bloom maybe: silent address and Synced)
    assert sorted(fetched.receipts) == [5, 7]
    assert [r.tx_hash for r in fetched.receipts[5]] == [f"0x{50:064x}"]  # only transactions with watched logs
    assert fetched.receipts[7][0].gas_used == 21000


@pytest.mark.parametrize("cut", [{(7, 1)}, {(7, 0)}, {(7, 0), (7, 1)}, {(5, 0)}])
def test_an_answer_with_logs_cut_is_refused(cut):
    node = RecordedNode()
    node.cut = cut
    with pytest.raises(InconsistentResponse, match="eth_getLogs and the receipts of block"):
        fetcher(node).fetch(1, 8, all_headers=False)


def test_a_returned_log_missing_from_its_blocks_bloom_is_refused():
    node = RecordedNode()
    node.bloom_override[7] = logs_bloom([])
    with pytest.raises(InconsistentResponse, match="not in its block's logsBloom"):
        fetcher(node).fetch(1, 8, all_headers=False)


def test_a_node_without_block_receipts_is_served_by_transaction_receipts():
    node = RecordedNode(block_receipts=False)
    f = fetcher(node)
    assert len(f.fetch(1, 8, all_headers=False).logs) == 3
    assert "eth_getTransactionReceipt" in node.calls
    node.cut = {(7, 1)}
    with pytest.raises(InconsistentResponse):
        f.fetch(1, 8, all_headers=False)


def test_bloom_mode_fetches_no_receipts_and_no_header_of_blocks_without_logs():
    node = RecordedNode()
    f = LogFetcher(node, {WATCHED: 1, SILENT: 1}, AdaptiveSpan(100, 100), completeness="bloom", fetch_receipts=False)  # type: ignore[arg-type]
    fetched = f.fetch(1, 8, all_headers=False)
    assert len(fetched.logs) == 3
    assert "eth_getBlockReceipts" not in node.calls
    assert sorted(fetched.headers) == [1, 5, 7, 8]
