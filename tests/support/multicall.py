"""Multicall3 on a local anvil node: the project's own aggregate3 contract, deployed, then its runtime code
placed at the canonical address 0xcA11bde05977b3631167028862bE2a173976CA11 (where every real chain has it)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3 import Web3

from tests.support.scenario import load_artifact

CANONICAL = "0xcA11bde05977b3631167028862bE2a173976CA11"


def install_multicall3(w3: Web3, deployer: LocalAccount, at: str = CANONICAL) -> str:
    """Deploy tests/contracts/Multicall3.sol and copy its code to `at`; return `at` (lower-case)."""
    artifact = load_artifact("Multicall3")
    tx = {
        "from": deployer.address,
        "data": artifact["bytecode"],
        "gas": 2_000_000,
        "nonce": w3.eth.get_transaction_count(deployer.address, "pending"),
        "chainId": w3.eth.chain_id,
        "gasPrice": w3.eth.gas_price,
    }
    signed = deployer.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError("deploying Multicall3 failed")
    code = w3.eth.get_code(receipt["contractAddress"])
    w3.provider.make_request("anvil_setCode", [at, "0x" + bytes(code).hex()])
    return at.lower()
