"""Transaction receipts of whole blocks: the second source for completeness, and the facts logs do not carry.

`eth_getBlockReceipts` is used where the node has it (one call per block, batched); a node without it is
detected once (method not found) and served by the block's transaction hashes plus batched
`eth_getTransactionReceipt`. Every receipt is checked against the block hash it was asked for, so receipts of
another fork are never mixed with a range's logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from indexer.chain.rpc import RpcClient, RpcError

log = structlog.get_logger("receipts")

T = TypeVar("T")
R = TypeVar("R")

# Receipt batches of one round in flight at once: the node builds one while the last answer is parsed.
RECEIPT_REQUESTS_IN_FLIGHT = 3


class ReceiptsInconsistent(RpcError):
    """A receipt answer contradicts the block it was asked for (other fork, missing receipt); retry the round."""


@dataclass(frozen=True, slots=True)
class ReceiptLog:
    """One log as a receipt carries it."""

    log_index: int
    address: str
    topics: tuple[str, ...]
    data: str
    tx_hash: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """The facts of one transaction receipt the indexer keeps (addresses lower-case)."""

    tx_hash: str
    tx_index: int
    block_number: int
    block_hash: str
    sender: str
    to: str | None
    gas_used: int
    effective_gas_price: int | None
    status: int
    logs: tuple[ReceiptLog, ...]

    @classmethod
    def from_rpc(cls, raw: dict[str, Any]) -> Receipt:
        price = raw.get("effectiveGasPrice")
        to = raw.get("to")
        return cls(
            tx_hash=raw["transactionHash"].lower(),
            tx_index=int(raw["transactionIndex"], 16),
            block_number=int(raw["blockNumber"], 16),
            block_hash=raw["blockHash"].lower(),
            sender=raw["from"].lower(),
            to=to.lower() if to else None,
            gas_used=int(raw["gasUsed"], 16),
            effective_gas_price=int(price, 16) if price else None,
            status=int(raw.get("status") or "0x1", 16),
            logs=tuple(
                ReceiptLog(
                    int(lg["logIndex"], 16),
                    lg["address"].lower(),
                    tuple(t.lower() for t in lg["topics"]),
                    lg["data"].lower(),
                    lg["transactionHash"].lower(),
                )
                for lg in raw.get("logs") or []
            ),
        )


class ReceiptFetcher:
    """Fetches every receipt of given blocks (by number, checked against the expected block hash)."""

    def __init__(self, rpc: RpcClient, *, batch: int = 10):
        self.rpc = rpc
        self.batch = batch
        self.block_receipts_works: bool | None = None  # unknown until the node answered once
        self._pool: ThreadPoolExecutor | None = None

    def blocks(self, expected: dict[int, str]) -> dict[int, list[Receipt]]:
        """Receipts of each block number in `expected` (number -> block hash), in transaction order."""
        numbers = sorted(expected)
        if not numbers:
            return {}
        if self.block_receipts_works is not False:
            try:
                out = self._by_block(numbers)
                self.block_receipts_works = True
                return self._checked(out, expected)
            except RpcError as exc:
                if exc.retryable or self.block_receipts_works:
                    raise
                log.info("node has no eth_getBlockReceipts; using eth_getTransactionReceipt", error=str(exc)[:200])
                self.block_receipts_works = False
        return self._checked(self._by_transaction(numbers), expected)

    def _by_block(self, numbers: Sequence[int]) -> dict[int, list[Receipt]]:
        chunks = [numbers[i : i + self.batch] for i in range(0, len(numbers), self.batch)]
        out: dict[int, list[Receipt]] = {}
        for part in self._each(self._block_batch, chunks):
            out.update(part)
        return out

    def _block_batch(self, chunk: Sequence[int]) -> dict[int, list[Receipt]]:
        answers = self.rpc.batch([("eth_getBlockReceipts", [hex(n)]) for n in chunk])
        out: dict[int, list[Receipt]] = {}
        for number, raw in zip(chunk, answers, strict=True):
            if raw is None:
                raise ReceiptsInconsistent(f"node has no receipts for block {number}")
            out[number] = [Receipt.from_rpc(r) for r in raw]
        return out

    def _each(self, fetch: Callable[[T], R], chunks: list[T]) -> list[R]:
        """`fetch` of every chunk, up to RECEIPT_REQUESTS_IN_FLIGHT at once; the first error is raised."""
        if len(chunks) <= 1:
            return [fetch(chunk) for chunk in chunks]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(RECEIPT_REQUESTS_IN_FLIGHT, thread_name_prefix="receipts")
        return list(self._pool.map(fetch, chunks))

    def _by_transaction(self, numbers: Sequence[int]) -> dict[int, list[Receipt]]:
        out: dict[int, list[Receipt]] = {}
        blocks = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        hashes: list[tuple[int, str]] = []
        for number, block in zip(numbers, blocks, strict=True):
            if block is None:
                raise ReceiptsInconsistent(f"node does not have block {number}")
            out[number] = []
            hashes.extend((number, h) for h in block.get("transactions") or [])
        chunks = [hashes[i : i + self.batch] for i in range(0, len(hashes), self.batch)]
        for part in self._each(self._transaction_batch, chunks):
            for number, receipt in part:
                out[number].append(receipt)
        return out

    def _transaction_batch(self, chunk: Sequence[tuple[int, str]]) -> list[tuple[int, Receipt]]:
        answers = self.rpc.batch([("eth_getTransactionReceipt", [h]) for _, h in chunk])
        out: list[tuple[int, Receipt]] = []
        for (number, tx_hash), raw in zip(chunk, answers, strict=True):
            if raw is None:
                raise ReceiptsInconsistent(f"node has no receipt for {tx_hash} of block {number}")
            out.append((number, Receipt.from_rpc(raw)))
        return out

    @staticmethod
    def _checked(out: dict[int, list[Receipt]], expected: dict[int, str]) -> dict[int, list[Receipt]]:
        for number, receipts in out.items():
            for receipt in receipts:
                if receipt.block_number != number or receipt.block_hash != expected[number].lower():
                    raise ReceiptsInconsistent(
                        f"receipt {receipt.tx_hash} is of block {receipt.block_number} {receipt.block_hash}, "
                        f"expected {number} {expected[number]}"
                    )
            receipts.sort(key=lambda r: r.tx_index)
        return out
