"""Tests for the test-support servers: SimChain and FaultProxy."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

try:
    from tests.support.faultproxy import FaultProxy
    from tests.support.simchain import RawLog, SimChain
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from support.faultproxy import FaultProxy
    from support.simchain import RawLog, SimChain

ADDR_A = "0x" + "Aa" * 20
ADDR_B = "0x" + "bB" * 20
TOPIC_X = "0x" + "11" * 32
TOPIC_Y = "0x" + "22" * 32
TOPIC_Z = "0x" + "33" * 32


def post(url: str, payload: Any, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    """POST JSON and return (status, raw body, headers) without raising on HTTP errors."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def call(url: str, method: str, *params: Any) -> dict[str, Any]:
    status, body, _ = post(url, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert status == 200
    reply = json.loads(body)
    assert reply["id"] == 7
    return reply


def result(url: str, method: str, *params: Any) -> Any:
    reply = call(url, method, *params)
    assert "error" not in reply, reply
    return reply["result"]


def logs_of(url: str, **flt: Any) -> list[dict[str, Any]]:
    return result(url, "eth_getLogs", flt)


@pytest.fixture
def chain() -> Iterator[SimChain]:
    with SimChain() as sim:
        yield sim


@pytest.fixture
def proxied(chain: SimChain) -> Iterator[tuple[SimChain, FaultProxy]]:
    with FaultProxy(chain.url, seed=1) as proxy:
        yield chain, proxy


# --------------------------------------------------------------------------- SimChain


def test_mine_fills_block_and_log_fields(chain: SimChain) -> None:
    chain.mine([RawLog(ADDR_A, [TOPIC_X], "0x01"), RawLog(ADDR_B, [TOPIC_Y], "0x02", tx_hash="0x" + "ee" * 32)])
    chain.mine(count=2)
    w3 = Web3(HTTPProvider(chain.url))
    assert w3.eth.chain_id == 31337
    assert result(chain.url, "net_version") == "31337"
    assert w3.eth.block_number == chain.head == 3
    blocks = chain.canonical_blocks()
    assert [b["number"] for b in blocks] == [0, 1, 2, 3]
    assert [b["timestamp"] for b in blocks] == [1_700_000_000 + i for i in range(4)]
    for parent, child in zip(blocks, blocks[1:], strict=False):
        assert child["parentHash"] == parent["hash"]
    block1 = w3.eth.get_block(1)
    assert block1["hash"].to_0x_hex() == blocks[1]["hash"]
    assert len(block1["transactions"]) == 2
    logs = logs_of(chain.url, fromBlock="0x0", toBlock="latest")
    assert [(log["logIndex"], log["transactionIndex"]) for log in logs] == [("0x0", "0x0"), ("0x1", "0x1")]
    assert logs[0]["address"] == ADDR_A.lower() and logs[0]["removed"] is False
    assert logs[0]["blockTimestamp"] == hex(1_700_000_001)
    assert logs[1]["transactionHash"] == "0x" + "ee" * 32
    assert logs[0]["blockHash"] == blocks[1]["hash"]
    assert result(chain.url, "eth_getBlockByNumber", "0x4", False) is None


def test_logs_without_block_timestamp() -> None:
    with SimChain(with_block_timestamp_in_logs=False, chain_id=5) as sim:
        sim.mine([RawLog(ADDR_A, [TOPIC_X], "0x")])
        assert "blockTimestamp" not in logs_of(sim.url, fromBlock="0x1")[0]
        assert result(sim.url, "eth_chainId") == "0x5"


def test_get_logs_filters(chain: SimChain) -> None:
    chain.mine([RawLog(ADDR_A, [TOPIC_X, TOPIC_Y], "0x"), RawLog(ADDR_B, [TOPIC_Y], "0x")])
    chain.mine([RawLog(ADDR_A, [TOPIC_Z], "0x")])
    url = chain.url
    every = dict(fromBlock="earliest", toBlock="latest")
    assert len(logs_of(url, **every)) == 3
    assert len(logs_of(url, **every, address=ADDR_A.upper().replace("0X", "0x"))) == 2
    assert len(logs_of(url, **every, address=[ADDR_A, ADDR_B])) == 3
    assert len(logs_of(url, **every, topics=[TOPIC_Y])) == 1
    assert len(logs_of(url, **every, topics=[[TOPIC_X, TOPIC_Y]])) == 2
    assert len(logs_of(url, **every, topics=[None, TOPIC_Y])) == 1
    assert len(logs_of(url, **every, topics=[None])) == 3
    assert len(logs_of(url, fromBlock="0x2", toBlock="0x2")) == 1
    assert len(logs_of(url)) == 1  # defaults to latest..latest
    assert logs_of(url, fromBlock="0x5", toBlock="0x9") == []
    block1 = chain.canonical_blocks()[1]["hash"]
    assert len(logs_of(url, blockHash=block1)) == 2
    assert call(url, "eth_getLogs", {"blockHash": "0x" + "99" * 32})["error"]["code"] == -32000
    w3 = Web3(HTTPProvider(url))
    got = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": Web3.to_checksum_address(ADDR_A)})
    assert [log["blockNumber"] for log in got] == [1, 2]


def test_reorg_and_switch_to(chain: SimChain) -> None:
    chain.mine([RawLog(ADDR_A, [TOPIC_X], "0x01")], count=4)
    old = chain.canonical_blocks()
    new = chain.reorg(2, [[RawLog(ADDR_A, [TOPIC_Y], "0x02")], [], []])
    assert chain.head == 5 and [b["number"] for b in new] == [3, 4, 5]
    now = chain.canonical_blocks()
    assert now[:3] == old[:3]
    assert {b["hash"] for b in now[3:]}.isdisjoint(b["hash"] for b in old)
    assert now[3]["parentHash"] == old[2]["hash"]
    orphan = result(chain.url, "eth_getBlockByHash", old[4]["hash"], False)
    assert orphan["hash"] == old[4]["hash"] and not chain.is_canonical(old[4]["hash"])
    assert [log["data"] for log in logs_of(chain.url, fromBlock="0x0")] == ["0x01", "0x02"]
    # A shallower reorg with fewer blocks.
    chain.reorg(3, [[]])
    assert chain.head == 3
    chain.switch_to(old[4]["hash"])
    assert [b["hash"] for b in chain.canonical_blocks()] == [b["hash"] for b in old]
    chain.switch_to(new[-1]["hash"])
    assert chain.head == 5 and chain.canonical_blocks()[3]["hash"] == new[0]["hash"]
    # Reorging back to identical contents still yields new hashes.
    again = chain.reorg(1, [[]])
    assert again[0]["hash"] != new[-1]["hash"]
    with pytest.raises(ValueError):
        chain.reorg(chain.head + 1, [])


def test_finalized_tags() -> None:
    with SimChain(finalized_depth=3) as sim:
        sim.mine(count=10)
        assert result(sim.url, "eth_getBlockByNumber", "finalized", False)["number"] == hex(7)
        assert result(sim.url, "eth_getBlockByNumber", "safe", False)["number"] == hex(7)
        assert result(sim.url, "eth_getBlockByNumber", "earliest", False)["number"] == "0x0"
        sim.set_finalized(2)
        assert Web3(HTTPProvider(sim.url)).eth.get_block("finalized")["number"] == 2
        assert len(logs_of(sim.url, fromBlock="0x0", toBlock="finalized")) == 0
        sim.set_finalized(None)
        assert sim.finalized_number() == 7
    with SimChain(finalized_depth=None) as sim:
        sim.mine(count=2)
        err = call(sim.url, "eth_getBlockByNumber", "finalized", False)["error"]
        assert err["code"] in (-32000, -32601) and "finalized" in err["message"]
        sim.set_finalized(1)
        assert result(sim.url, "eth_getBlockByNumber", "finalized", False)["number"] == "0x1"


def test_lagging_node(chain: SimChain) -> None:
    for i in range(5):
        chain.mine([RawLog(ADDR_A, [TOPIC_X], hex(i))])
    head_hash = chain.canonical_blocks()[-1]["hash"]
    chain.set_lag(2)
    assert result(chain.url, "eth_blockNumber") == "0x3"
    assert result(chain.url, "eth_getBlockByNumber", "latest", False)["number"] == "0x3"
    assert result(chain.url, "eth_getBlockByNumber", "0x4", False) is None
    assert result(chain.url, "eth_getBlockByHash", head_hash, False) is None
    assert len(logs_of(chain.url, fromBlock="0x0", toBlock="0x5")) == 3
    chain.set_lag(0)
    assert len(logs_of(chain.url, fromBlock="0x0", toBlock="0x5")) == 5


def test_batch_and_errors(chain: SimChain) -> None:
    chain.mine(count=2)
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": "b", "method": "eth_getBlockByNumber", "params": ["0x1", False]},
        {"jsonrpc": "2.0", "id": "c", "method": "nope", "params": []},
    ]
    status, body, _ = post(chain.url, batch)
    replies = json.loads(body)
    assert status == 200 and [r["id"] for r in replies] == ["a", "b", "c"]
    assert replies[0]["result"] == "0x2" and replies[1]["result"]["number"] == "0x1"
    assert replies[2]["error"]["code"] == -32601
    w3 = Web3(HTTPProvider(chain.url))
    with w3.batch_requests() as b:
        b.add(w3.eth.get_block(1))
        b.add(w3.eth.get_block(2))
        blocks = b.execute()
    assert [blk["number"] for blk in blocks] == [1, 2]
    assert json.loads(post(chain.url, [])[1])["error"]["code"] == -32600
    bad = urllib.request.Request(chain.url, data=b"{not json", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(bad, timeout=5) as resp:
        assert json.loads(resp.read())["error"]["code"] == -32700


def test_max_logs_per_query() -> None:
    with SimChain(max_logs_per_query=2) as sim:
        sim.mine([RawLog(ADDR_A, [TOPIC_X], "0x")] * 3)
        err = call(sim.url, "eth_getLogs", {"fromBlock": "0x0"})["error"]
        assert err == {"code": -32005, "message": "query returned more than 2 results"}
        assert len(logs_of(sim.url, fromBlock="0x1", toBlock="0x1", topics=[TOPIC_Y])) == 0


def test_stop_refuses_connections() -> None:
    sim = SimChain()
    url = sim.start()
    assert result(url, "eth_blockNumber") == "0x0"
    sim.stop()
    with pytest.raises(urllib.error.URLError):
        post(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=2)


# --------------------------------------------------------------------------- FaultProxy


def test_proxy_is_transparent_by_default(proxied: tuple[SimChain, FaultProxy]) -> None:
    chain, proxy = proxied
    chain.mine([RawLog(ADDR_A, [TOPIC_X], "0x")], count=3)
    assert logs_of(proxy.url, fromBlock="0x0") == logs_of(chain.url, fromBlock="0x0")
    w3 = Web3(HTTPProvider(proxy.url))
    with w3.batch_requests() as b:
        b.add(w3.eth.get_block(1))
        b.add(w3.eth.get_logs({"fromBlock": 0}))
        block, logs = b.execute()
    assert block["number"] == 1 and len(logs) == 1
    assert proxy.stats["requests"] == 2
    assert sum(v for k, v in proxy.stats.items() if k not in ("requests", "upstream_calls")) == 0


def test_error_fault(proxied: tuple[SimChain, FaultProxy]) -> None:
    _, proxy = proxied
    proxy.configure(error_rate=1.0)
    statuses = {post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})[0] for _ in range(12)}
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    assert proxy.stats["error"] == 12
    proxy.error_rate = 0
    assert result(proxy.url, "eth_chainId") == "0x7a69"


