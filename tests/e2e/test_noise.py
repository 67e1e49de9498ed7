"""Blocks shared with an unwatched contract's logs: saturated blooms, and a watched silent address whose three
bloom bits are set by someone else's topics. A bloom only proves absence, so `run --to-block` completes, and
every table equals the model."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from eth_utils import keccak
from web3 import Web3

from indexer.errors import ExitCode
from indexer.fetch.fetcher import Header, bloom_bits, bloom_has
from indexer.runtime.app import Indexer
from tests.support.anvil import AnvilNode, start_anvil
from tests.support.compare import assert_every_log_stored_once, assert_tables_match_model
from tests.support.scenario import Deployment, ScenarioDriver, TxSender, fund, load_artifact, role_account
from tests.support.tables import make_config

SILENT = "0x" + keccak(text="a watched contract that never emits")[:20].hex()
SYNCED_TOPIC = "0x" + keccak(text="Synced(address,uint64,int64,uint256,uint32,uint64)").hex()
NOISE_LOGS_PER_BLOCK = 300
ROUNDS = 12


def topics_covering(address: str) -> list[str]:
    """Topics whose bloom bits, together, include the three bits `address` sets."""
    wanted = set(bloom_bits(bytes.fromhex(address[2:])))
    chosen: list[str] = []
    i = 0
    while wanted:
        topic = keccak(i.to_bytes(32, "big"))
        hit = wanted & set(bloom_bits(topic))
        if hit:
            chosen.append("0x" + topic.hex())
            wanted -= hit
        i += 1
    return chosen


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    anvil = start_anvil()
    try:
        yield anvil
    finally:
        anvil.stop()


def test_busy_blocks_and_a_silent_address_in_the_bloom(database_url, schema, node):
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    driver = ScenarioDriver(w3, deployment, seed=5, users=6)
    artifact = load_artifact("Noise")
    sender, emitter = TxSender(w3), role_account("noise")
    fund(w3, [emitter.address])
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = sender.send(emitter, None, factory.constructor().data_in_transaction, gas=2_000_000)
    noise = w3.eth.contract(address=w3.eth.wait_for_transaction_receipt(tx)["contractAddress"], abi=artifact["abi"])
    cover = topics_covering(SILENT)

    def send_noise(seed: int) -> None:
        many = noise.encode_abi("emitMany", args=[NOISE_LOGS_PER_BLOCK, seed])
        sender.send(emitter, noise.address, many, gas=15_000_000)
        chosen = noise.encode_abi("emitTopics", args=[[bytes.fromhex(t[2:]) for t in [*cover, SYNCED_TOPIC]]])
        sender.send(emitter, noise.address, chosen, gas=500_000)

    driver.run_cases()
    for i in range(ROUNDS):
        w3.provider.make_request("evm_setAutomine", [False])
        send_noise(i)
        if i % 3 == 2:  # a block with noise only: its bloom "may" hold the silent address and Synced
            w3.provider.make_request("evm_mine", [])
            w3.provider.make_request("evm_setAutomine", [True])
        else:
            driver._send_block([driver._plan() for _ in range(3)])
    head = w3.eth.block_number

    blooms = [
        Header.from_rpc(w3.provider.make_request("eth_getBlockByNumber", [hex(n), False])["result"])
        for n in range(head - ROUNDS + 1, head + 1)
    ]
    silent_bits = bloom_bits(bytes.fromhex(SILENT[2:]))
    assert all(bloom_has(h.logs_bloom, silent_bits) for h in blooms), "noise did not set the silent address's bits"
    assert all(bin(int.from_bytes(h.logs_bloom, "big")).count("1") > 1000 for h in blooms), "blooms not saturated"

    config = make_config(
        database_url,
        schema,
        [node.url],
        deployment.addresses,
        start_block=deployment.start_block,
        extra_contracts={"vault_wrbtc": [SILENT]},
    )
    indexer = Indexer(config)
    outcome: list[int] = []
    worker = threading.Thread(target=lambda: outcome.append(indexer.run(to_block=head)), daemon=True)
    worker.start()
    worker.join(120)
    if worker.is_alive():
        indexer.stop.set()
        worker.join(30)
        pytest.fail("run --to-block did not complete: the follower refused blocks on a bloom 'maybe'")
    assert outcome == [ExitCode.OK]
    watched = [*deployment.addresses.values(), SILENT]
    assert_every_log_stored_once(database_url, schema, w3, watched, deployment.start_block, head)
    assert_tables_match_model(database_url, schema, driver.model.expected_tables())
