"""Independent model of the ReserveBTC contracts that predicts the indexer's read tables.

The model never decodes logs. It replays the actions the scenario driver sent, in canonical chain order,
through a Python re-implementation of the contracts, and takes only positional facts from each receipt:
status, block number/hash/time, transaction index and the log indexes. A mismatch between the simulated
outcome (success and number of logs) and the receipt raises ModelMismatch, so a wrong model cannot pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FEE_PCT_BPS = 100
FEE_FIXED_WEI = 10**15
FEE_WEI_PER_SAT = 10**12
MAX_FEE_PER_SYNC_WEI = 10**16
INT64_MAX = 2**63 - 1
AGG_BURN_REASON = "Insufficient fees"
POOL_BURN_REASON = "Insufficient fees or balance went to zero"
SECONDS_PER_YEAR = 31_536_000
SILVER_AFTER = 15_552_000
ZERO = "0x" + "00" * 20

TABLES = ("balances", "transactions", "emergency_burns", "yield_scales_participants", "oracle_operations_log")


SYNC_KINDS = ("sync_up", "sync_down", "sync_topup_revert", "sync_emergency", "sync_cap_revert", "sync_zero")


def call_of(kind: str) -> str:
    """The contract call behind an action kind (the sync variants only differ in intent)."""
    return "sync" if kind in SYNC_KINDS else kind


class ModelMismatch(AssertionError):
    """The simulated outcome of an action disagrees with its receipt."""


class Revert(Exception):
    """A simulated call reverted."""


@dataclass
class Action:
    """One transaction the driver sent, with the positional facts of its receipt."""

    kind: str
    sender: str
    params: dict[str, Any]
    tx_hash: str
    block_number: int = 0
    block_hash: str = ""
    block_timestamp: int = 0
    tx_index: int = 0
    status: int = 0
    log_indexes: list[int] = field(default_factory=list)
    canonical: bool = True
    gas_used: int = 0
    gas_price: int = 0
    tx_from: str = ""
    tx_to: str = ""

    def apply_receipt(self, receipt: Any, block_timestamp: int) -> None:
        """Copy status, position, log indexes, gas and both addresses from a receipt."""
        self.gas_used = int(receipt["gasUsed"])
        self.gas_price = int(receipt["effectiveGasPrice"])
        self.tx_from = str(receipt["from"]).lower()
        self.tx_to = str(receipt["to"]).lower()
        self.block_number = int(receipt["blockNumber"])
        self.block_hash = _hex(receipt["blockHash"])
        self.tx_index = int(receipt["transactionIndex"])
        self.status = int(receipt["status"])
        self.log_indexes = [int(log["logIndex"]) for log in receipt["logs"]]
        self.block_timestamp = int(block_timestamp)
        self.canonical = True


@dataclass
class Log:
    """A simulated log: the event name and its decoded-by-construction fields."""

    event: str
    fields: dict[str, Any]


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value).lower()
    return text if text.startswith("0x") else "0x" + text


def _tier(now: int, joined_at: int) -> int:
    elapsed = now - joined_at
    if elapsed >= SECONDS_PER_YEAR:
        return 2
    if elapsed >= SILVER_AFTER:
        return 1
    return 0


def quote_fee(delta: int) -> int:
    """FeePolicy quote (reference section 4.3)."""
    if delta > 0:
        return delta * FEE_WEI_PER_SAT * FEE_PCT_BPS // 10_000 + FEE_FIXED_WEI
    return FEE_FIXED_WEI


class ChainState:
    """Contract storage with an undo journal, so a revert can roll back partial effects."""

    def __init__(self) -> None:
        self.last_sats: dict[str, int] = {}
        self.synth: dict[str, int] = {}
        self.fee: dict[str, int] = {}
        self.wr: dict[str, int] = {}
        self.participants: dict[str, dict[str, int]] = {}
        self.disputed: dict[str, bool] = {}
        self.g: dict[str, int] = {"supply": 0, "peak": 1, "rate": 0, "total_vusdt": 0}
        self.journal: list[tuple[dict, str, Any, bool]] = []

    def put(self, table: dict, key: str, value: Any) -> None:
        """Set a value and remember the old one."""
        self.journal.append((table, key, table.get(key), key in table))
        table[key] = value

    def begin(self) -> int:
        """Mark the start of a transaction."""
        return len(self.journal)

    def rollback(self, mark: int) -> None:
        """Undo everything since mark."""
        while len(self.journal) > mark:
            table, key, old, existed = self.journal.pop()
            if existed:
                table[key] = old
            else:
                table.pop(key, None)

    def commit(self) -> None:
        """Forget the journal."""
        self.journal.clear()


class Simulator:
    """Python re-implementation of the six test contracts."""

    def __init__(self, aggregator: str, committee: str, wrapper: str, pool_oracle: str) -> None:
        self.aggregator = aggregator.lower()
        self.committee = committee.lower()
        self.wrapper = wrapper.lower()
        self.pool_oracle = pool_oracle.lower()
        self.s = ChainState()
        self.touched: set[str] = set()  # participants whose row the last action changed

    def run(self, action: Action) -> tuple[bool, list[Log]]:
        """Execute one action; return (success, logs). Reverts leave no state and no logs."""
        logs: list[Log] = []
        self.touched = set()
        mark = self.s.begin()
        try:
            handler = getattr(self, f"_do_{call_of(action.kind)}")
            handler(action.sender.lower(), action.params, action.block_timestamp, logs)
        except Revert:
            self.s.rollback(mark)
            self.s.commit()
            self.touched = set()
            return False, []
        self.s.commit()
        return True, logs

    # --- helpers
    @staticmethod
    def _require(cond: bool) -> None:
        if not cond:
            raise Revert()

    def _only(self, sender: str, allowed: str) -> None:
        self._require(sender == allowed)

    def _mint(self, user: str, amount: int, logs: list[Log]) -> None:
        if amount == 0:
            return
        s = self.s
        s.put(s.synth, user, s.synth.get(user, 0) + amount)
        s.put(s.g, "supply", s.g["supply"] + amount)
        logs.append(Log("RBTCTransfer", {"from": ZERO, "to": user, "amount": amount}))

    def _burn(self, user: str, amount: int, logs: list[Log]) -> None:
        if amount == 0:
            return
        s = self.s
        bal = s.synth.get(user, 0)
        self._require(bal >= amount)
        s.put(s.synth, user, bal - amount)
        s.put(s.g, "supply", s.g["supply"] - amount)
        logs.append(Log("RBTCTransfer", {"from": user, "to": ZERO, "amount": amount}))

    def _credit(self, user: str, amount: int, logs: list[Log]) -> None:
        self._require(user != ZERO and amount > 0)
        self.s.put(self.s.fee, user, self.s.fee.get(user, 0) + amount)
        logs.append(Log("Deposited", {"user": user, "amount": amount}))

    # --- OracleAggregator
    def _sync(self, user: str, new: int, now: int, logs: list[Log]) -> None:
        s = self.s
        self._require(user != ZERO)
        self._require(new <= INT64_MAX)
        prev = s.last_sats.get(user, 0)
        delta = new - prev
        if delta == 0:
            return
        fee = quote_fee(delta)
        self._require(fee <= MAX_FEE_PER_SYNC_WEI)
        if s.fee.get(user, 0) < fee:
            self._require(delta < 0)
            self._emergency(user, now, logs)
            return
        s.put(s.last_sats, user, new)
        if delta > 0:
            self._mint(user, delta, logs)
        else:
            self._burn(user, -delta, logs)
        self._require(fee > 0)
        s.put(s.fee, user, s.fee[user] - fee)
        logs.append(Log("Spent", {"user": user, "amount": fee, "by": self.aggregator}))
        logs.append(Log("Synced", {"user": user, "new": new, "delta": delta, "fee": fee, "ts": now}))

    def _emergency(self, user: str, now: int, logs: list[Log]) -> None:
        prev = self.s.last_sats.get(user, 0)
        self.s.put(self.s.last_sats, user, 0)
        self._burn(user, prev, logs)
        logs.append(Log("EmergencyBurn", {"user": user, "amount": prev, "reason": AGG_BURN_REASON}))
        logs.append(Log("Synced", {"user": user, "new": 0, "delta": -prev, "fee": 0, "ts": now, "emergency": True}))

    def _do_sync(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)
        self._sync(p["user"].lower(), p["new_balance"], now, logs)

    def _do_sync_batch(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)
        self._require(len(p["users"]) == len(p["new_balances"]))
        for user, new in zip(p["users"], p["new_balances"], strict=True):
            self._sync(user.lower(), new, now, logs)

    def _do_emergency(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)
        user = p["user"].lower()
        self._require(self.s.last_sats.get(user, 0) > 0)
        self._emergency(user, now, logs)

    def _do_reset_emergency(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)

    def _do_prepay(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)
        self._require(p["amount"] > 0)
        self._credit(p["user"].lower(), p["amount"], logs)
        logs[-1].fields["prepay"] = True  # the oracle's registerAndPrepay: a DEPOSIT operation

    def _do_collect_fee(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)
        user, amount = p["user"].lower(), p["amount"]
        self._require(amount > 0 and self.s.fee.get(user, 0) >= amount)
        self.s.put(self.s.fee, user, self.s.fee[user] - amount)
        logs.append(Log("Spent", {"user": user, "amount": amount, "by": self.aggregator}))

    def _do_multicall(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        """Each sub-call runs as the committee would send it; any revert reverts them all."""
        self._only(sender, self.committee)
        for kind, params in p["calls"]:
            getattr(self, f"_do_{call_of(kind)}")(sender, params, now, logs)

    # --- FeeVault
    def _do_deposit(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._credit(p["user"].lower(), p["amount"], logs)

    def _do_deposit_many(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._require(len(p["users"]) == len(p["amounts"]))
        for user, amount in zip(p["users"], p["amounts"], strict=True):
            self._credit(user.lower(), amount, logs)
        self._require(sum(p["amounts"]) == p["value"])

    def _do_withdraw(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        amount = self.s.fee.get(sender, 0)
        self._require(amount > 0)
        self.s.put(self.s.fee, sender, 0)
        logs.append(Log("Withdrawn", {"user": sender, "amount": amount}))

    # --- VaultWrBTC
    def _wr_burn(self, user: str, amount: int, logs: list[Log]) -> None:
        bal = self.s.wr.get(user, 0)
        self._require(bal >= amount)
        self.s.put(self.s.wr, user, bal - amount)
        logs.append(Log("WrTransfer", {"from": user, "to": ZERO, "amount": amount}))

    def _do_wrap(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.wrapper)
        user, amount = p["user"].lower(), p["amount"]
        self._require(user != ZERO and amount > 0)
        self.s.put(self.s.wr, user, self.s.wr.get(user, 0) + amount)
        logs.append(Log("WrTransfer", {"from": ZERO, "to": user, "amount": amount}))
        logs.append(Log("Wrapped", {"user": user, "amount": amount}))

    def _do_redeem(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._require(p["amount"] > 0)
        self._wr_burn(sender, p["amount"], logs)
        logs.append(Log("Redeemed", {"user": sender, "amount": p["amount"]}))

    def _do_slash(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.committee)
        user = p["user"].lower()
        self._wr_burn(user, p["amount"], logs)
        logs.append(Log("Slashed", {"user": user, "amount": p["amount"]}))

    def _do_vault_transfer(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        to, amount = p["to"].lower(), p["amount"]
        self._require(to != ZERO)
        bal = self.s.wr.get(sender, 0)
        self._require(bal >= amount)
        self.s.put(self.s.wr, sender, bal - amount)
        self.s.put(self.s.wr, to, self.s.wr.get(to, 0) + amount)
        logs.append(Log("WrTransfer", {"from": sender, "to": to, "amount": amount}))

    def _do_vault_approve(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        logs.append(Log("Approval", {"owner": sender, "spender": p["spender"].lower(), "amount": p["amount"]}))

    # --- YieldScalesPool
    def _scales(self, now: int, logs: list[Log]) -> None:
        g, s = self.s.g, self.s
        supply = g["supply"]
        if supply > g["peak"]:
            s.put(g, "peak", supply)
        scale = supply * 100 // g["peak"]
        s.put(g, "rate", min(2000, 100 * scale * 500 // 1_000_000))
        logs.append(Log("ScalesBalanceUpdated", {"usdt": 100, "rbtc": scale, "ts": now}))
        logs.append(Log("YieldCalculated", {"usdt": g["total_vusdt"], "supply": supply, "rate": g["rate"]}))

    def _participant(self, user: str) -> dict[str, int] | None:
        """The participant if it currently exists (a membership that ended does not)."""
        record = self.s.participants.get(user)
        return record if record is not None and record["exists"] else None

    def _record(self, user: str) -> dict[str, int]:
        """The stored struct, also of a membership that ended (the contract keeps claimed, joined, last)."""
        return self.s.participants.get(user) or {"claimed": 0, "joined": 0, "last": 0, "tier": 0}

    def _set_participant(self, user: str, **changes: int) -> None:
        current = dict(self.s.participants.get(user) or {})
        current.update(changes)
        self.s.put(self.s.participants, user, current)

    def _do_join_holder(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.pool_oracle)
        user = p["user"].lower()
        self._require(self._participant(user) is None)
        bal = self.s.synth.get(user, 0)
        self._require(bal > 0)
        record = self._record(user)
        self._set_participant(
            user,
            type=0,
            vusdt=record.get("vusdt", 0),
            contrib=bal,
            claimed=record["claimed"],
            joined=now,
            last=now,
            tier=0,
            exists=1,
        )
        self.touched.add(user)
        self._scales(now, logs)
        logs.append(Log("ParticipantJoined", {"user": user, "type": 0, "amount": bal}))

    def _do_join_trader(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.pool_oracle)
        user, amount = p["user"].lower(), p["amount"]
        self._require(amount > 0)
        part = self._participant(user)
        if part is not None:
            self._require(part["type"] == 1)
            self._set_participant(user, vusdt=part["vusdt"] + amount, last=now)
        else:
            record = self._record(user)
            self._set_participant(
                user,
                type=1,
                vusdt=amount,
                contrib=record.get("contrib", 0),
                claimed=record["claimed"],
                joined=now,
                last=now,
                tier=record["tier"],
                exists=1,
            )
        self.s.put(self.s.g, "total_vusdt", self.s.g["total_vusdt"] + amount)
        self.touched.add(user)
        self._scales(now, logs)
        logs.append(Log("ParticipantJoined", {"user": user, "type": 1, "amount": amount}))

    def _do_update_contribution(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.pool_oracle)
        user, new = p["user"].lower(), p["amount"]
        part = self._participant(user)
        self._require(part is not None and part["type"] == 0)
        assert part is not None
        old = part["contrib"]
        self._set_participant(user, contrib=new, last=now, tier=_tier(now, part["joined"]))
        self.touched.add(user)
        if new == 0 and old > 0:
            logs.append(Log("EmergencyBurnTriggered", {"user": user, "amount": old}))
        self._scales(now, logs)

    def _do_leave(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.pool_oracle)
        user = p["user"].lower()
        part = self._participant(user)
        self._require(part is not None)
        assert part is not None
        amount = part["vusdt"] if part["type"] == 1 else part["contrib"]
        self._set_participant(user, vusdt=0, contrib=0, tier=0, exists=0)
        self.touched.add(user)
        logs.append(Log("ParticipantLeft", {"user": user, "type": part["type"], "amount": amount}))

    def _do_claim(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        part = self._participant(sender)
        self._require(part is not None)
        assert part is not None
        base = part["vusdt"] if part["type"] == 1 else part["contrib"]
        mult = {2: 150, 1: 125}.get(part["tier"], 110)
        gross = base * self.s.g["rate"] * (now - part["last"]) * mult // (10_000 * SECONDS_PER_YEAR * 100)
        owed = max(gross - part["claimed"], 0)
        self._require(owed > 0)
        self._set_participant(sender, claimed=part["claimed"] + owed, last=now)
        self.touched.add(sender)
        logs.append(Log("YieldClaimed", {"user": sender, "amount": owed}))

    def _do_dispute(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._require(self._participant(sender) is not None)
        self._require(not self.s.disputed.get(sender, False))
        self.s.put(self.s.disputed, sender, True)
        self.touched.add(sender)
        logs.append(Log("BalanceDisputed", {"user": sender, "reported": p["reported"], "oracle": p["oracle"]}))

    def _do_resolve(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.pool_oracle)
        self.s.put(self.s.disputed, p["user"].lower(), False)

    def _do_pool_burn(self, sender: str, p: dict, now: int, logs: list[Log]) -> None:
        self._only(sender, self.pool_oracle)
        user = p["user"].lower()
        record = self.s.participants.get(user)
        if record is not None and record["type"] == 0:
            self._set_participant(user, contrib=0)
        part = self._participant(user)
        if part is not None:
            changes = {"last": now}
            if part["type"] == 0:
                changes.update(tier=_tier(now, part["joined"]))
            self._set_participant(user, **changes)
            self.touched.add(user)
        logs.append(Log("EmergencyBurnTriggered", {"user": user, "amount": p["amount"]}))


@dataclass
class PlacedLog:
    """A simulated log placed at its receipt position."""

    log: Log
    action: Action
    log_index: int


class TableBuilder:
    """Folds placed logs, and the simulated pool state, into the five read tables (every column)."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses  # role -> address (lower-case)
        self.balances: dict[str, dict[str, Any]] = {}
        self.transactions: list[dict[str, Any]] = []
        self.emergency_burns: list[dict[str, Any]] = []
        self.participants: dict[str, dict[str, Any]] = {}
        self.ops: list[dict[str, Any]] = []

    def _balance(self, user: str, block: int) -> dict[str, Any]:
        row = self.balances.get(user)
        if row is None:
            row = {
                "user_address": user,
                "last_sats": 0,
                "rbtc_balance": 0,
                "wrbtc_balance": 0,
                "fee_vault_wei": 0,
                "last_sync_block": None,
                "last_sync_time": None,
                "last_sync_delta": None,
                "last_sync_fee_wei": None,
                "updated_block": block,
            }
            self.balances[user] = row
        row["updated_block"] = max(row["updated_block"], block)
        return row

    def _tx_row(
        self,
        pl: PlacedLog,
        user: str,
        tx_type: str,
        amount: int,
        delta: int,
        fee: int,
        emergency: bool,
        emitter_role: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        a = pl.action
        metadata = {
            "event": pl.log.event,
            "emitter": self.addresses[emitter_role],
            "tx_index": a.tx_index,
            **(extra or {}),
        }
        self.transactions.append(
            {
                "tx_hash": a.tx_hash,
                "log_index": pl.log_index,
                "block_number": a.block_number,
                "block_timestamp": a.block_timestamp,
                "user_address": user,
                "tx_type": tx_type,
                "amount": amount,
                "delta": delta,
                "fee_wei": fee,
                "is_emergency_burn": emergency,
                "status": "confirmed",
                "metadata": metadata,
                "bitcoin_address": None,
                "gas_used": a.gas_used,
                "gas_price": a.gas_price,
                "tx_from": a.tx_from,
                "tx_to": a.tx_to,
            }
        )

    def add_tx(self, placed: list[PlacedLog]) -> None:
        """Apply all logs of one transaction."""
        for pl in placed:
            handler = getattr(self, f"_on_{pl.log.event}", None)
            if handler is not None:
                handler(pl)

    def _on_RBTCTransfer(self, pl: PlacedLog) -> None:
        f, block = pl.log.fields, pl.action.block_number
        if f["from"] != ZERO:
            self._balance(f["from"], block)["rbtc_balance"] -= f["amount"]
        if f["to"] != ZERO:
            self._balance(f["to"], block)["rbtc_balance"] += f["amount"]

    def _on_WrTransfer(self, pl: PlacedLog) -> None:
        f, block = pl.log.fields, pl.action.block_number
        if f["from"] != ZERO:
            self._balance(f["from"], block)["wrbtc_balance"] -= f["amount"]
        if f["to"] != ZERO:
            self._balance(f["to"], block)["wrbtc_balance"] += f["amount"]

    def _on_Deposited(self, pl: PlacedLog) -> None:
        f = pl.log.fields
        self._balance(f["user"], pl.action.block_number)["fee_vault_wei"] += f["amount"]
        self._tx_row(pl, f["user"], "DEPOSIT", f["amount"], f["amount"], 0, False, "fee_vault")
        if f.get("prepay"):
            self._op(pl, "DEPOSIT", f["user"], None, f["amount"])

    def _on_Spent(self, pl: PlacedLog) -> None:
        f = pl.log.fields
        self._balance(f["user"], pl.action.block_number)["fee_vault_wei"] -= f["amount"]

    def _on_Withdrawn(self, pl: PlacedLog) -> None:
        f = pl.log.fields
        self._balance(f["user"], pl.action.block_number)["fee_vault_wei"] -= f["amount"]
        self._tx_row(pl, f["user"], "WITHDRAW", f["amount"], -f["amount"], 0, False, "fee_vault")

    def _on_Wrapped(self, pl: PlacedLog) -> None:
        f = pl.log.fields
        self._tx_row(pl, f["user"], "WRAP", f["amount"], f["amount"], 0, False, "vault_wrbtc")

    def _on_Redeemed(self, pl: PlacedLog) -> None:
        f = pl.log.fields
        self._tx_row(pl, f["user"], "UNWRAP", f["amount"], -f["amount"], 0, False, "vault_wrbtc")

    def _on_Synced(self, pl: PlacedLog) -> None:
        f, a = pl.log.fields, pl.action
        row = self._balance(f["user"], a.block_number)
        row.update(
            last_sats=f["new"],
            last_sync_block=a.block_number,
            last_sync_time=a.block_timestamp,
            last_sync_delta=f["delta"],
            last_sync_fee_wei=f["fee"],
        )
        tx_type = "MINT" if f["delta"] > 0 else "BURN"
        emergency = bool(f.get("emergency"))
        self._tx_row(
            pl,
            f["user"],
            tx_type,
            abs(f["delta"]),
            f["delta"],
            f["fee"],
            emergency,
            "oracle_aggregator",
            {"new_balance_sats": str(f["new"])},
        )
        if not emergency:
            self._op(pl, tx_type, f["user"], abs(f["delta"]), f["fee"])

    def _on_EmergencyBurn(self, pl: PlacedLog) -> None:
        f, a = pl.log.fields, pl.action
        self.emergency_burns.append(
            {
                "tx_hash": a.tx_hash,
                "log_index": pl.log_index,
                "block_number": a.block_number,
                "timestamp": a.block_timestamp,
                "user_address": f["user"],
                "burned_amount": f["amount"],
                "reason": f["reason"],
            }
        )
        self._op(pl, "EMERGENCY_BURN", f["user"], f["amount"], 0)

    def _op(self, pl: PlacedLog, op: str, user: str, amount: int | None, fee: int) -> None:
        a = pl.action
        self.ops.append(
            {
                "tx_hash": a.tx_hash,
                "log_index": pl.log_index,
                "block_number": a.block_number,
                "block_timestamp": a.block_timestamp,
                "operation_type": op,
                "user_address": user,
                "amount_sats": amount,
                "fee_wei": fee,
                "bitcoin_address": None,
                "oracle_node": None,
                "consensus_data": None,
                "id": f"{a.tx_hash}:{pl.log_index}",
                "timestamp": a.block_timestamp,
                "action": op,
                "consensus_reached": None,
                "sources_used": None,
                "created_at": a.block_timestamp,
            }
        )

    def snapshot_participants(self, sim: Simulator, block: int) -> None:
        """Rows of the participants the last action changed, as the contract now stores them."""
        for user in sim.touched:
            record = sim.s.participants[user]
            self.participants[user] = {
                "user_address": user,
                "participant_type": record["type"],
                "loyalty_tier": record["tier"],
                "is_active": bool(record["exists"]),
                "virtual_usdt": record["vusdt"],
                "rbtc_contributed": record["contrib"],
                "yield_claimed": record["claimed"],
                "yield_earned": 0,
                "joined_at": record["joined"],
                "last_activity_at": record["last"],
                "is_disputed": sim.s.disputed.get(user, False),
                "updated_block": block,
            }

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Rows in a deterministic order."""
        by_pos = lambda r: (r["block_number"], r["log_index"])  # noqa: E731
        return {
            "balances": [self.balances[k] for k in sorted(self.balances)],
            "transactions": sorted(self.transactions, key=by_pos),
            "emergency_burns": sorted(self.emergency_burns, key=by_pos),
            "yield_scales_participants": [self.participants[k] for k in sorted(self.participants)],
            "oracle_operations_log": sorted(self.ops, key=by_pos),
        }


class ScenarioModel:
    """Records the driver's actions and predicts the read tables from the canonical ones."""

    def __init__(
        self, aggregator: str, committee: str, wrapper: str, pool_oracle: str, addresses: dict[str, str]
    ) -> None:
        self.roles = {
            "aggregator": aggregator.lower(),
            "committee": committee.lower(),
            "wrapper": wrapper.lower(),
            "pool_oracle": pool_oracle.lower(),
        }
        self.addresses = {role: a.lower() for role, a in addresses.items()}
        self.actions: dict[str, Action] = {}
        self.strict = True

    def record(self, action: Action) -> None:
        """Add (or replace) an action with its receipt facts already applied."""
        self.actions[action.tx_hash] = action

    def canonical_actions(self, canonical_tx_hashes: Iterable[str] | None = None) -> list[Action]:
        """Actions on the canonical chain in execution order."""
        if canonical_tx_hashes is None:
            chosen = [a for a in self.actions.values() if a.canonical]
        else:
            wanted = {h.lower() for h in canonical_tx_hashes}
            chosen = [a for a in self.actions.values() if a.tx_hash in wanted]
        return sorted(chosen, key=lambda a: (a.block_number, a.tx_index))

    def simulate(
        self, canonical_tx_hashes: Iterable[str] | None = None, *, resolutions_visible: bool = True
    ) -> tuple[Simulator, TableBuilder]:
        """Replay canonical actions; check each against its receipt; return final state and tables.

        `resolutions_visible=False` predicts tables built up to a block older than the node's state window: a
        dispute resolution emits nothing and cannot be read there, so every dispute ever filed still shows open.
        """
        sim = Simulator(**self.roles)
        builder = TableBuilder(self.addresses)
        for action in self.canonical_actions(canonical_tx_hashes):
            ok, logs = sim.run(action)
            if self.strict:
                self._check(action, ok, logs)
            if not ok or action.status != 1:
                continue
            placed = [PlacedLog(log, action, idx) for log, idx in zip(logs, action.log_indexes, strict=False)]
            builder.add_tx(placed)
            builder.snapshot_participants(sim, action.block_number)
        # A resolution emits nothing: the indexer reads the open-dispute flag by eth_call, so the rows carry the
        # flag as it stands at the end, while updated_block stays the block of the last action on the row.
        filed = {a.sender for a in self.canonical_actions(canonical_tx_hashes) if a.kind == "dispute" and a.status == 1}
        for user, row in builder.participants.items():
            row["is_disputed"] = sim.s.disputed.get(user, False) if resolutions_visible else user in filed
        return sim, builder

    @staticmethod
    def _check(action: Action, ok: bool, logs: list[Log]) -> None:
        if ok != (action.status == 1):
            raise ModelMismatch(f"{action.kind} {action.tx_hash}: model success={ok}, receipt status={action.status}")
        if ok and len(logs) != len(action.log_indexes):
            names = [log.event for log in logs]
            count = len(action.log_indexes)
            raise ModelMismatch(f"{action.kind} {action.tx_hash}: model logs {names}, receipt has {count} logs")

    def expected_tables(
        self, canonical_tx_hashes: Iterable[str] | None = None, *, resolutions_visible: bool = True
    ) -> dict[str, list[dict[str, Any]]]:
        """Expected read tables, from the actions flagged canonical or from the given tx hashes only."""
        return self.simulate(canonical_tx_hashes, resolutions_visible=resolutions_visible)[1].tables()

    def expected_state(self, canonical_tx_hashes: Iterable[str] | None = None) -> ChainState:
        """Simulated contract storage after the canonical actions."""
        return self.simulate(canonical_tx_hashes)[0].s

    def recheck_canonical(self, w3: Any) -> dict[str, int]:
        """Ask the node for every recorded receipt; drop vanished txs and refresh re-mined ones."""
        counts = {"kept": 0, "dropped": 0, "moved": 0}
        block_times: dict[str, int] = {}
        for action in self.actions.values():
            receipt = fetch_receipt(w3, action.tx_hash)
            if receipt is None or receipt.get("blockHash") is None:
                action.canonical = False
                counts["dropped"] += 1
                continue
            block_hash = _hex(receipt["blockHash"])
            if action.canonical and block_hash == action.block_hash:
                counts["kept"] += 1
                continue
            if block_hash not in block_times:
                block_times[block_hash] = int(w3.eth.get_block(receipt["blockHash"])["timestamp"])
            action.apply_receipt(receipt, block_times[block_hash])
            counts["moved"] += 1
        return counts

    def canonical_tx_hashes(self) -> set[str]:
        """Hashes of the actions currently believed canonical."""
        return {a.tx_hash for a in self.actions.values() if a.canonical}


def fetch_receipt(w3: Any, tx_hash: str) -> Any | None:
    """Receipt of a tx, or None when the node does not know it (any more)."""
    from web3.exceptions import TransactionNotFound

    try:
        return w3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:
        return None
