"""Fetching the watched logs of a block range, complete and consistent, with an adaptive range size.

Each round sends one JSON-RPC batch: eth_getLogs for the range plus the header of the range's last block
(and, near the head, every header of the range). A node that does not have the last block yet cannot
hide logs from us: the round is refused and retried. Every log is checked against the headers.

A logs bloom proves only absence. A returned log whose block bloom lacks its address or topic0 comes from
another fork or is corrupt: the round is refused. Bits that are set prove nothing (other contracts set them),
so presence is confirmed with a second source, the block's receipts (completeness mode "receipts"): the
receipts of every block holding returned logs must carry exactly those watched logs, and a block whose bloom
may hold a watched address and topic0 with no returned log is confirmed or cleared by its receipts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from eth_utils.crypto import keccak

from indexer.chain.rpc import RangeTooLarge, RpcClient, RpcError
from indexer.fetch.receipts import Receipt, ReceiptFetcher
from indexer.records import RawLog

log = structlog.get_logger("fetcher")


class InconsistentResponse(RpcError):
    """The node's answer contradicts itself (missing block, hash mismatch, bad log order); retry the round."""


@dataclass(frozen=True)
class Header:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    logs_bloom: bytes = b""

    @classmethod
    def from_rpc(cls, raw: dict[str, Any]) -> Header:
        bloom = raw.get("logsBloom")
        return cls(
            int(raw["number"], 16),
            raw["hash"],
            raw["parentHash"],
            int(raw["timestamp"], 16),
            bytes.fromhex(bloom[2:]) if bloom and len(bloom) == 514 else b"",
        )


@dataclass
class FetchedRange:
    """Logs of blocks from_block..to_block, each with its block timestamp, the headers fetched (always the
    first and the last), and the receipts of the blocks holding logs (when receipts were fetched)."""

    from_block: int
    to_block: int
    logs: list[RawLog]
    headers: dict[int, Header] = field(default_factory=dict)
    receipts: dict[int, list[Receipt]] = field(default_factory=dict)

    @property
    def last(self) -> Header:
        return self.headers[self.to_block]


HEADER_BATCH = 100  # headers per JSON-RPC batch
# Header batches of one range in flight at once: the node answers one while the last answer is parsed (on a
# range of empty blocks, reading every header is the whole cost of the receipts completeness check).
HEADER_REQUESTS_IN_FLIGHT = 3
TARGET_LOGS = 3_000


