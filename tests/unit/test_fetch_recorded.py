"""The log fetcher on recorded node answers (tests/fixtures/rpc/protocol_events.json).

A local HTTP server answers exactly the requests the recording holds, with the recorded answers (any other request
gets a JSON-RPC error), so the real RPC client and the real fetcher run against what a node really said. Edited
copies of the recording stand for nodes that lie: a log left out, a log from another fork, logs out of order.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from indexer.chain.rpc import RpcClient
from indexer.fetch.fetcher import AdaptiveSpan, InconsistentResponse, LogFetcher

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rpc" / "protocol_events.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


class RecordedNode:
    """Serves a recording: each recorded (method, params) gets its recorded result."""

    def __init__(self, recording: dict[str, Any]) -> None:
        self.answers: dict[str, Any] = {}
        logs = recording["eth_getLogs"]
        self.answers[self._key("eth_getLogs", logs["params"])] = logs["response"]["result"]
        for number, response in recording["eth_getBlockByNumber"]["responses"].items():
            self.answers[self._key("eth_getBlockByNumber", [hex(int(number)), False])] = response["result"]
        for number, response in recording.get("eth_getBlockReceipts", {}).get("responses", {}).items():
            self.answers[self._key("eth_getBlockReceipts", [hex(int(number))])] = response["result"]
        self.posts: list[list[str]] = []  # the methods of each HTTP request, in order
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                node.posts.append([item["method"] for item in body] if isinstance(body, list) else [body["method"]])
                reply = [node.answer(item) for item in body] if isinstance(body, list) else node.answer(body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def _key(method: str, params: Any) -> str:
        return json.dumps([method, params], sort_keys=True)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request["method"], request["params"])
        if key not in self.answers:
            return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32602, "message": f"not recorded: {key}"}}
        return {"jsonrpc": "2.0", "id": request["id"], "result": self.answers[key]}


@pytest.fixture
def serve() -> Iterator[Any]:
    nodes: list[RecordedNode] = []

    def start(recording: dict[str, Any]) -> RecordedNode:
        node = RecordedNode(recording)
        threading.Thread(target=node.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.server.shutdown()
        node.server.server_close()


def fetcher_for(node: RecordedNode, recording: dict[str, Any]) -> tuple[LogFetcher, int, int]:
    params = recording["eth_getLogs"]["params"][0]
    start, stop = int(params["fromBlock"], 16), int(params["toBlock"], 16)
    starts = {address: start for address in recording["contracts"].values()}
    span = AdaptiveSpan(stop - start + 1, stop - start + 1)
    return LogFetcher(RpcClient([node.url], timeout=5), starts, span), start, stop


def test_the_recorded_range_is_fetched_whole_and_checked(serve: Any) -> None:
    recording = load()
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    fetched = fetcher.fetch(start, stop, all_headers=True)
    recorded = recording["eth_getLogs"]["response"]["result"]
    assert (fetched.from_block, fetched.to_block) == (start, stop)
    assert len(fetched.logs) == len(recorded)
    for got, raw in zip(fetched.logs, recorded, strict=True):
        assert got == {
            "block_number": int(raw["blockNumber"], 16),
            "block_hash": raw["blockHash"],
            "block_timestamp": int(raw["blockTimestamp"], 16),
            "tx_hash": raw["transactionHash"],
            "tx_index": int(raw["transactionIndex"], 16),
            "log_index": int(raw["logIndex"], 16),
            "address": raw["address"].lower(),
            "topics": raw["topics"],
            "data": raw["data"],
        }
    assert sorted(fetched.headers) == list(range(start, stop + 1))
    assert fetched.last.hash == recording["eth_getBlockByNumber"]["responses"][str(stop)]["result"]["hash"]


def test_a_contract_is_watched_only_from_its_start_block(serve: Any) -> None:
    recording = load()
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    recorded = recording["eth_getLogs"]["response"]["result"]
    vault = recording["contracts"]["fee_vault"]
    vault_blocks = sorted({int(r["blockNumber"], 16) for r in recorded if r["address"] == vault})
    late = {"address": vault}
    late_block = vault_blocks[len(vault_blocks) // 2]  # some of the vault's logs come before it
    fetcher.start_blocks[late["address"]] = late_block
    fetched = fetcher.fetch(start, stop, all_headers=True)
    want = [
        (int(r["blockNumber"], 16), int(r["logIndex"], 16))
        for r in recorded
        if r["address"] != late["address"] or int(r["blockNumber"], 16) >= late_block
    ]
    assert [(lg["block_number"], lg["log_index"]) for lg in fetched.logs] == want
    assert len(want) < len(recorded)


def test_a_log_left_out_is_caught_by_its_blocks_receipts(serve: Any) -> None:
    recording = load()
    logs = recording["eth_getLogs"]["response"]["result"]
    # Leave out every log of one emitter in one block (the bloom still names that emitter).
    victim = logs[0]
    recording["eth_getLogs"]["response"]["result"] = [
        lg for lg in logs if not (lg["blockNumber"] == victim["blockNumber"] and lg["address"] == victim["address"])
    ]
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    with pytest.raises(InconsistentResponse, match="receipts of block"):
        fetcher.fetch(start, stop, all_headers=True)


def test_a_log_from_another_fork_is_refused(serve: Any) -> None:
    recording = load()
    logs = recording["eth_getLogs"]["response"]["result"]
    logs[3] = {**logs[3], "blockHash": "0x" + "ee" * 32}
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    with pytest.raises(InconsistentResponse, match="hash"):
        fetcher.fetch(start, stop, all_headers=True)


def test_logs_out_of_order_are_refused(serve: Any) -> None:
    recording = load()
    logs = recording["eth_getLogs"]["response"]["result"]
    logs[4], logs[5] = logs[5], logs[4]
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    with pytest.raises(InconsistentResponse, match="order"):
        fetcher.fetch(start, stop, all_headers=True)


def test_a_removed_log_is_refused(serve: Any) -> None:
    recording = load()
    logs = recording["eth_getLogs"]["response"]["result"]
    logs[-1] = {**logs[-1], "removed": True}
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    with pytest.raises(InconsistentResponse, match="removed"):
        fetcher.fetch(start, stop, all_headers=True)


def test_headers_that_are_not_one_chain_are_refused(serve: Any) -> None:
    recording = load()
    responses = recording["eth_getBlockByNumber"]["responses"]
    middle = sorted(responses, key=int)[len(responses) // 2]
    responses[middle] = copy.deepcopy(responses[middle])
    responses[middle]["result"]["parentHash"] = "0x" + "ab" * 32
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    with pytest.raises(InconsistentResponse, match="not one chain"):
        fetcher.fetch(start, stop, all_headers=True)


def test_a_node_without_the_last_block_cannot_hide_logs(serve: Any) -> None:
    recording = load()
    params = recording["eth_getLogs"]["params"][0]
    recording["eth_getBlockByNumber"]["responses"][str(int(params["toBlock"], 16))]["result"] = None
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    with pytest.raises(InconsistentResponse, match="does not have block"):
        fetcher.fetch(start, stop, all_headers=True)


def test_logs_and_the_last_header_travel_in_one_batch(serve: Any) -> None:
    recording = load()
    node = serve(recording)
    fetcher, start, stop = fetcher_for(node, recording)
    fetcher.fetch(start, stop, all_headers=True)
    assert node.posts[0] == ["eth_getBlockByNumber", "eth_getLogs"]
    # Then only headers and the receipts that confirm the answer, never a second eth_getLogs.
    assert all(set(methods) <= {"eth_getBlockByNumber", "eth_getBlockReceipts"} for methods in node.posts[1:])
    assert any("eth_getBlockReceipts" in methods for methods in node.posts[1:])
