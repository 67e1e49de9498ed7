"""The chain side of a run: the contracts' getters read at one block pinned by hash (EIP-1898).

Every read names the block as `{"blockHash": h, "requireCanonical": true}`, so a reorg between choosing the
block and reading cannot mix states: the node refuses the read, and verify says so instead of comparing. Per-user
getters are batched into Multicall3 `aggregate3` calls (each inner call may fail on its own); where the
multicall contract has no code at the pinned block, plain `eth_call`s go in JSON-RPC batches instead. Either
way the number of users per request adapts: it halves when the node refuses a request (gas cap, size, time-out)
and grows back after successes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from eth_utils.abi import function_signature_to_4byte_selector

from indexer.chain.rpc import RpcClient, RpcError, StatePruned
from indexer.errors import Fatal, Retryable
from indexer.verify.records import ChainState, GlobalChainState, ParticipantRow, PinnedBlock, UserChainState

log = structlog.get_logger("verify")

CANONICAL_MULTICALL3 = "0xca11bde05977b3631167028862be2a173976ca11"
CALLS_PER_USER = 6
# Beyond the chain layer's StatePruned wording: answers that, for a block known to exist, also mean its state
# is gone (anvil's "BlockOutOfRange", geth's "header not found" on a pruned history).
_STATE_GONE = re.compile(r"(header not found|block ?out ?of ?range|unknown ancestor|no state)", re.IGNORECASE)


def selector(signature: str) -> bytes:
    """The 4-byte selector of a function signature."""
    return function_signature_to_4byte_selector(signature)


LAST_SATS = selector("lastSats(address)")
BALANCE_OF = selector("balanceOf(address)")
PARTICIPANTS = selector("participants(address)")
IS_DISPUTED = selector("isDisputed(address)")
DISPUTED_BALANCES = selector("disputedBalances(address)")
TOTAL_SUPPLY = selector("totalSupply()")
TOTAL_EMERGENCY_BURNS = selector("totalEmergencyBurns()")
AGGREGATE3 = selector("aggregate3((address,bool,bytes)[])")


class VerifyFailed(Fatal):
    """verify could not complete; nothing was compared."""


class StateUnavailable(VerifyFailed):
    """The node has no state at the pinned block (a full node prunes all but the last ~128 blocks)."""


class BlockNotCanonical(Retryable):
    """The pinned block is no longer canonical: a reorg happened after the block was chosen."""


@dataclass(frozen=True, slots=True)
class Contracts:
    """The one address of each role verify reads."""

    oracle_aggregator: str
    rbtc_synth: str
    fee_vault: str
    vault_wrbtc: str
    yield_scales_pool: str


class UsersPerRequest:
    """How many users one request carries: halves on refusal, doubles after two successes in a row (but never
    again above a size it had to halve to)."""

    def __init__(self, initial: int, maximum: int):
        self.maximum = max(1, maximum)
        self.value = max(1, min(initial, self.maximum))
        self._streak = 0

    def refused(self) -> bool:
        """Halve, and grow no more above the halved size; False when already at one user."""
        self._streak = 0
        if self.value == 1:
            return False
        self.value = self.maximum = max(1, self.value // 2)
        return True

    def succeeded(self, used: int) -> None:
        self._streak += 1
        if used >= self.value and self._streak >= 2:
            self.value = min(self.maximum, self.value * 2)
            self._streak = 0


def _word(data: bytes, index: int) -> int:
    return int.from_bytes(data[32 * index : 32 * index + 32], "big")


def _uint(result: str | bytes) -> int:
    data = bytes.fromhex(result[2:]) if isinstance(result, str) else result
    if len(data) < 32:
        raise ValueError("short return data")
    return _word(data, 0)


def _participant(data: bytes) -> ParticipantRow | None:
    """participants(user): (type, virtualUSDT, rbtcContributed, yieldEarned, yieldClaimed, joinedAt, lastActivityAt,
    loyaltyTier, ...); joinedAt = 0 means no participant."""
    if len(data) < 32 * 8:
        raise ValueError("short participants() return data")
    if _word(data, 5) == 0:
        return None
    return ParticipantRow(
        participant_type=_word(data, 0),
        virtual_usdt=_word(data, 1),
        rbtc_contributed=_word(data, 2),
        yield_earned=_word(data, 3),
        yield_claimed=_word(data, 4),
        joined_at=_word(data, 5),
        last_activity_at=_word(data, 6),
        loyalty_tier=_word(data, 7),
        is_disputed=False,  # filled from the dispute getter
    )


def _address_arg(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def _w(value: int) -> bytes:
    return value.to_bytes(32, "big")


def encode_aggregate3(calls: Sequence[tuple[str, bytes]]) -> bytes:
    """Calldata of `aggregate3((address,bool,bytes)[])` with allowFailure = true for every (target, data)."""
    offsets, tuples, position = [], [], 32 * len(calls)
    for target, data in calls:
        encoded = _address_arg(target) + _w(1) + _w(0x60) + _w(len(data)) + data + bytes(-len(data) % 32)
        offsets.append(_w(position))
        tuples.append(encoded)
        position += len(encoded)
    return AGGREGATE3 + _w(0x20) + _w(len(calls)) + b"".join(offsets) + b"".join(tuples)


def decode_aggregate3(data: bytes) -> list[tuple[bool, bytes]]:
    """The `(bool success, bytes returnData)[]` that aggregate3 returns (ValueError when malformed)."""
    try:
        array = int.from_bytes(data[0:32], "big")
        count = int.from_bytes(data[array : array + 32], "big")
        base = array + 32
        results = []
        for i in range(count):
            start = base + int.from_bytes(data[base + 32 * i : base + 32 * i + 32], "big")
            success = int.from_bytes(data[start : start + 32], "big")
            at = start + int.from_bytes(data[start + 32 : start + 64], "big")
            length = int.from_bytes(data[at : at + 32], "big")
            body = data[at + 32 : at + 32 + length]
            if success > 1 or len(body) != length:
                raise ValueError("bad aggregate3 result")
            results.append((success == 1, body))
    except IndexError:
        raise ValueError("truncated aggregate3 result") from None
    if len(results) != count:
        raise ValueError("truncated aggregate3 result")
    return results


class ChainStateReader:
    """Reads every getter verify compares, at one pinned block."""

    def __init__(
        self,
        rpc: RpcClient,
        contracts: Contracts,
        *,
        multicall: str = CANONICAL_MULTICALL3,
        users_per_request: int = 250,
        max_users_per_request: int = 2000,
        attempts: int = 3,
    ):
        self.rpc = rpc
        self.contracts = contracts
        self.multicall = multicall.lower()
        self.chunk = UsersPerRequest(users_per_request, max_users_per_request)
        self.attempts = attempts
        self.calls = 0
        self.requests = 0

    # -- public ------------------------------------------------------------------------------------------

    def read(self, block: PinnedBlock, users: Sequence[str]) -> ChainState:
        """Every user's state and the global figures at `block` (raises BlockNotCanonical, StateUnavailable)."""
        pin = {"blockHash": block.hash, "requireCanonical": True}
        self.calls = self.requests = 0
        total_supply, vault_eth, code = self._guarded(
            block,
            lambda: self._batch(
                [
                    ("eth_call", [{"to": self.contracts.rbtc_synth, "data": "0x" + TOTAL_SUPPLY.hex()}, pin]),
                    ("eth_getBalance", [self.contracts.fee_vault, pin]),
                    ("eth_getCode", [self.multicall, pin]),
                ]
            ),
        )
        try:
            supply = _uint(total_supply)
        except ValueError:
            raise VerifyFailed(
                f"RBTCSynth at {self.contracts.rbtc_synth} answers no totalSupply() at block {block.number}: is it "
                "the right address, and deployed at that block?"
            ) from None
        burns = self._optional_uint(block, self.contracts.oracle_aggregator, TOTAL_EMERGENCY_BURNS)
        dispute = self._dispute_getter(block)
        method: Literal["multicall", "batch"] = "batch" if code in (None, "0x", "0x0") else "multicall"
        states: dict[str, UserChainState] = {}
        pending = list(users)
        while pending:
            size = self.chunk.value
            part = pending[:size]
            try:
                got: dict[str, UserChainState] = self._guarded(
                    block, functools.partial(self._users, block, part, dispute, method), shrinkable=True
                )
            except _Refused as refusal:
                if not self.chunk.refused():
                    raise VerifyFailed(
                        f"the node refuses even a one-user read at block {block.number}: {refusal}"
                    ) from None
                log.info("state read refused, fewer users per request", users=self.chunk.value, error=str(refusal))
                continue
            states.update(got)
            self.chunk.succeeded(len(part))
            pending = pending[len(part) :]
        return ChainState(
            users=states,
            globals=GlobalChainState(supply, int(vault_eth, 16), burns),
            calls=self.calls,
            requests=self.requests,
            method=method,
        )

    # -- per-user reads ----------------------------------------------------------------------------------

    def _user_calls(self, user: str, dispute: bytes | None) -> list[tuple[str, bytes]]:
        arg = _address_arg(user)
        c = self.contracts
        calls = [
            (c.oracle_aggregator, LAST_SATS + arg),
            (c.rbtc_synth, BALANCE_OF + arg),
            (c.fee_vault, BALANCE_OF + arg),
            (c.vault_wrbtc, BALANCE_OF + arg),
            (c.yield_scales_pool, PARTICIPANTS + arg),
        ]
        if dispute is not None:
            calls.append((c.yield_scales_pool, dispute + arg))
        return calls

    def _users(
        self, block: PinnedBlock, users: list[str], dispute: bytes | None, method: str
    ) -> dict[str, UserChainState]:
        pin = {"blockHash": block.hash, "requireCanonical": True}
        per_user = [self._user_calls(u, dispute) for u in users]
        flat = [call for calls in per_user for call in calls]
        if method == "multicall":
            payload = encode_aggregate3(flat)
            raw = self._call_one("eth_call", [{"to": self.multicall, "data": "0x" + payload.hex()}, pin])
            try:
                results = decode_aggregate3(bytes.fromhex(raw[2:]))
            except ValueError as exc:
                raise VerifyFailed(f"Multicall3 at {self.multicall} answered malformed data: {exc}") from None
            if len(results) != len(flat):
                raise VerifyFailed(f"Multicall3 at {self.multicall} answered {len(results)} of {len(flat)} calls")
        else:
            answers = self._batch([("eth_call", [{"to": t, "data": "0x" + d.hex()}, pin]) for t, d in flat])
            results = [(True, bytes.fromhex(a[2:])) for a in answers]
        self.calls += len(flat)
        states: dict[str, UserChainState] = {}
        position = 0
        for user, calls in zip(users, per_user, strict=True):
            mine = results[position : position + len(calls)]
            position += len(calls)
            failed = [i for i, (ok, data) in enumerate(mine) if not ok or len(data) < 32]
            if failed:
                target, data = calls[failed[0]]
                raise VerifyFailed(f"getter 0x{data[:4].hex()} of {target} failed for {user} at block {block.number}")
            participant = _participant(mine[4][1])
            disputed = bool(_word(mine[5][1], 0)) if dispute is not None else None
            if participant is not None and disputed is not None:
                participant = _with_dispute(participant, disputed)
            states[user] = UserChainState(
                last_sats=_word(mine[0][1], 0),
                rbtc_balance=_word(mine[1][1], 0),
                fee_vault_wei=_word(mine[2][1], 0),
                wrbtc_balance=_word(mine[3][1], 0),
                participant=participant,
                is_disputed=disputed,
            )
        return states

    # -- getters that may not exist ----------------------------------------------------------------------

    def _optional_uint(self, block: PinnedBlock, target: str, getter: bytes, arg: bytes = b"") -> int | None:
        """A uint getter's value, or None when the contract does not answer it (reverts or returns nothing)."""
        pin = {"blockHash": block.hash, "requireCanonical": True}
        try:
            raw = self._call_one("eth_call", [{"to": target, "data": "0x" + (getter + arg).hex()}, pin], attempts=1)
        except RpcError as exc:
            self._explain(block, exc)  # raises for a reorg or missing state; else the getter is absent
            return None
        try:
            return _uint(raw)
        except ValueError:
            return None

    def _dispute_getter(self, block: PinnedBlock) -> bytes | None:
        """The pool's dispute getter: `isDisputed(address)`, else `disputedBalances(address)`, else None."""
        probe = _address_arg("0x" + "0" * 40)
        for getter in (IS_DISPUTED, DISPUTED_BALANCES):
            if self._optional_uint(block, self.contracts.yield_scales_pool, getter, probe) is not None:
                return getter
        return None

    # -- JSON-RPC and error classes ----------------------------------------------------------------------

    def _call_one(self, method: str, params: list[Any], attempts: int | None = None) -> Any:
        self.requests += 1
        return self.rpc.call(method, params, attempts=attempts or self.attempts)

    def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        self.requests += 1
        return self.rpc.batch(calls, attempts=self.attempts)

    def _guarded(self, block: PinnedBlock, read: Callable[[], Any], *, shrinkable: bool = False) -> Any:
        """Run a read; a failure becomes BlockNotCanonical, StateUnavailable, _Refused (shrinkable) or VerifyFailed."""
        try:
            return read()
        except RpcError as exc:
            self._explain(block, exc)
            if shrinkable:
                raise _Refused(str(exc)) from None
            raise VerifyFailed(f"cannot read chain state at block {block.number}: {exc}") from None

    def _explain(self, block: PinnedBlock, exc: RpcError) -> None:
        """Raise BlockNotCanonical or StateUnavailable when `exc` is one of them; return otherwise."""
        try:
            header = self.rpc.call("eth_getBlockByNumber", [hex(block.number), False], attempts=2)
        except RpcError as probe:
            raise VerifyFailed(f"cannot reach the chain to read state: {probe}") from None
        current = header.get("hash") if isinstance(header, dict) else None
        if current is None or current.lower() != block.hash.lower():
            raise BlockNotCanonical(
                f"block {block.number} ({block.hash}) is no longer canonical (now {current}): the chain reorganised "
                "after the block was chosen; nothing was compared, run verify again"
            ) from None
        if isinstance(exc, StatePruned) or _STATE_GONE.search(str(exc)):
            raise StateUnavailable(
                f"the node has no state at block {block.number} ({exc}); full nodes keep only recent state: "
                "use --block latest-consistent (waits for the tables to reach a fresh block), or an archive node"
            ) from None


class _Refused(Exception):
    """The node refused a request that a smaller one might pass (internal to ChainStateReader)."""


def _with_dispute(p: ParticipantRow, disputed: bool) -> ParticipantRow:
    return ParticipantRow(
        p.participant_type,
        p.virtual_usdt,
        p.rbtc_contributed,
        p.yield_earned,
        p.yield_claimed,
        p.joined_at,
        p.last_activity_at,
        p.loyalty_tier,
        disputed,
    )
