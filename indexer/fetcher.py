"""Fetching the watched logs of a block range, complete and consistent, with an adaptive range size.

Each round sends one JSON-RPC batch: eth_getLogs for the range plus the header of the range's last block
(and, near the head, every header of the range). A node that does not have the last block yet cannot
hide logs from us: the round is refused and retried. Every log is checked against the headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from indexer.rpc import RangeTooLarge, RpcClient, RpcError

log = structlog.get_logger("fetcher")


class InconsistentResponse(RpcError):
    """The node's answer contradicts itself (missing block, hash mismatch, bad log order); retry the round."""


@dataclass(frozen=True)
class Header:
    number: int
    hash: str
    parent_hash: str
    timestamp: int

    @classmethod
    def from_rpc(cls, raw: dict) -> Header:
        return cls(int(raw["number"], 16), raw["hash"], raw["parentHash"], int(raw["timestamp"], 16))


@dataclass
class FetchedRange:
    """Logs of blocks from_block..to_block, each with its block timestamp, and the headers fetched."""

    from_block: int
    to_block: int
    logs: list[dict[str, Any]]
    headers: dict[int, Header] = field(default_factory=dict)

    @property
    def last(self) -> Header:
        return self.headers[self.to_block]


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
        self._streak += 1
        if span_used >= self.value and self._streak >= 3 and log_count < 5000 and self.value < self.maximum:
            self.value = min(self.maximum, self.value * 2)
            self._streak = 0
            if self._on_change:
                self._on_change(self.value)


class LogFetcher:
    """Fetches every log of the watched addresses in a block range, validated against block headers."""

    def __init__(self, rpc: RpcClient, start_blocks: dict[str, int], span: AdaptiveSpan):
        """`start_blocks` maps each watched address (lower-case) to the first block whose logs count."""
        self.rpc = rpc
        self.start_blocks = {a.lower(): b for a, b in start_blocks.items()}
        self.span = span

    def fetch(self, start: int, end: int, *, all_headers: bool) -> FetchedRange:
        """Logs from `start` up to at most `end` (the span may cut the range short), validated."""
        while True:
            stop = min(end, start + self.span.value - 1)
            try:
                fetched = self._round(start, stop, all_headers)
            except RangeTooLarge as exc:
                if stop == start:
                    raise
                self.span.shrink(exc.suggested)
                log.info("eth_getLogs range shrunk", span=self.span.value, error=str(exc)[:200])
                continue
            self.span.succeeded(stop - start + 1, len(fetched.logs))
            return fetched

    def _round(self, start: int, stop: int, all_headers: bool) -> FetchedRange:
        numbers = range(start, stop + 1) if all_headers else [stop]
        addresses = sorted(a for a, first in self.start_blocks.items() if first <= stop)
        calls: list[tuple[str, list]] = [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
        if addresses:
            calls.append(("eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(stop), "address": addresses}]))
        results = self.rpc.batch(calls)
        raw_headers = results[: len(numbers)]
        raw_logs = results[len(numbers)] if addresses else []
        headers: dict[int, Header] = {}
        for number, raw in zip(numbers, raw_headers, strict=True):
            if raw is None:
                raise InconsistentResponse(f"node does not have block {number} yet")
            headers[number] = Header.from_rpc(raw)
        if not isinstance(raw_logs, list):
            raise InconsistentResponse("eth_getLogs did not return a list")
        logs = self._validate(raw_logs, start, stop, headers)
        self._fill_timestamps(logs, headers)
        return FetchedRange(start, stop, logs, headers)

    def _validate(self, raw_logs: list[dict], start: int, stop: int, headers: dict[int, Header]) -> list[dict]:
        logs = []
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
                raise InconsistentResponse(f"log of block {number} has hash {raw['blockHash']}, header {header.hash}")
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

    def _fill_timestamps(self, logs: list[dict], headers: dict[int, Header]) -> None:
        """Give every log its block time: from the log itself, else from headers fetched only where needed."""
        missing = sorted({lg["block_number"] for lg in logs if lg["block_timestamp"] is None} - set(headers))
        if missing:
            raws = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in missing])
            for number, raw in zip(missing, raws, strict=True):
                if raw is None:
                    raise InconsistentResponse(f"node lost block {number}")
                headers[number] = Header.from_rpc(raw)
        for lg in logs:
            header = headers.get(lg["block_number"])
            if header is not None:
                if header.hash != lg["block_hash"]:
                    raise InconsistentResponse(f"block {header.number} changed while fetching its logs")
                if lg["block_timestamp"] is None:
                    lg["block_timestamp"] = header.timestamp