def test_timeout_fault(proxied: tuple[SimChain, FaultProxy]) -> None:
    _, proxy = proxied
    proxy.configure(timeout_rate=1.0, timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=5)
    assert 0.15 < time.monotonic() - started < 3
    proxy.timeout_s = 5
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=0.3)
    assert proxy.stats["timeout"] == 2


def test_rate_limit_fault(proxied: tuple[SimChain, FaultProxy]) -> None:
    _, proxy = proxied
    proxy.configure(rate_limit_rate=1.0, rate_limit_style="http")
    status, _, headers = post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
    assert status == 429 and headers["Retry-After"] == "1"
    proxy.rate_limit_style = "rpc"
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(2)]
    status, body, _ = post(proxy.url, batch)
    assert status == 200
    assert [r["error"] for r in json.loads(body)] == [{"code": -32005, "message": "rate limited"}] * 2
    proxy.rate_limit_style = "mixed"
    statuses = {post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})[0] for _ in range(16)}
    assert statuses == {200, 429}
    assert proxy.stats["rate_limit"] == 18
    assert proxy.stats["rate_limit_http"] + proxy.stats["rate_limit_rpc"] == 18


def test_truncate_fault(proxied: tuple[SimChain, FaultProxy]) -> None:
    chain, proxy = proxied
    chain.mine([RawLog(ADDR_A, [TOPIC_X], "0x")], count=2)
    honest = post(chain.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber",
                              "params": ["0x1", False]})[1]
    proxy.truncate_rate = 1.0
    for _ in range(5):
        status, body, _ = post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber",
                                           "params": ["0x1", False]})
        assert status == 200 and 0 < len(body) < len(honest) and honest.startswith(body)
        with pytest.raises(ValueError):
            json.loads(body)
    assert proxy.stats["truncate"] == 5


