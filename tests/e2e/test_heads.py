"""The newHeads subscription against real anvil: delivery, fallback to polling, reconnects, and the follower's wake."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from web3 import Web3

from indexer.chain.heads import HeadSubscription, websocket_urls
from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from tests.support.anvil import AnvilNode, free_port, start_anvil
from tests.support.compare import wait_for_model
from tests.support.scenario import Deployment, ScenarioDriver
from tests.support.simchain import SimChain
from tests.support.tables import make_config
from tests.support.tcpproxy import TcpProxy

WAIT = 30.0  # generous bound for something that must happen at all (never a performance figure)


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    node = start_anvil()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def subscriptions() -> Iterator[Callable[..., HeadSubscription]]:
    made: list[HeadSubscription] = []

    def make(urls: list[str], **kw: float) -> HeadSubscription:
        sub = HeadSubscription(urls, **kw).start()
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def _mine(w3: Web3) -> dict:
    w3.provider.make_request("evm_mine", [])
    block = w3.eth.get_block("latest")
    return {"number": block["number"], "hash": block["hash"].to_0x_hex()}


def _wait_for_head(sub: HeadSubscription, number: int) -> None:
    deadline = time.monotonic() + WAIT
    while (sub.latest is None or sub.latest.number < number) and time.monotonic() < deadline:
        sub.wait(1.0)
    assert sub.latest is not None and sub.latest.number == number, f"head {number} not announced: {sub.latest}"


def test_websocket_urls_follow_the_http_endpoints() -> None:
    assert websocket_urls(["http://127.0.0.1:8545", "https://rpc.example/v1/KEY"]) == [
        "ws://127.0.0.1:8545",
        "wss://rpc.example/v1/KEY",
    ]


def test_a_mined_block_is_announced_with_its_number_and_hash(node, subscriptions) -> None:
    w3 = Web3(Web3.HTTPProvider(node.url))
    sub = subscriptions(websocket_urls([node.url]))
    assert sub.wait_subscribed(WAIT), f"no subscription on anvil's port (failures: {sub.failures})"
    sub.wait(0)  # forget anything announced before this point
    for _ in range(3):
        block = _mine(w3)
        assert sub.wait(WAIT) is True
        _wait_for_head(sub, block["number"])
        assert (sub.latest.number, sub.latest.hash) == (block["number"], block["hash"])
    assert sub.connections == 1 and sub.failures == 0
    assert sub.heads_received >= 3


def test_an_endpoint_without_websocket_leaves_plain_polling(subscriptions) -> None:
    with SimChain() as chain:  # answers HTTP JSON-RPC only: the upgrade is refused
        nobody = f"ws://127.0.0.1:{free_port()}"  # nothing listens here
        sub = subscriptions([*websocket_urls([chain.url]), nobody], initial_backoff=0.05, max_backoff=0.1)
        deadline = time.monotonic() + WAIT
        while sub.failures < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sub.failures >= 4, "both endpoints must have been tried, and retried"
        assert not sub.subscribed and sub.connections == 0
        chain.mine(count=3)
        assert sub.wait(0.3) is False  # nothing announced: the wait is a plain poll interval
        assert sub.latest is None


def test_the_subscription_comes_back_after_the_connection_is_cut(node, subscriptions) -> None:
    w3 = Web3(Web3.HTTPProvider(node.url))
    proxy = TcpProxy("127.0.0.1", node.port)
    try:
        sub = subscriptions([f"ws://127.0.0.1:{proxy.port}"], initial_backoff=0.05, max_backoff=0.2)
        assert sub.wait_subscribed(WAIT)
        _wait_for_head(sub, _mine(w3)["number"])
        proxy.outage(True)  # cut the open connection and refuse new ones for a while
        deadline = time.monotonic() + WAIT
        while sub.subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sub.subscribed, "the cut connection must be noticed"
        missed = _mine(w3)  # mined while the subscription is down
        while sub.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sub.failures >= 2, "reconnect attempts during the outage must fail and be retried"
        proxy.outage(False)
        assert sub.wait_subscribed(WAIT), "the subscription must be re-established"
        assert sub.connections == 2
        assert sub.latest is not None and sub.latest.number < missed["number"]  # a missed head is not replayed
        block = _mine(w3)
        _wait_for_head(sub, block["number"])
        assert sub.latest.hash == block["hash"]
    finally:
        proxy.close()


def test_the_follower_is_woken_by_new_heads_not_by_its_poll_interval(database_url, schema, node) -> None:
    """With a minute between polls (longer than any wait below), blocks mined after the catch-up reach the
    tables only through the wake."""
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    driver = ScenarioDriver(w3, deployment, seed=5, users=4)
    driver.run(5)
    config = make_config(
        database_url, schema, [node.url], deployment.addresses, start_block=deployment.start_block, poll_interval=60
    )
    stop = threading.Event()
    indexer = Indexer(config, stop=stop)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(indexer.run()), daemon=True)
    worker.start()
    try:
        wait_for_model(database_url, schema, driver.model.expected_tables(), timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while not (indexer.state.follower and indexer.state.follower.progress.caught_up):
            assert time.monotonic() < deadline, "the follower did not catch up"
            time.sleep(0.05)
        follower = indexer.state.follower
        assert isinstance(follower.heads, HeadSubscription) and follower.heads.subscribed
        driver.run(6)  # automined: six new blocks, each announced
        wait_for_model(database_url, schema, driver.model.expected_tables(), timeout=WAIT)
        assert follower.progress.indexed_block == w3.eth.block_number
    finally:
        stop.set()
        worker.join(timeout=20)
    assert result == [ExitCode.OK]


def test_subscribe_heads_false_turns_the_subscription_off(database_url, schema) -> None:
    config = make_config(
        database_url, schema, ["http://127.0.0.1:1"], {}, subscribe_heads=False, ws_urls=["ws://127.0.0.1:1"]
    )
    assert Indexer(config).heads() is None


def test_a_finished_run_leaves_no_subscription_behind(database_url, schema, node) -> None:
    """`run --to-block` returns with its newHeads thread stopped (an embedding process keeps no thread
    reconnecting to a node it no longer uses)."""
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    ScenarioDriver(w3, deployment, seed=6, users=3).run(3)
    config = make_config(database_url, schema, [node.url], deployment.addresses, start_block=deployment.start_block)
    before = {t for t in threading.enumerate() if t.name == "heads"}
    indexer = Indexer(config)
    assert indexer.run(to_block=w3.eth.block_number) == ExitCode.OK
    assert indexer.state.follower is not None and indexer.state.follower.heads is not None
    left = {t for t in threading.enumerate() if t.name == "heads" and t.is_alive()} - before
    assert not left, "the newHeads thread outlived the run"
