"""In-process JSON-RPC server simulating an EVM chain whose blocks carry test-provided logs.

The chain supports reorgs (every block ever produced stays reachable by hash), switching back to an
earlier fork, a finalized tag, a lagging-node mode and an optional max-results limit on eth_getLogs.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_utils import keccak

ZERO_HASH = "0x" + "00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
ZERO_BLOOM = "0x" + "00" * 256
EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
EMPTY_TRIE = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"


@dataclass
class RawLog:
    """A log as emitted by a contract; the chain fills in block/tx positions."""

    address: str
    topics: list[str]
    data: str = "0x"
    tx_hash: str | None = None


class RpcError(Exception):
    """A JSON-RPC error answered to the client."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


@dataclass
class _Block:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    logs: list[dict[str, Any]] = field(default_factory=list)
    tx_hashes: list[str] = field(default_factory=list)


def _digest(text: str) -> str:
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


def _parse_quantity(value: Any) -> int:
    if isinstance(value, bool):
        raise RpcError(-32602, f"invalid quantity: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcError(-32602, f"invalid block number or tag: {value!r}")


def _as_lower_set(value: Any) -> set[str] | None:
    """Normalise an address/topic filter entry: None or [] is a wildcard."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        return None
    return {str(v).lower() for v in items}


class SimChain:
    """A simulated EVM chain served over JSON-RPC/HTTP on 127.0.0.1."""

    def __init__(
        self,
        chain_id: int = 31337,
        finalized_depth: int | None = 8,
        with_block_timestamp_in_logs: bool = True,
        genesis_time: int = 1_700_000_000,
        max_logs_per_query: int | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.finalized_depth = finalized_depth
        self.with_block_timestamp_in_logs = with_block_timestamp_in_logs
        self.max_logs_per_query = max_logs_per_query
        self._lock = threading.RLock()
        self._serial = 0
        self._lag = 0
        self._finalized_override: int | None = None
        genesis = _Block(0, _digest(f"genesis:{chain_id}"), ZERO_HASH, genesis_time)
        self._by_hash: dict[str, _Block] = {genesis.hash: genesis}
        self._canonical: list[_Block] = [genesis]
        self._server: _RpcHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda _p: hex(self.chain_id),
            "net_version": lambda _p: str(self.chain_id),
            "web3_clientVersion": lambda _p: "SimChain/1.0",
            "eth_syncing": lambda _p: False,
            "eth_blockNumber": lambda _p: hex(self._visible_head()),
            "eth_getBlockByNumber": self._rpc_block_by_number,
            "eth_getBlockByHash": self._rpc_block_by_hash,
            "eth_getLogs": self._rpc_get_logs,
            "eth_getBlockReceipts": self._rpc_block_receipts,
            "eth_getTransactionByHash": self._rpc_transaction,
            "eth_call": self._rpc_call,
        }

    # ----------------------------------------------------------------- server lifecycle
    def start(self) -> str:
        """Start serving on a free loopback port and return the URL."""
        if self._server is not None:
            return self.url
        server = _RpcHTTPServer(("127.0.0.1", 0), _RpcHandler)
        server.app = self.handle_body
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="simchain", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close every open client connection."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("SimChain is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SimChain:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- chain manipulation
    def mine(self, logs: Sequence[RawLog] = (), count: int = 1) -> list[dict[str, Any]]:
        """Append `count` blocks; `logs` go into the first of them. Returns the new blocks."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            new = [self._append(list(logs) if i == 0 else []) for i in range(count)]
            return [self._block_view(b) for b in new]

    def reorg(self, depth: int, new_blocks: Sequence[Sequence[RawLog]]) -> list[dict[str, Any]]:
        """Replace the last `depth` blocks with one new block per entry of `new_blocks`."""
        with self._lock:
            if not 0 <= depth < len(self._canonical):
                raise ValueError(f"reorg depth {depth} out of range (head={self.head})")
            del self._canonical[len(self._canonical) - depth :]
            new = [self._append(list(logs)) for logs in new_blocks]
            return [self._block_view(b) for b in new]

    def switch_to(self, block_hash: str) -> None:
        """Make the fork ending at `block_hash` canonical again (its ancestors included)."""
        with self._lock:
            block = self._by_hash.get(block_hash.lower())
            if block is None:
                raise KeyError(f"unknown block {block_hash}")
            path: list[_Block] = []
            for _ in range(block.number + 1):
                if block.number < len(self._canonical) and self._canonical[block.number] is block:
                    break
                path.append(block)
                block = self._by_hash[block.parent_hash]
            del self._canonical[block.number + 1 :]
            self._canonical.extend(reversed(path))

    def set_finalized(self, number: int | None) -> None:
        """Force the finalized block number (None restores head - finalized_depth)."""
        with self._lock:
            self._finalized_override = number

    def set_lag(self, n: int) -> None:
        """Pretend the node is `n` blocks behind the real head."""
        if n < 0:
            raise ValueError("lag must be >= 0")
        with self._lock:
            self._lag = n

    @property
    def head(self) -> int:
        """Real head block number (ignores lag)."""
        with self._lock:
            return len(self._canonical) - 1

    def canonical_blocks(self) -> list[dict[str, Any]]:
        """All canonical blocks (genesis first), see `_block_view` for the shape."""
        with self._lock:
            return [self._block_view(b) for b in self._canonical]

    def get_block(self, block_hash: str) -> dict[str, Any] | None:
        """Any block ever produced (canonical or orphaned), by hash."""
        with self._lock:
            block = self._by_hash.get(block_hash.lower())
            return None if block is None else self._block_view(block)

    def is_canonical(self, block_hash: str) -> bool:
        with self._lock:
            block = self._by_hash.get(block_hash.lower())
            if block is None or block.number >= len(self._canonical):
                return False
            return self._canonical[block.number] is block

    def canonical_logs(self) -> list[dict[str, Any]]:
        """Every log of the canonical chain in (block, logIndex) order, RPC-shaped."""
        with self._lock:
            return [dict(log) for b in self._canonical for log in b.logs]

    def finalized_number(self) -> int | None:
        """Finalized block number as served (None if unsupported)."""
        with self._lock:
            visible = self._visible_head()
            if self._finalized_override is not None:
                return max(0, min(self._finalized_override, visible))
            if self.finalized_depth is None:
                return None
            return max(0, visible - self.finalized_depth)

    # ----------------------------------------------------------------- internals
    def _append(self, raw_logs: list[RawLog]) -> _Block:
        parent = self._canonical[-1]
        self._serial += 1
        number = parent.number + 1
        block_hash = _digest(f"block:{self.chain_id}:{number}:{self._serial}:{parent.hash}")
        block = _Block(number, block_hash, parent.hash, parent.timestamp + 1)
        tx_index: dict[str, int] = {}
        for i, raw in enumerate(raw_logs):
            tx = (raw.tx_hash or _digest(f"tx:{block_hash}:{i}")).lower()
            if tx not in tx_index:
                tx_index[tx] = len(block.tx_hashes)
                block.tx_hashes.append(tx)
            log: dict[str, Any] = {
                "address": raw.address.lower(),
                "topics": [t.lower() for t in raw.topics],
                "data": raw.data.lower(),
                "blockNumber": hex(number),
                "blockHash": block_hash,
                "transactionHash": tx,
                "transactionIndex": hex(tx_index[tx]),
                "logIndex": hex(i),
                "removed": False,
            }
            if self.with_block_timestamp_in_logs:
                log["blockTimestamp"] = hex(block.timestamp)
            block.logs.append(log)
        self._by_hash[block_hash] = block
        self._canonical.append(block)
        return block

    @staticmethod
    def _block_view(block: _Block) -> dict[str, Any]:
        return {
            "number": block.number,
            "hash": block.hash,
            "parentHash": block.parent_hash,
            "timestamp": block.timestamp,
            "transactions": list(block.tx_hashes),
            "logs": [dict(log) for log in block.logs],
        }

    def _visible_head(self) -> int:
        return max(0, len(self._canonical) - 1 - self._lag)

    def _resolve(self, tag: Any) -> int:
        if tag in ("latest", "pending"):
            return self._visible_head()
        if tag == "earliest":
            return 0
        if tag in ("finalized", "safe"):
            number = self.finalized_number()
            if number is None:
                raise RpcError(-32000, "finalized not supported")
            return number
        return _parse_quantity(tag)

    def _rpc_block(self, block: _Block) -> dict[str, Any]:
        return {
            "number": hex(block.number),
            "hash": block.hash,
            "parentHash": block.parent_hash,
            "nonce": "0x0000000000000000",
            "mixHash": ZERO_HASH,
            "sha3Uncles": EMPTY_UNCLES,
            "logsBloom": logs_bloom(block.logs),
            "transactionsRoot": EMPTY_TRIE,
            "stateRoot": _digest(f"state:{block.hash}"),
            "receiptsRoot": EMPTY_TRIE,
            "miner": ZERO_ADDRESS,
            "difficulty": "0x0",
            "totalDifficulty": "0x0",
            "extraData": "0x",
            "size": hex(540 + 32 * len(block.tx_hashes)),
            "gasLimit": hex(30_000_000),
            "gasUsed": hex(21_000 * len(block.tx_hashes)),
            "baseFeePerGas": "0x7",
            "timestamp": hex(block.timestamp),
            "transactions": list(block.tx_hashes),
            "uncles": [],
        }

    def _rpc_block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        if not params:
            raise RpcError(-32602, "missing block number")
        with self._lock:
            number = self._resolve(params[0])
            if number < 0 or number > self._visible_head():
                return None
            return self._rpc_block(self._canonical[number])

    def _rpc_block_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        if not params or not isinstance(params[0], str):
            raise RpcError(-32602, "missing block hash")
        with self._lock:
            block = self._by_hash.get(params[0].lower())
            if block is None or block.number > self._visible_head():
                return None
            return self._rpc_block(block)

    def _receipt(self, block: _Block, index: int, tx_hash: str) -> dict[str, Any]:
        logs = [dict(log) for log in block.logs if log["transactionHash"] == tx_hash]
        return {
            "transactionHash": tx_hash,
            "transactionIndex": hex(index),
            "blockNumber": hex(block.number),
            "blockHash": block.hash,
            "from": SIM_SENDER,
            "to": logs[0]["address"] if logs else None,
            "gasUsed": hex(21_000 + 1_000 * len(logs)),
            "effectiveGasPrice": "0x7",
            "cumulativeGasUsed": hex(21_000 * (index + 1)),
            "status": "0x1",
            "logs": logs,
            "logsBloom": logs_bloom(logs),
        }

    def _rpc_block_receipts(self, params: list[Any]) -> list[dict[str, Any]] | None:
        with self._lock:
            number = self._resolve(params[0] if params else "latest")
            if number < 0 or number > self._visible_head():
                return None
            block = self._canonical[number]
            return [self._receipt(block, i, h) for i, h in enumerate(block.tx_hashes)]

    def _rpc_transaction(self, params: list[Any]) -> dict[str, Any] | None:
        tx_hash = str(params[0]).lower() if params else ""
        with self._lock:
            for block in self._canonical[: self._visible_head() + 1]:
                if tx_hash in block.tx_hashes:
                    receipt = self._receipt(block, block.tx_hashes.index(tx_hash), tx_hash)
                    return {"hash": tx_hash, "blockHash": block.hash, "blockNumber": hex(block.number),
                            "from": SIM_SENDER, "to": receipt["to"], "input": "0x"}
        return None

    @staticmethod
    def _rpc_call(params: list[Any]) -> str:
        """Every view answers one word of zero (no contract state is simulated)."""
        return "0x" + "00" * 32

    def _rpc_get_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        flt = params[0] if params else {}
        if not isinstance(flt, dict):
            raise RpcError(-32602, "filter must be an object")
        with self._lock:
            candidates = self._candidate_logs(flt)
            addresses = _as_lower_set(flt.get("address"))
            topic_sets = [_as_lower_set(t) for t in (flt.get("topics") or [])]
            out = [dict(log) for log in candidates if _matches(log, addresses, topic_sets)]
        limit = self.max_logs_per_query
        if limit is not None and len(out) > limit:
            raise RpcError(-32005, f"query returned more than {limit} results")
        return out

    def _candidate_logs(self, flt: dict[str, Any]) -> Iterable[dict[str, Any]]:
        if flt.get("blockHash") is not None:
            if flt.get("fromBlock") is not None or flt.get("toBlock") is not None:
                raise RpcError(-32602, "cannot specify both BlockHash and FromBlock/ToBlock")
            block = self._by_hash.get(str(flt["blockHash"]).lower())
            if block is None or block.number > self._visible_head():
                raise RpcError(-32000, "unknown block")
            return block.logs
        start = self._resolve(flt.get("fromBlock") or "latest")
        end = min(self._resolve(flt.get("toBlock") or "latest"), self._visible_head())
        return [log for n in range(max(start, 0), end + 1) for log in self._canonical[n].logs]

    # ----------------------------------------------------------------- JSON-RPC dispatch
    def handle_call(self, call: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request object."""
        call_id = call.get("id") if isinstance(call, dict) else None
        try:
            if not isinstance(call, dict) or not isinstance(call.get("method"), str):
                raise RpcError(-32600, "invalid request")
            method = self._methods.get(call["method"])
            if method is None:
                raise RpcError(-32601, f"the method {call['method']} does not exist/is not available")
            params = call.get("params") or []
            if not isinstance(params, list):
                raise RpcError(-32602, "params must be an array")
            return {"jsonrpc": "2.0", "id": call_id, "result": method(params)}
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": call_id, "error": exc.to_json()}
        except Exception as exc:  # a malformed request must not kill the connection
            return {"jsonrpc": "2.0", "id": call_id, "error": {"code": -32603, "message": repr(exc)}}

    def handle_body(self, body: bytes) -> bytes:
        """Answer a raw HTTP body holding a single request or a batch."""
        try:
            payload = json.loads(body)
        except ValueError:
            return _dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        if isinstance(payload, list):
            if not payload:
                return _dumps(self.handle_call(None))
            return _dumps([self.handle_call(c) for c in payload])
        return _dumps(self.handle_call(payload))


SIM_SENDER = "0x" + "5e" * 20


def logs_bloom(logs: Iterable[dict[str, Any]]) -> str:
    """The 2048-bit logs bloom of some logs (address and every topic), as a node reports it."""
    bloom = bytearray(256)
    for log in logs:
        for item in (bytes.fromhex(log["address"][2:]), *(bytes.fromhex(t[2:]) for t in log["topics"])):
            value = keccak(item)
            for i in (0, 2, 4):
                bit = int.from_bytes(value[i : i + 2], "big") & 0x7FF
                bloom[255 - bit // 8] |= 1 << (bit % 8)
    return "0x" + bloom.hex()


def _matches(log: dict[str, Any], addresses: set[str] | None, topic_sets: list[set[str] | None]) -> bool:
    if addresses is not None and log["address"] not in addresses:
        return False
    topics = log["topics"]
    for pos, wanted in enumerate(topic_sets):
        if wanted is None:
            continue
        if pos >= len(topics) or topics[pos] not in wanted:
            return False
    return True


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _RpcHTTPServer(ThreadingHTTPServer):
    """Threading HTTP server that remembers open connections so stop() can cut them."""

    daemon_threads = True
    app: Callable[[bytes], bytes]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _RpcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _RpcHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        reply = self.server.app(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from base class
        """Silence per-request logging."""