class AdaptiveSpan:
    """The eth_getLogs range size: shrinks on 'too large' errors, grows back after successes, capped."""

    def __init__(self, initial: int, maximum: int, on_change: Callable[[int], None] | None = None):
        self.maximum = maximum
        self.value = max(1, min(initial, maximum))
        self._streak = 0
        self._on_change = on_change

    def shrink(self, suggested: int | None) -> None:
        old = self.value
        self.value = max(1, min(self.value // 2, suggested) if suggested else self.value // 2)
        self._streak = 0
        if self.value != old and self._on_change:
            self._on_change(self.value)

    def succeeded(self, span_used: int, log_count: int) -> None:
        """Grow after a few full-size successes; shrink when a range carried more logs than one batch should
        hold in memory (TARGET_LOGS), whatever the node would allow."""
        old = self.value
        self._streak += 1
        if log_count > TARGET_LOGS:
            self.value = max(1, span_used * TARGET_LOGS // log_count)
            self._streak = 0
        elif span_used >= self.value and self._streak >= 3 and log_count < TARGET_LOGS // 2:
            self.value = min(self.maximum, self.value * 2)
            self._streak = 0
        if self.value != old and self._on_change:
            self._on_change(self.value)


Completeness = Literal["receipts", "bloom"]


class LogFetcher:
    """Fetches every log of the watched addresses in a block range, validated against block headers.

    Completeness "receipts": every header of the range is fetched (in JSON-RPC batches of HEADER_BATCH), and
    receipts confirm the blocks holding returned logs and clear the blocks whose bloom only *may* hold a
    watched log; a node that answers eth_getLogs with an empty or cut list is caught and the round retried.
    Completeness "bloom": only the range's first and last headers and those of blocks with logs are fetched,
    and only the sound direction is checked (a returned log must be in its block's bloom).
    With `fetch_receipts`, the receipts of blocks holding logs are fetched in either mode (gas, sender, `to`).
    `watched_topics` (topic0s of the watched events) narrows which bloom "maybe" needs receipts; without it,
    a watched address alone does.
    """

    def __init__(
        self,
        rpc: RpcClient,
        start_blocks: dict[str, int],
        span: AdaptiveSpan,
        *,
        completeness: Completeness = "receipts",
        fetch_receipts: bool = True,
        watched_topics: set[str] | None = None,
        receipts: ReceiptFetcher | None = None,
    ):
        """`start_blocks` maps each watched address (lower-case) to the first block whose logs count."""
        self.rpc = rpc
        self.start_blocks = {a.lower(): b for a, b in start_blocks.items()}
        self.span = span
        self.completeness = completeness
        self.fetch_receipts = fetch_receipts
        self.receipt_fetcher = receipts or ReceiptFetcher(rpc)
        self._bloom_bits = {a: bloom_bits(bytes.fromhex(a[2:])) for a in self.start_blocks}
        self._topic_bits = [bloom_bits(bytes.fromhex(t[2:])) for t in sorted(watched_topics or ())]
        self.receipt_checks = 0  # blocks whose receipts were compared, for metrics and tests
        self._header_pool: ThreadPoolExecutor | None = None

    def fetch(self, start: int, end: int, *, all_headers: bool) -> FetchedRange:
        """Logs from `start` up to at most `end` (the span may cut the range short), validated."""
        while True:
            stop = min(end, start + self.span.value - 1)
            try:
                fetched = self._round(start, stop, all_headers or self.completeness == "receipts")
            except RangeTooLarge as exc:
                if stop == start:
                    raise
                self.span.shrink(exc.suggested)
                log.info("eth_getLogs range shrunk", span=self.span.value, error=str(exc)[:200])
                continue
            self.span.succeeded(stop - start + 1, len(fetched.logs))
            return fetched

    def _round(self, start: int, stop: int, all_headers: bool) -> FetchedRange:
        addresses = sorted(a for a, first in self.start_blocks.items() if first <= stop)
        # The last header travels in the same batch as the logs: a node without that block cannot hide logs.
        calls: list[tuple[str, list[Any]]] = [("eth_getBlockByNumber", [hex(stop), False])]
        if addresses:
            calls.append(("eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(stop), "address": addresses}]))
        results = self.rpc.batch(calls)
        raw_logs = results[1] if addresses else []
        if not isinstance(raw_logs, list):
            raise InconsistentResponse("eth_getLogs did not return a list")
        headers = {stop: self._header(stop, results[0])}
        # The first header is always needed: its parent hash is checked against the follower's cursor.
        headers.update(self._headers(range(start, stop) if all_headers else [start] if start < stop else []))
        if all_headers:
            self._check_chain(headers, start, stop)
        logs = self._validate(raw_logs, start, stop, headers)
        self._fill_headers(logs, headers)
        self._check_blooms_hold(logs, headers)
        receipts: dict[int, list[Receipt]] = {}
        with_logs = {lg["block_number"]: lg["block_hash"] for lg in logs}
        if self.completeness == "receipts":
            maybe = self._bloom_maybe(headers, start, stop, set(with_logs))
            checked = self.receipt_fetcher.blocks({**{n: headers[n].hash for n in maybe}, **with_logs})
            self._check_receipts(logs, checked)
            receipts = checked
        elif self.fetch_receipts and with_logs:
            receipts = self.receipt_fetcher.blocks(with_logs)
            self._check_receipts(logs, receipts)
        # Keep only the receipts of transactions with watched logs (busy blocks hold many others).
        txs = {lg["tx_hash"].lower() for lg in logs}
        kept = {n: [r for r in receipts[n] if r.tx_hash in txs] for n in with_logs if n in receipts}
        self._fill_timestamps(logs, headers)
        return FetchedRange(start, stop, logs, headers, kept)

    def _header(self, number: int, raw: dict[str, Any] | None) -> Header:
        if raw is None:
            raise InconsistentResponse(f"node does not have block {number} yet")
        return Header.from_rpc(raw)

    def _headers(self, numbers: Sequence[int]) -> dict[int, Header]:
        """The headers of `numbers`, in batches of HEADER_BATCH, up to HEADER_REQUESTS_IN_FLIGHT at once."""
        chunks = [numbers[i : i + HEADER_BATCH] for i in range(0, len(numbers), HEADER_BATCH)]
        if len(chunks) <= 1:
            parts = [self._header_batch(chunk) for chunk in chunks]
        else:
            if self._header_pool is None:
                self._header_pool = ThreadPoolExecutor(HEADER_REQUESTS_IN_FLIGHT, thread_name_prefix="headers")
            parts = list(self._header_pool.map(self._header_batch, chunks))
        return {number: header for part in parts for number, header in part.items()}

    def _header_batch(self, numbers: Sequence[int]) -> dict[int, Header]:
        raws = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        return {n: self._header(n, raw) for n, raw in zip(numbers, raws, strict=True)}

    @staticmethod
    def _check_chain(headers: dict[int, Header], start: int, stop: int) -> None:
        for number in range(start + 1, stop + 1):
            if headers[number].parent_hash != headers[number - 1].hash:
                raise InconsistentResponse(f"headers of {start}..{stop} are not one chain (changed at {number})")

    def _check_blooms_hold(self, logs: list[RawLog], headers: dict[int, Header]) -> None:
        """The sound direction: a returned log whose block bloom lacks its address or topic0 is a lie."""
        for lg in logs:
            bloom = headers[lg["block_number"]].logs_bloom
            if not bloom:
                continue
            topic0 = lg["topics"][0] if lg["topics"] else None
            if not bloom_has(bloom, self._bloom_bits[lg["address"]]) or (
                topic0 is not None and not bloom_has(bloom, bloom_bits(bytes.fromhex(topic0[2:])))
            ):
                raise InconsistentResponse(
                    f"log {lg['log_index']} of block {lg['block_number']} is not in its block's logsBloom "
                    "(another fork, or a corrupt answer)"
                )

    def _bloom_maybe(self, headers: dict[int, Header], start: int, stop: int, with_logs: set[int]) -> list[int]:
        """Blocks without returned logs whose bloom may hold a watched log (watched address and topic0 bits)."""
        maybe = []
        for number in range(start, stop + 1):
            if number in with_logs:
                continue
            bloom = headers[number].logs_bloom
            if not bloom:
                maybe.append(number)  # no bloom to rule the block out: only its receipts can
                continue
            if not any(
                first <= number and bloom_has(bloom, self._bloom_bits[address])
                for address, first in self.start_blocks.items()
            ):
                continue
            if self._topic_bits and not any(bloom_has(bloom, bits) for bits in self._topic_bits):
                continue
            maybe.append(number)
        return maybe

    def _check_receipts(self, logs: list[RawLog], receipts: dict[int, list[Receipt]]) -> None:
        """The receipts of each block must carry exactly the watched logs eth_getLogs returned for it."""
        returned: dict[int, set[tuple[Any, ...]]] = {n: set() for n in receipts}
        for lg in logs:
            returned.setdefault(lg["block_number"], set()).add(
                (
                    lg["log_index"],
                    lg["address"],
                    tuple(t.lower() for t in lg["topics"]),
                    lg["data"].lower(),
                    lg["tx_hash"].lower(),
                )
            )
        for number, block_receipts in receipts.items():
            self.receipt_checks += 1
            watched = {
                (rl.log_index, rl.address, rl.topics, rl.data, rl.tx_hash)
                for receipt in block_receipts
                for rl in receipt.logs
                if self.start_blocks.get(rl.address, number + 1) <= number
            }
            if watched != returned.get(number, set()):
                missing = len(watched - returned.get(number, set()))
                extra = len(returned.get(number, set()) - watched)
                raise InconsistentResponse(
                    f"eth_getLogs and the receipts of block {number} disagree: {missing} watched log(s) missing "
                    f"from eth_getLogs, {extra} not in the receipts"
                )

    def _fill_headers(self, logs: list[RawLog], headers: dict[int, Header]) -> None:
        """Headers of the blocks holding logs (their blooms and hashes are checked), fetched if not yet here."""
        missing = sorted({lg["block_number"] for lg in logs} - set(headers))
        headers.update(self._headers(missing))
        for lg in logs:
            if headers[lg["block_number"]].hash != lg["block_hash"]:
                raise InconsistentResponse(f"block {lg['block_number']} changed while fetching its logs")

    def _validate(
        self, raw_logs: list[dict[str, Any]], start: int, stop: int, headers: dict[int, Header]
    ) -> list[RawLog]:
        logs: list[RawLog] = []
        previous = (start - 1, -1)
        for raw in raw_logs:
            number = int(raw["blockNumber"], 16)
            index = int(raw["logIndex"], 16)
            if not start <= number <= stop:
                raise InconsistentResponse(f"log of block {number} outside {start}..{stop}")
            if (number, index) <= previous:
                raise InconsistentResponse(f"logs out of order at block {number} index {index}")
            previous = (number, index)
            if raw.get("removed"):
                raise InconsistentResponse(f"removed log in block {number}")
            header = headers.get(number)
            if header is not None and raw["blockHash"] != header.hash:
                raise InconsistentResponse(
                    f"log of block {number} has hash {raw['blockHash']}, its header {header.hash}"
                )
            address = raw["address"].lower()
            first = self.start_blocks.get(address)
            if first is None:
                raise InconsistentResponse(f"log from unwatched address {address}")
            if number < first:
                continue  # before the contract's configured start block
            timestamp = raw.get("blockTimestamp")
            logs.append(
                {
                    "block_number": number,
                    "block_hash": raw["blockHash"],
                    "block_timestamp": int(timestamp, 16) if timestamp else None,
                    "tx_hash": raw["transactionHash"],
                    "tx_index": int(raw["transactionIndex"], 16),
                    "log_index": index,
                    "address": address,
                    "topics": raw["topics"],
                    "data": raw["data"],
                }
            )
        return logs

    @staticmethod
    def _fill_timestamps(logs: list[RawLog], headers: dict[int, Header]) -> None:
        """Give every log its block time: from the log itself, else from its block's header."""
        for lg in logs:
            if lg["block_timestamp"] is None:
                lg["block_timestamp"] = headers[lg["block_number"]].timestamp


@functools.lru_cache(maxsize=4096)  # a few addresses and topic0s recur in every log
def bloom_bits(value: bytes) -> tuple[int, int, int]:
    """The three bit positions a value sets in a 2048-bit logs bloom (yellow paper, M3:2048)."""
    digest = keccak(value)
    return tuple((int.from_bytes(digest[i : i + 2], "big") & 0x7FF) for i in (0, 2, 4))  # type: ignore[return-value]


def bloom_has(bloom: bytes, bits: tuple[int, int, int]) -> bool:
    """Whether a 256-byte bloom has all three bits set (bit 0 is the last byte's lowest bit)."""
    return all(bloom[255 - bit // 8] & (1 << (bit % 8)) for bit in bits)
