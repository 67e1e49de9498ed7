"""One verification: choose the block, read the tables and the store's logs in one snapshot, read the chain at the
block's hash, compare, record the run (verify_runs and the `verify` row of sync_status)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import structlog

from indexer.chain.rpc import RpcClient, RpcError
from indexer.config import ROLES, Config
from indexer.errors import ConfigError, IndexerError
from indexer.store import verify_runs
from indexer.verify.chain_state import ChainStateReader, Contracts, VerifyFailed
from indexer.verify.compare import by_column, compare
from indexer.verify.records import LogFacts, PinnedBlock, TableState, VerifyResult
from indexer.verify.tables import snapshot

log = structlog.get_logger("verify")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class TablesNotConsistent(VerifyFailed):
    """The tables did not stand at one block (or at the block asked for) within the wait."""


@dataclass(frozen=True, slots=True)
class BlockChoice:
    """Which block to compare at: where the tables are (`at-indexed`), a given block, or a fresh one."""

    mode: Literal["at-indexed", "block", "latest-consistent"] = "at-indexed"
    number: int | None = None
    wait_seconds: float = 30.0

    @classmethod
    def parse(cls, block: str | None, wait_seconds: float) -> BlockChoice:
        """`--block N` / `--block latest-consistent` / nothing (at-indexed)."""
        if block is None:
            return cls("at-indexed", None, wait_seconds)
        if block == "latest-consistent":
            return cls("latest-consistent", None, wait_seconds)
        try:
            number = int(block, 0)
        except ValueError:
            raise ConfigError(f"--block {block!r}: expected a block number or 'latest-consistent'") from None
        if number < 0:
            raise ConfigError(f"--block {block}: block numbers are not negative")
        return cls("block", number, wait_seconds)


def contracts_of(config: Config) -> Contracts:
    """The one contract of each role; verify refuses a configuration with none or several for a role."""
    chosen: dict[str, str] = {}
    for role in ROLES:
        listed = getattr(config.contracts, role)
        if len(listed) != 1:
            raise ConfigError(
                f"{config.source}: contracts.{role}: verify needs exactly one contract per role, found {len(listed)}"
            )
        chosen[role] = listed[0].address
    return Contracts(**chosen)


def parse_users(values: Sequence[str]) -> list[str]:
    """`--users` values (repeatable, comma-separated) as lower-case addresses."""
    users: list[str] = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if not _ADDRESS.match(item):
                raise ConfigError(f"--users {item!r}: not a 0x-prefixed 20-byte hex address")
            users.append(item.lower())
    return sorted(set(users))


class Verifier:
    """Runs verifications for one configured indexer."""

    def __init__(
        self,
        config: Config,
        rpc: RpcClient,
        projections: tuple[str, ...],
        *,
        stop: threading.Event | None = None,
        after_pin: Callable[[PinnedBlock], None] | None = None,
        users_per_request: int | None = None,
    ):
        self.config = config
        self.rpc = rpc
        self.projections = projections
        self.stop = stop or threading.Event()
        self.after_pin = after_pin
        self.contracts = contracts_of(config)
        self._facts: LogFacts | None = None  # the store's logs folded so far (the next run reads only newer ones)
        self.reader = ChainStateReader(
            rpc,
            self.contracts,
            multicall=config.chain.multicall_address,
            users_per_request=users_per_request or config.indexer.verify_users_per_request,
        )

    def run(self, choice: BlockChoice, users: Sequence[str] | None = None, *, record: bool = True) -> VerifyResult:
        """Verify once; record the run (also when it fails, then re-raise)."""
        started_at, started = datetime.now(UTC), time.monotonic()
        block: PinnedBlock | None = None
        try:
            block, tables, facts = self._choose(choice)
            if self.after_pin:
                self.after_pin(block)
            wanted = (
                list(users)
                if users
                else sorted(
                    set(tables.balances)
                    | set(tables.participants)
                    | facts.addresses
                    | {b.user_address for b in tables.burns.values()}
                )
            )
            chain = self.reader.read(block, wanted)
            found = compare(tables, facts, chain, users=list(users) if users else None)
            result = VerifyResult(
                block=block,
                users_checked=len(wanted),
                columns_checked=found.columns_checked,
                differences=found.differences,
                unchecked=found.unchecked,
                seconds=time.monotonic() - started,
                chain_calls=chain.calls,
                chain_requests=chain.requests,
                method=chain.method,
                by_column=by_column(found.differences),
            )
        except (IndexerError, RpcError) as exc:
            if record:
                self._record_failure(started_at, started, block, exc)
            raise
        if record:
            verify_runs.record(
                self.config.database.url,
                self.config.database.schema_,
                verify_runs.VerifyRun(
                    started_at=started_at,
                    outcome="equal" if result.equal else "differences",
                    duration_seconds=result.seconds,
                    block_number=block.number,
                    block_hash=block.hash,
                    users_checked=result.users_checked,
                    columns_checked=len(result.columns_checked),
                    differences=len(result.differences),
                    differences_by_column=result.by_column,
                ),
            )
        log.info(
            "verified",
            block=block.number,
            users=result.users_checked,
            differences=len(result.differences),
            seconds=round(result.seconds, 3),
        )
        return result

    # -- choosing the block ------------------------------------------------------------------------------

    def _choose(self, choice: BlockChoice) -> tuple[PinnedBlock, TableState, LogFacts]:
        """Wait (up to the choice's wait) until the tables stand at an acceptable block; read them there."""
        target = None
        if choice.mode == "latest-consistent":
            target = self._head()
        deadline = time.monotonic() + choice.wait_seconds
        why = ""
        watched = frozenset(c.address for _, c in self.config.watched())
        while True:
            with snapshot(
                self.config.database.url, self.config.database.schema_, self.config.chain.chain_id, self.projections
            ) as snap:
                state = snap.consistency()
                number = state.block
                if number is None:
                    why = state.why_not
                elif choice.mode == "block" and number > (choice.number or 0):
                    raise TablesNotConsistent(
                        f"the tables are at block {number}, past --block {choice.number}: they can only be "
                        "compared at the block they reflect (use the default, or --block latest-consistent)"
                    )
                elif choice.mode == "block" and number < (choice.number or 0):
                    why = f"the tables are at block {number}, waiting for block {choice.number}"
                elif target is not None and number < target:
                    why = f"the tables are at block {number}, waiting for block {target} (the head when verify began)"
                else:
                    how = {
                        "at-indexed": "the block the tables reflect",
                        "block": f"--block {choice.number}",
                        "latest-consistent": "latest consistent",
                    }[choice.mode]
                    pinned = PinnedBlock(number, state.hash or self._hash_of(number), how)
                    self._facts = snap.log_facts(state.notification_id, watched, since=self._facts)
                    return pinned, snap.tables(), self._facts
            if time.monotonic() >= deadline or self.stop.is_set():
                hint = " (is `rbtc-indexer run` following the chain?)" if choice.mode != "at-indexed" else ""
                raise TablesNotConsistent(f"no block to compare at within {choice.wait_seconds:.0f}s: {why}{hint}")
            self.stop.wait(0.1)

    def _head(self) -> int:
        try:
            return int(self.rpc.call("eth_blockNumber", [], attempts=3), 16)
        except RpcError as exc:
            raise VerifyFailed(f"cannot reach the chain: {exc}") from None

    def _hash_of(self, number: int) -> str:
        try:
            header = self.rpc.call("eth_getBlockByNumber", [hex(number), False], attempts=3)
        except RpcError as exc:
            raise VerifyFailed(f"cannot reach the chain: {exc}") from None
        if not isinstance(header, dict) or not header.get("hash"):
            raise VerifyFailed(f"the node does not know block {number}")
        return str(header["hash"])

    def _record_failure(self, started_at: datetime, started: float, block: PinnedBlock | None, exc: Exception) -> None:
        try:
            verify_runs.record(
                self.config.database.url,
                self.config.database.schema_,
                verify_runs.VerifyRun(
                    started_at=started_at,
                    outcome="error",
                    duration_seconds=time.monotonic() - started,
                    block_number=block.number if block else None,
                    block_hash=block.hash if block else None,
                    error=str(exc),
                ),
            )
        except IndexerError as db_error:
            log.error("could not record the verify run", error=str(db_error))
