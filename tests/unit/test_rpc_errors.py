"""JSON-RPC error objects, as real providers send them, turned into the right error class.

The rules: a refused log range is `RangeTooLarge` (not retried as is: the range shrinks, to the node's hint when it
gives one); a rate limit is `RateLimited` (retried after a pause); the JSON-RPC codes that say the request itself
is wrong (-32600 invalid request, -32601 method not found, -32602 invalid params, -32700 parse error) are final;
anything else may pass on a retry. Every one of them belongs to the indexer's error hierarchy.

The messages are copied from public reports of each provider's answers (the thread is named beside each).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from indexer.chain.rpc import RangeTooLarge, RateLimited, RpcClient, RpcError, StatePruned, classify_error
from indexer.errors import Fatal, IndexerError, Retryable

ENDPOINT = "https://provider.example/…"


def error(code: int | None, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body["code"] = code
    if data is not None:
        body["data"] = data
    return body


# (provider, error object)
RANGE_REFUSALS = [
    # github.com/BobTheBuidler/dank_mids/issues/772
    (
        "alchemy-range",
        error(
            -32600,
            "You can make eth_getLogs requests with up to a 500 block range. Based on your parameters, "
            "this block range should work: [0x123c9b2, 0x123cba5]",
        ),
    ),
    # github.com/ethereum/go-ethereum/issues/25343
    (
        "alchemy-size",
        error(
            -32602,
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no "
            "limit on the response size, or you can request any block range with a cap of 10K logs in the "
            "response. Based on your parameters and the response size limit, this block range should work: "
            "[0x0, 0x87fe9]",
        ),
    ),
    # github.com/status-im/nimbus-eth2/issues/1823
    ("infura-results", error(-32005, "query returned more than 10000 results")),
    # github.com/INFURA/infura/issues/237
    ("infura-range", error(-32602, "range 1000000 exceeds limit of 10000")),
    # github.com/eternalsafe/wallet/issues/57, github.com/OffchainLabs/arbitrum-sdk/issues/609
    ("quicknode", error(-32614, "eth_getLogs is limited to a 10,000 range")),
    # github.com/foundry-rs/foundry/issues/12687 (several providers)
    (
        "blockpi",
        error(
            -32602,
            "eth_getLogs is limited to 1024 block range. Please check the parameter requirements at "
            "https://docs.blockpi.io/documentations/api-reference",
        ),
    ),
    ("range-max-1k", error(-32603, "eth_getLogs range is too large, max is 1k blocks")),
    ("free-tier", error(35, "ranges over 10000 blocks are not supported on freetier")),
    ("max-results", error(-32602, "query exceeds max results 20000, retry with the range 23879634-23879696")),
    # github.com/paradigmxyz/reth/pull/8558
    ("reth", error(-32602, "query exceeds max block range 5000")),
    # github.com/scroll-tech/go-ethereum/pull/529
    ("geth-fork", error(-32000, "block range is bigger than maxBlockRange")),
    # github.com/matter-labs/zksync-era/issues/3412
    (
        "zksync-results",
        error(-32602, "Query returned more than 10000 results. Try with this block range [0x0, 0x30f]."),
    ),
    ("zksync-size", error(-32008, "Response is too big", "Exceeded max limit of 10485760")),
    # github.com/zeta-chain/node/issues/3265
    ("cosmos-evm", error(-32000, "query returned more than 10000 results")),
    # github.com/bobanetwork/boba_legacy/issues/827 (Tenderly: the reason is in `data`, the message is generic)
    (
        "tenderly",
        error(
            -32602,
            "invalid params",
            {
                "error_id": "4ed94073-0317-4648-a167-107fba5f44b3",
                "payload": "range 9009594 is bigger than range limit 2000",
            },
        ),
    ),
    # MegaETH's error table (docs.megaeth.com, RPC error codes): HTTP 500, -32020
    ("megaeth", error(-32020, "backend response too large")),
]

RATE_LIMITS = [
    # github.com/status-im/status-go/pull/4807
    (
        "infura-project",
        error(
            -32005,
            "exceeded project rate limit",
            {
                "rate": {"allowed_rps": 5, "backoff_seconds": 30, "current_rps": 5.2},
                "see": "https://infura.io/dashboard",
            },
        ),
    ),
    # github.com/gochain/web3/issues/180
    ("infura-daily", error(-32005, "daily request count exceeded, request rate limited")),
    # github.com/fluencelabs/dev-rewards/issues/20
    ("tenderly", error(-32005, "rate limit exceeded")),
    # github.com/latticexyz/mud/issues/1522
    (
        "alchemy",
        error(
            429,
            "Your app has exceeded its compute units per second capacity. If you have retries enabled, you can "
            "safely ignore this message. If not, check out https://docs.alchemy.com/reference/throughput",
        ),
    ),
    ("quicknode", error(-32012, "credits limited to 6000/sec")),
    # github.com/base/node/issues/368
    ("base", error(-32016, "over rate limit")),
    (
        "proxied-429",
        error(-32000, '429 Too Many Requests: {"jsonrpc":"2.0","error":{"code":-32016,"message":"over rate limit"}}'),
    ),
    # MegaETH's error table: HTTP 429, -32021 and -32022
    ("megaeth-traffic", error(-32021, "over network traffic limit, retry in 5 seconds")),
    ("megaeth-compute", error(-32022, "over compute unit limit, retry in 5 seconds")),
]

FINAL = [
    ("megaeth-parse", error(-32700, "parse error")),
    ("megaeth-method", error(-32601, "rpc method is not whitelisted")),
    ("geth-method", error(-32601, "the method eth_getLogsWithCursor does not exist/is not available")),
    ("geth-params", error(-32602, "invalid argument 0: hex string without 0x prefix")),
    # github.com/alloy-rs/alloy/issues/1341
    ("reth-params", error(-32602, "Invalid params", "fromBlock not allowed with blockHash at line 1 column 108")),
    ("invalid-request", error(-32600, "invalid request")),
]

TRANSIENT = [
    # MegaETH's error table: the proxy lost its backend; -32019 when a block is beyond what the node has
    ("megaeth-backend", error(-32000, "permanent error forwarding request context deadline exceeded")),
    ("megaeth-block", error(-32019, "block is out of range")),
    ("geth-header", error(-32000, "header not found")),
    ("internal", error(-32603, "internal error")),
    ("no-code", error(None, "upstream connect error or disconnect/reset before headers")),
]


def ids(cases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in cases]


@pytest.mark.parametrize(("provider", "body"), RANGE_REFUSALS, ids=ids(RANGE_REFUSALS))
def test_range_refusals_are_range_too_large(provider: str, body: dict[str, Any]) -> None:
    exc = classify_error(body, ENDPOINT)
    assert isinstance(exc, RangeTooLarge), f"{provider}: {type(exc).__name__} {exc}"
    assert exc.retryable is False  # the same range would be refused again: it must shrink
    assert exc.code == body.get("code")
    assert exc.endpoint == ENDPOINT


# The hint each message gives, in blocks, read by hand from the message text.
HINTS = {
    "alchemy-range": 0x123CBA5 - 0x123C9B2 + 1,
    "alchemy-size": 0x87FE9 - 0x0 + 1,
    "zksync-results": 0x30F - 0x0 + 1,
    "blockpi": 1024,
    "quicknode": 10_000,
    "infura-range": 10_000,
    "reth": 5_000,
    "max-results": 23_879_696 - 23_879_634 + 1,
}


@pytest.mark.parametrize(("provider", "blocks"), sorted(HINTS.items()), ids=sorted(HINTS))
def test_the_nodes_hint_is_read_in_blocks(provider: str, blocks: int) -> None:
    body = dict(RANGE_REFUSALS)[provider]
    exc = classify_error(body, ENDPOINT)
    assert isinstance(exc, RangeTooLarge)
    assert exc.suggested == blocks


@pytest.mark.parametrize("provider", ["infura-results", "geth-fork", "zksync-size", "cosmos-evm", "megaeth"])
def test_a_refusal_without_a_range_hint_has_none(provider: str) -> None:
    """Result caps and size limits say nothing about how many blocks would work."""
    exc = classify_error(dict(RANGE_REFUSALS)[provider], ENDPOINT)
    assert isinstance(exc, RangeTooLarge)
    assert exc.suggested is None


@pytest.mark.parametrize(("provider", "body"), RATE_LIMITS, ids=ids(RATE_LIMITS))
def test_rate_limits_are_rate_limited_and_retried(provider: str, body: dict[str, Any]) -> None:
    exc = classify_error(body, ENDPOINT)
    assert isinstance(exc, RateLimited), f"{provider}: {type(exc).__name__} {exc}"
    assert not isinstance(exc, RangeTooLarge)
    assert exc.retryable is True
    assert exc.endpoint == ENDPOINT


@pytest.mark.parametrize(("provider", "body"), FINAL, ids=ids(FINAL))
def test_request_errors_are_final(provider: str, body: dict[str, Any]) -> None:
    exc = classify_error(body, ENDPOINT)
    assert type(exc) is RpcError, f"{provider}: {type(exc).__name__}"
    assert exc.retryable is False
    assert exc.code == body["code"]


@pytest.mark.parametrize(("provider", "body"), TRANSIENT, ids=ids(TRANSIENT))
def test_other_errors_may_pass_on_a_retry(provider: str, body: dict[str, Any]) -> None:
    exc = classify_error(body, ENDPOINT)
    assert type(exc) is RpcError, f"{provider}: {type(exc).__name__}"
    assert exc.retryable is True
    assert exc.code == body.get("code")


# A full node asked for state it has pruned (the message texts of geth, erigon/reth and nethermind).
STATE_PRUNED = [
    ("geth", error(-32000, "missing trie node 3f5e1c (path ) state 0x3f5e... is not available")),
    ("erigon", error(-32000, "historical state not available in path scheme yet")),
    ("reth", error(-32000, "state at block #19000000 is pruned")),
    ("nethermind", error(-32002, "Requires historical state which is not available")),
]


@pytest.mark.parametrize(("provider", "body"), STATE_PRUNED, ids=ids(STATE_PRUNED))
def test_pruned_state_is_final_not_an_endpoint_failure(provider: str, body: dict[str, Any]) -> None:
    """Retrying cannot bring back pruned state: it fails at once and leaves the endpoint healthy."""
    exc = classify_error(body, ENDPOINT)
    assert isinstance(exc, StatePruned), f"{provider}: {type(exc).__name__} {exc}"
    assert exc.retryable is False


ALL = RANGE_REFUSALS + RATE_LIMITS + FINAL + TRANSIENT + STATE_PRUNED


@pytest.mark.parametrize(("provider", "body"), ALL, ids=[f"{i}-{name}" for i, (name, _) in enumerate(ALL)])
def test_every_rpc_error_belongs_to_the_hierarchy(provider: str, body: dict[str, Any]) -> None:
    exc = classify_error(body, ENDPOINT)
    assert isinstance(exc, IndexerError)
    assert isinstance(exc, Retryable)
    assert not isinstance(exc, Fatal)
    assert body["message"] in str(exc)


def test_a_string_data_field_is_part_of_the_message() -> None:
    exc = classify_error(error(-32602, "Invalid params", "fromBlock not allowed with blockHash"), ENDPOINT)
    assert "Invalid params" in str(exc)
    assert "fromBlock not allowed with blockHash" in str(exc)


def test_a_rate_limit_code_without_a_telling_message_is_still_a_rate_limit() -> None:
    for code in (-32005, 429):
        exc = classify_error(error(code, "limit exceeded"), ENDPOINT)
        assert isinstance(exc, RateLimited), code


def test_an_error_without_code_or_message_is_retried() -> None:
    exc = classify_error({}, ENDPOINT)
    assert type(exc) is RpcError
    assert exc.retryable is True
    assert exc.code is None


# --- the same answers over HTTP: providers send many of them with an HTTP error status and the JSON-RPC error in
# the body (MegaETH's table gives the status of each; QuickNode's range refusal comes with 413).


class _Answer(BaseHTTPRequestHandler):
    status = 200
    body = b""

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass


def _answering(status: int, error_body: dict[str, Any]) -> Iterator[str]:
    handler = type(
        "Handler",
        (_Answer,),
        {"status": status, "body": orjson.dumps({"jsonrpc": "2.0", "id": 0, "error": error_body})},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/rpc"
    finally:
        server.shutdown()
        server.server_close()


def _first_failure(url: str) -> tuple[RpcError | None, list[str | None]]:
    """How one eth_getLogs call ends: the final error it raises at once (None when the client decided to retry;
    it is stopped right then, so nothing loops), and the error kinds the client observed."""
    stop = threading.Event()
    kinds: list[str | None] = []
    client = RpcClient(
        [url],
        timeout=5,
        max_backoff=0.01,
        stop=stop,
        on_failure=lambda _: stop.set(),
        observer=lambda _method, _endpoint, _seconds, kind: kinds.append(kind),
    )
    with pytest.raises(RpcError) as caught:
        client.call("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "0x2710"}])
    return (None if stop.is_set() else caught.value), kinds


HTTP_ANSWERS = [
    ("megaeth-too-large", 500, error(-32020, "backend response too large"), "range"),
    ("quicknode-range", 413, error(-32614, "eth_getLogs is limited to a 10,000 range"), "range"),
    ("alchemy-range", 200, dict(RANGE_REFUSALS)["alchemy-range"], "range"),
    ("megaeth-traffic", 429, error(-32021, "over network traffic limit, retry in 5 seconds"), "retried"),
    ("megaeth-parse", 400, error(-32700, "parse error"), "final"),
    ("megaeth-method", 403, error(-32601, "rpc method is not whitelisted"), "final"),
]


@pytest.mark.parametrize(("provider", "status", "body", "outcome"), HTTP_ANSWERS, ids=[c[0] for c in HTTP_ANSWERS])
def test_answers_with_an_http_error_status_are_classified_by_their_body(
    provider: str, status: int, body: dict[str, Any], outcome: str
) -> None:
    for url in _answering(status, body):
        exc, kinds = _first_failure(url)
        assert len(kinds) == 1
        if outcome == "range":
            assert isinstance(exc, RangeTooLarge), f"{provider}: {exc!r} (observed {kinds})"
        elif outcome == "retried":
            assert exc is None, f"{provider}: {exc!r}"
            assert kinds == ["http_429"]
        else:
            assert exc is not None, f"{provider}: retried"
            assert exc.retryable is False
            assert not isinstance(exc, RangeTooLarge)
