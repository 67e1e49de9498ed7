"""Fetching the watched logs of a block range, complete and consistent, with an adaptive range size.

Each round sends one JSON-RPC batch: eth_getLogs for the range plus the header of the range's last block
(and, near the head, every header of the range). A node that does not have the last block yet cannot
hide logs from us: the round is refused and retried. Every log is checked against the headers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eth_utils.crypto import keccak

from indexer.chain.rpc import RangeTooLarge, RpcClient, RpcError
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
    """Logs of blocks from_block..to_block, each with its block timestamp, and the headers fetched (always the
    first and the last)."""

    from_block: int
    to_block: int
    logs: list[RawLog]
    headers: dict[int, Header] = field(default_factory=dict)

    @property
    def last(self) -> Header:
        return self.headers[self.to_block]


TARGET_LOGS = 6_000


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


class LogFetcher:
    """Fetches every log of the watched addresses in a block range, validated against block headers.

    With `verify_blooms`, every header of the range is fetched (in sub-batches of `header_batch`) and each
    block whose logsBloom names a watched address must come with logs of that address: a node that answers
    eth_getLogs with an empty or cut list is caught and the round is retried. Without it, only the range's
    last header (completeness) and the headers of blocks whose logs lack `blockTimestamp` are fetched.
    """

    def __init__(
        self,
        rpc: RpcClient,
        start_blocks: dict[str, int],
        span: AdaptiveSpan,
        *,
        verify_blooms: bool = True,
        header_batch: int = 100,
    ):
        """`start_blocks` maps each watched address (lower-case) to the first block whose logs count."""
        self.rpc = rpc
        self.start_blocks = {a.lower(): b for a, b in start_blocks.items()}
        self.span = span
        self.verify_blooms = verify_blooms
        self.header_batch = header_batch
        self._bloom_bits = {a: bloom_bits(bytes.fromhex(a[2:])) for a in self.start_blocks}

    def fetch(self, start: int, end: int, *, all_headers: bool) -> FetchedRange:
        """Logs from `start` up to at most `end` (the span may cut the range short), validated."""
        while True:
            stop = min(end, start + self.span.value - 1)
            try:
                fetched = self._round(start, stop, all_headers or self.verify_blooms)
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
        if all_headers and self.verify_blooms:
            self._check_blooms(logs, headers, start, stop)
        self._fill_timestamps(logs, headers)
        return FetchedRange(start, stop, logs, headers)

    def _header(self, number: int, raw: dict[str, Any] | None) -> Header:
        if raw is None:
            raise InconsistentResponse(f"node does not have block {number} yet")
        return Header.from_rpc(raw)

    def _headers(self, numbers: Sequence[int]) -> dict[int, Header]:
        headers: dict[int, Header] = {}
        for i in range(0, len(numbers), self.header_batch):
            chunk = numbers[i : i + self.header_batch]
            raws = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            headers.update({n: self._header(n, raw) for n, raw in zip(chunk, raws, strict=True)})
        return headers

    @staticmethod
    def _check_chain(headers: dict[int, Header], start: int, stop: int) -> None:
        for number in range(start + 1, stop + 1):
            if headers[number].parent_hash != headers[number - 1].hash:
                raise InconsistentResponse(f"headers of {start}..{stop} are not one chain (changed at {number})")

    def _check_blooms(self, logs: list[RawLog], headers: dict[int, Header], start: int, stop: int) -> None:
        emitted = {(lg["block_number"], lg["address"]) for lg in logs}
        for number in range(start, stop + 1):
            bloom = headers[number].logs_bloom
            if not bloom:
                continue
            for address, bits in self._bloom_bits.items():
                if self.start_blocks[address] <= number and (number, address) not in emitted and bloom_has(bloom, bits):
                    raise InconsistentResponse(
                        f"block {number}'s logsBloom names {address}, but eth_getLogs returned none of its logs"
                    )

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

    def _fill_timestamps(self, logs: list[RawLog], headers: dict[int, Header]) -> None:
        """Give every log its block time: from the log itself, else from headers fetched only where needed."""
        missing = sorted({lg["block_number"] for lg in logs if lg["block_timestamp"] is None} - set(headers))
        headers.update(self._headers(missing))
        for lg in logs:
            header = headers.get(lg["block_number"])
            if header is not None:
                if header.hash != lg["block_hash"]:
                    raise InconsistentResponse(f"block {header.number} changed while fetching its logs")
                if lg["block_timestamp"] is None:
                    lg["block_timestamp"] = header.timestamp


def bloom_bits(value: bytes) -> tuple[int, int, int]:
    """The three bit positions a value sets in a 2048-bit logs bloom (yellow paper, M3:2048)."""
    digest = keccak(value)
    return tuple((int.from_bytes(digest[i : i + 2], "big") & 0x7FF) for i in (0, 2, 4))  # type: ignore[return-value]


def bloom_has(bloom: bytes, bits: tuple[int, int, int]) -> bool:
    """Whether a 256-byte bloom has all three bits set (bit 0 is the last byte's lowest bit)."""
    return all(bloom[255 - bit // 8] & (1 << (bit % 8)) for bit in bits)
