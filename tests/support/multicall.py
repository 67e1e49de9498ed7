"""Multicall3 on a local anvil node: the project's own aggregate3 contract (tests/contracts/Multicall3.sol) placed
at the canonical address 0xcA11bde05977b3631167028862bE2a173976CA11, where real chains have it.

The runtime code is what the init code returns when run by `eth_call`; `anvil_setCode` puts it in place, so no
transaction is sent and no account's nonce moves. Blocks mined afterwards carry the code in their state.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

CANONICAL = "0xcA11bde05977b3631167028862bE2a173976CA11"
ARTIFACT = Path(__file__).resolve().parents[1] / "contracts" / "build" / "Multicall3.json"


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def install_multicall3(rpc_url: str, at: str = CANONICAL) -> str:
    """Put Multicall3's runtime code at `at` on the anvil node at `rpc_url`; return `at` (lower-case)."""
    init_code = json.loads(ARTIFACT.read_text())["bytecode"]
    runtime = _rpc(rpc_url, "eth_call", [{"data": init_code}, "latest"])
    if len(runtime) <= 2:
        raise RuntimeError("Multicall3's init code returned no runtime code")
    _rpc(rpc_url, "anvil_setCode", [at, runtime])
    return at.lower()