def test_empty_logs_fault_per_call(proxied: tuple[SimChain, FaultProxy]) -> None:
    chain, proxy = proxied
    chain.mine([RawLog(ADDR_A, [TOPIC_X], "0x")], count=3)
    proxy.empty_logs_rate = 1.0
    assert logs_of(proxy.url, fromBlock="0x0") == []
    assert result(proxy.url, "eth_blockNumber") == "0x3"
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"fromBlock": "0x0"}]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_getLogs", "params": [{"fromBlock": "0x1"}]},
    ]
    replies = json.loads(post(proxy.url, batch)[1])
    assert [r["result"] for r in replies] == [[], "0x3", []]
    assert proxy.stats["empty_logs"] == 3
    proxy.empty_logs_rate = 0.5
    outcomes = [len(logs_of(proxy.url, fromBlock="0x0")) for _ in range(20)]
    assert set(outcomes) == {0, 1}


def test_max_range_fault_rotates_styles(proxied: tuple[SimChain, FaultProxy]) -> None:
    chain, proxy = proxied
    chain.mine([RawLog(ADDR_A, [TOPIC_X], "0x")], count=30)
    proxy.max_range = 10
    assert len(logs_of(proxy.url, fromBlock="0x1", toBlock="0xa")) == 1
    errors = [call(proxy.url, "eth_getLogs", {"fromBlock": "0xa", "toBlock": "0x1d"})["error"] for _ in range(4)]
    assert errors[0] == {"code": -32005, "message": "query returned more than 10000 results. "
                                                    "Try with this block range [0xa, 0x13]."}
    assert errors[1] == {"code": -32000, "message": "block range is too wide"}
    assert errors[2] == {"code": -32602, "message": "eth_getLogs is limited to a 10 block range"}
    assert errors[3] == errors[0]
    assert "error" in call(proxy.url, "eth_getLogs", {"fromBlock": "earliest"})  # tags are resolved
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"fromBlock": "0x0", "toBlock": "0x63"}]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getLogs", "params": [{"fromBlock": "0x0", "toBlock": "0x1"}]},
    ]
    first, second = json.loads(post(proxy.url, batch)[1])
    assert "error" in first and second["result"] and second["id"] == 2
    assert len(logs_of(proxy.url, blockHash=chain.canonical_blocks()[1]["hash"])) == 1
    assert proxy.stats["max_range"] == 6


def test_lag_fault(proxied: tuple[SimChain, FaultProxy]) -> None:
    chain, proxy = proxied
    for i in range(10):
        chain.mine([RawLog(ADDR_A, [TOPIC_X], hex(i))])
    proxy.lag_blocks = 4
    url = proxy.url
    assert result(url, "eth_blockNumber") == "0x6"
    assert result(url, "eth_getBlockByNumber", "latest", False)["number"] == "0x6"
    assert result(url, "eth_getBlockByNumber", "0x7", False) is None
    assert result(url, "eth_getBlockByNumber", "finalized", False)["number"] == "0x2"
    assert result(url, "eth_getBlockByHash", chain.canonical_blocks()[9]["hash"], False) is None
    assert len(logs_of(url, fromBlock="0x0", toBlock="0xa")) == 6
    assert len(logs_of(url, fromBlock="0x0")) == 6  # toBlock defaults to the lagging "latest"
    assert len(logs_of(url)) == 1
    assert logs_of(url, fromBlock="0x8", toBlock="0x9") == []
    assert logs_of(url, blockHash=chain.canonical_blocks()[9]["hash"]) == []
    chain.set_finalized(9)
    assert result(url, "eth_getBlockByNumber", "finalized", False)["number"] == "0x6"
    w3 = Web3(HTTPProvider(url))
    assert w3.eth.block_number == 6
    assert len(w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"})) == 6


def test_down_and_restart_keep_the_port(proxied: tuple[SimChain, FaultProxy]) -> None:
    _, proxy = proxied
    url, port = proxy.url, proxy.port
    w3 = Web3(HTTPProvider(url))
    assert w3.eth.chain_id == 31337
    proxy.down = True
    with pytest.raises(urllib.error.URLError):
        post(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=2)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    proxy.configure(down=False)
    assert proxy.port == port and result(url, "eth_chainId") == "0x7a69"
    assert w3.eth.chain_id == 31337  # the client survives a dropped keep-alive connection
    for _ in range(3):
        proxy.restart()
        assert proxy.port == port
        assert result(url, "eth_blockNumber") == "0x0"
    assert proxy.stats["restarts"] == 3


def test_proxy_is_deterministic_for_a_seed(chain: SimChain) -> None:
    def run(seed: int) -> list[int]:
        with FaultProxy(chain.url, seed=seed) as proxy:
            proxy.configure(error_rate=0.3, rate_limit_rate=0.3, rate_limit_style="http")
            return [post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})[0] for _ in range(20)]

    first = run(42)
    assert first == run(42)
    assert len(set(first)) > 2
    with pytest.raises(TypeError):
        FaultProxy(chain.url).configure(bogus=1)


def test_proxy_reports_upstream_down() -> None:
    sim = SimChain()
    url = sim.start()
    with FaultProxy(url) as proxy:
        sim.stop()
        status, _, _ = post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
        assert status == 502 and proxy.stats["upstream_error"] == 1
