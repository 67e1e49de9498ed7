"""Deploy the ReserveBTC test doubles on anvil and drive a seed-deterministic mix of protocol activity."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.contract import Contract

from .model import FEE_FIXED_WEI, MAX_FEE_PER_SYNC_WEI, Action, ScenarioModel, quote_fee

BUILD_DIR = Path(__file__).resolve().parents[1] / "contracts" / "build"
ROLES = ("oracle_aggregator", "rbtc_synth", "fee_vault", "vault_wrbtc", "yield_scales_pool")
FUND_WEI = 10**24
MAX_FEE_PER_GAS = 1000 * 10**9
SINGLE_GAS = 1_000_000
MAX_SYNC_UP = 900_000


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """ABI and bytecode of one compiled test contract."""
    path = BUILD_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; run `make contracts`")
    return json.loads(path.read_text())


def role_account(label: str) -> LocalAccount:
    """A fixed, well-known key for a scenario role or user."""
    return Account.from_key(keccak(text=f"reservebtc-scenario:{label}"))


def create_address(sender: str, nonce: int) -> str:
    """Address of the contract created by sender at nonce (CREATE)."""
    raw = keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:]
    return to_checksum_address(raw)


def fund(w3: Web3, addresses: Sequence[str], wei: int = FUND_WEI) -> None:
    """Give each address a large ETH balance through anvil."""
    for address in addresses:
        w3.provider.make_request("anvil_setBalance", [address, hex(wei)])


def _hash_hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


class TxSender:
    """Signs and sends EIP-1559 transactions, tracking nonces locally."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.chain_id = w3.eth.chain_id
        self.nonces: dict[str, int] = {}

    def refresh(self) -> None:
        """Forget cached nonces (after a reorg or revert)."""
        self.nonces.clear()

    def _nonce(self, address: str) -> int:
        if address not in self.nonces:
            self.nonces[address] = self.w3.eth.get_transaction_count(address, "pending")
        return self.nonces[address]

    def send(self, account: LocalAccount, to: str | None, data: str, value: int = 0, gas: int = SINGLE_GAS) -> str:
        """Send one transaction and return its hash (lower-case hex)."""
        for attempt in range(2):
            tx: dict[str, Any] = {
                "chainId": self.chain_id,
                "nonce": self._nonce(account.address),
                "data": data,
                "value": value,
                "gas": gas,
                "maxFeePerGas": MAX_FEE_PER_GAS,
                "maxPriorityFeePerGas": 0,
                "type": 2,
            }
            if to is not None:
                tx["to"] = to
            signed = account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:  # noqa: BLE001 - anvil reports nonce problems as generic RPC errors
                if attempt == 0 and "nonce" in str(exc).lower():
                    self.nonces.pop(account.address, None)
                    continue
                raise
            self.nonces[account.address] += 1
            return _hash_hex(tx_hash)
        raise RuntimeError("unreachable")


@dataclass
class Deployment:
    """The six contracts deployed and wired as in the reference, plus the EOAs that act on them."""

    w3: Web3
    committee: LocalAccount
    wrapper: LocalAccount
    pool_oracle: LocalAccount
    addresses: dict[str, str]
    deploy_blocks: dict[str, int]
    fee_policy_address: str
    contracts: dict[str, Contract] = field(default_factory=dict)

    @property
    def start_block(self) -> int:
        """First block holding any of the contracts."""
        return min(self.deploy_blocks.values())

    @classmethod
    def deploy(cls, w3: Web3) -> Deployment:
        """Deploy FeePolicy, FeeVault, OracleAggregator, RBTCSynth, VaultWrBTC and YieldScalesPool."""
        committee, wrapper, pool_oracle = (role_account(n) for n in ("committee", "wrapper", "pool-oracle"))
        fund(w3, [committee.address, wrapper.address, pool_oracle.address])
        sender = TxSender(w3)
        base = w3.eth.get_transaction_count(committee.address, "pending")
        order = (
            "fee_policy",
            "fee_vault",
            "oracle_aggregator",
            "rbtc_synth",
            "vault_wrbtc",
            "yield_scales_pool",
        )
        addr = {role: create_address(committee.address, base + i) for i, role in enumerate(order)}
        args: dict[str, tuple[str, list[Any]]] = {
            "fee_policy": ("FeePolicy", [100, 10**15, 10**12]),
            "fee_vault": ("FeeVault", [addr["oracle_aggregator"], committee.address]),
            "oracle_aggregator": (
                "OracleAggregator",
                [
                    addr["rbtc_synth"],
                    addr["fee_vault"],
                    addr["fee_policy"],
                    committee.address,
                    1,
                    MAX_FEE_PER_SYNC_WEI,
                ],
            ),
            "rbtc_synth": ("RBTCSynth", [addr["oracle_aggregator"]]),
            "vault_wrbtc": ("VaultWrBTC", [wrapper.address, committee.address]),
            "yield_scales_pool": (
                "YieldScalesPool",
                [addr["rbtc_synth"], addr["fee_vault"], pool_oracle.address],
            ),
        }
        blocks: dict[str, int] = {}
        contracts: dict[str, Contract] = {}
        for role in order:
            name, ctor_args = args[role]
            artifact = load_artifact(name)
            factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
            data = factory.constructor(*ctor_args).data_in_transaction
            tx_hash = sender.send(committee, None, data, gas=6_000_000)
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
            if receipt["status"] != 1 or receipt["contractAddress"] != addr[role]:
                raise RuntimeError(f"deploying {name} failed or landed at an unexpected address")
            blocks[role] = int(receipt["blockNumber"])
            contracts[role] = w3.eth.contract(address=addr[role], abi=artifact["abi"])
        return cls(
            w3=w3,
            committee=committee,
            wrapper=wrapper,
            pool_oracle=pool_oracle,
            addresses={role: addr[role].lower() for role in ROLES},
            deploy_blocks={role: blocks[role] for role in ROLES},
            fee_policy_address=addr["fee_policy"].lower(),
            contracts=contracts,
        )

    def new_model(self) -> ScenarioModel:
        """An empty model wired to this deployment's addresses."""
        return ScenarioModel(
            aggregator=self.addresses["oracle_aggregator"],
            committee=self.committee.address,
            wrapper=self.wrapper.address,
            pool_oracle=self.pool_oracle.address,
            addresses=self.addresses,
        )


@dataclass
class Plan:
    """One transaction to send."""

    kind: str
    account: LocalAccount
    role: str
    fn: str
    args: list[Any]
    params: dict[str, Any]
    value: int = 0
    gas: int = SINGLE_GAS


WEIGHTS: dict[str, int] = {
    "deposit": 10,
    "prepay": 6,
    "deposit_many": 2,
    "sync_up": 14,
    "sync_down": 8,
    "sync_topup_revert": 3,
    "sync_emergency": 3,
    "sync_cap_revert": 1,
    "sync_zero": 1,
    "sync_batch": 3,
    "emergency": 3,
    "reset_emergency": 1,
    "withdraw": 4,
    "wrap": 6,
    "redeem": 4,
    "vault_transfer": 4,
    "vault_approve": 1,
    "slash": 1,
    "join_holder": 4,
    "join_trader": 5,
    "update_contribution": 4,
    "claim": 5,
    "dispute": 2,
    "resolve": 1,
    "pool_burn": 2,
    "leave": 2,
    "batch_emergency": 2,
    "collect_fee": 1,
}


class ScenarioDriver:
    """Sends a seed-deterministic random mix of every kind of protocol activity and records it in a model."""

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        seed: int,
        users: int = 8,
        model: ScenarioModel | None = None,
        multi_tx_block_chance: float = 0.15,
    ) -> None:
        self.w3 = w3
        self.d = deployment
        self.c = deployment.contracts
        self.rng = random.Random(seed)
        self.model = model if model is not None else deployment.new_model()
        self.users = [role_account(f"user-{i}") for i in range(users)]
        self.multi_tx_block_chance = multi_tx_block_chance
        self.sender = TxSender(w3)
        self._block_times: dict[str, int] = {}
        self.kinds = list(WEIGHTS)
        self.weights = [WEIGHTS[k] for k in self.kinds]
        self.sent: list[str] = []
        self.resync()

    # --- public API
    def resync(self) -> None:
        """Re-read what the driver caches from the chain (nonces, ETH balances); call after reorgs/reverts."""
        self.sender.refresh()
        accounts = [self.d.committee, self.d.wrapper, self.d.pool_oracle, *self.users]
        low = [a.address for a in accounts if self.w3.eth.get_balance(a.address) < FUND_WEI // 10]
        fund(self.w3, low)

    def run(self, steps: int) -> list[Action]:
        """Send `steps` transactions (some several to a block); record and return their actions."""
        self.resync()
        done: list[Action] = []
        while len(done) < steps:
            self._maybe_time_jump()
            if steps - len(done) >= 2 and self.rng.random() < self.multi_tx_block_chance:
                count = self.rng.randint(2, min(5, steps - len(done)))
                done.extend(self._send_block([self._plan() for _ in range(count)]))
            else:
                done.extend(self._send_automined([self._plan()]))
        return done

    run_steps = run

    def run_cases(self) -> list[Action]:
        """A fixed prologue that makes every tricky case happen at least once (the random mix may miss some).

        Users 0-4 take part; two addresses outside the random mix appear only in a Deposited (one) and only in
        Deposited and Spent (the other: fees collected without a sync).
        """
        self.resync()
        u = [a.address for a in self.users]
        lo = [a.lower() for a in u]
        only_deposit, fee_only = (role_account(n).address for n in ("only-deposits", "only-fees"))
        prepay = [
            self._agg_plan(
                "prepay", "registerAndPrepay", [a, 1, bytes(32)], {"user": a.lower(), "amount": 2 * 10**16}, 2 * 10**16
            )
            for a in [*u[:5], fee_only]
        ]
        done = self._send_automined(prepay)
        deposit = {"user": only_deposit.lower(), "amount": 10**15}
        done += self._send_automined(
            [Plan("deposit", self.d.wrapper, "fee_vault", "depositETH", [only_deposit], deposit, 10**15)]
        )
        collect = {"user": fee_only.lower(), "amount": 10**15}
        done += self._send_automined([self._agg_plan("collect_fee", "collectFee", [fee_only, 10**15], collect)])
        done += self._send_automined([self._sync_plan("sync_up", self.users[i], 100_000 * (i + 1)) for i in range(4)])
        # User 3 withdraws everything, so a sync down for it takes the automatic emergency path inside a batch.
        done += self._send_automined([Plan("withdraw", self.users[3], "fee_vault", "withdrawUnused", [], {})])
        done += self._send_automined([self._sync_batch_plan([u[0], u[3], u[1]], [150_000, 10_000, 250_000])])
        # The manual path among other syncs in one transaction.
        done += self._send_automined(
            [
                self.multicall_plan(
                    [
                        ("sync", {"user": lo[0], "new_balance": 160_000}),
                        ("emergency", {"user": lo[1]}),
                        ("sync", {"user": lo[2], "new_balance": 250_000}),
                    ]
                )
            ]
        )
        pool = lambda kind, fn, args, params: self._pool_plan(kind, fn, args, params)  # noqa: E731
        done += self._send_automined(
            [
                pool("join_holder", "joinAsBitcoinHolder", [u[0]], {"user": lo[0]}),
                pool("join_trader", "joinAsTrader", [u[4], 10**9], {"user": lo[4], "amount": 10**9}),
                pool("join_trader", "joinAsTrader", [u[4], 5 * 10**8], {"user": lo[4], "amount": 5 * 10**8}),
                pool("join_holder", "joinAsBitcoinHolder", [u[2]], {"user": lo[2]}),
            ]
        )
        self._rpc("evm_increaseTime", [200 * 86_400])
        done += self._send_automined(
            [
                pool("update_contribution", "updateRBTCContribution", [u[0], 777], {"user": lo[0], "amount": 777}),
                pool("update_contribution", "updateRBTCContribution", [u[2], 0], {"user": lo[2], "amount": 0}),
                Plan(
                    "dispute",
                    self.users[4],
                    "yield_scales_pool",
                    "disputeBalance",
                    [5, 6],
                    {"reported": 5, "oracle": 6},
                ),
                Plan(
                    "dispute",
                    self.users[0],
                    "yield_scales_pool",
                    "disputeBalance",
                    [7, 8],
                    {"reported": 7, "oracle": 8},
                ),
            ]
        )
        self._rpc("evm_mine", [])
        done += self._send_automined(
            [
                pool("resolve", "resolveDispute", [u[4], True], {"user": lo[4]}),
                pool("leave", "leave", [u[4]], {"user": lo[4]}),
                pool("leave", "leave", [u[0]], {"user": lo[0]}),
            ]
        )
        done += self._send_automined([self._sync_plan("sync_up", self.users[4], 50_000)])
        done += self._send_automined(
            [
                pool("join_holder", "joinAsBitcoinHolder", [u[4]], {"user": lo[4]}),  # a trader re-joins as holder
                pool("join_trader", "joinAsTrader", [u[0], 3 * 10**8], {"user": lo[0], "amount": 3 * 10**8}),
            ]
        )
        failed = [a for a in done if a.status != 1]
        if failed:
            raise RuntimeError(f"scenario prologue reverted: {[(a.kind, a.tx_hash) for a in failed]}")
        return done

    def run_bulk(self, target_logs: int, batch_size: int = 100, txs_per_block: int = 1) -> int:
        """Bulk activity via depositMany + syncBatch until about target_logs logs exist; return the count.

        Every round prepays each user enough for one sync, so no batch takes the emergency path.
        """
        self.resync()
        agg = self.c["oracle_aggregator"]
        current = {u.address: agg.functions.lastSats(u.address).call() for u in self.users}
        produced = 0
        while produced < target_logs:
            plans: list[Plan] = []
            for start in range(0, len(self.users), batch_size):
                chunk = [u.address for u in self.users[start : start + batch_size]]
                plans.extend(self._bulk_round(chunk, current))
                produced += 4 * len(chunk)
            for i in range(0, len(plans), txs_per_block):
                group = plans[i : i + txs_per_block]
                actions = self._send_block(group) if txs_per_block > 1 else self._send_automined(group)
                failed = [a.tx_hash for a in actions if a.status != 1]
                if failed:
                    raise RuntimeError(f"bulk transaction reverted: {failed}")
        return produced

    def _bulk_round(self, chunk: list[str], current: dict[str, int]) -> list[Plan]:
        """Prepay every user of `chunk`, then sync each up (or, sometimes, down); `current` tracks lastSats."""
        news = []
        for address in chunk:
            cur = current[address]
            new = (
                self.rng.randint(0, cur - 1)
                if cur > 0 and self.rng.random() < 0.3
                else cur + self.rng.randint(1, MAX_SYNC_UP)
            )
            news.append(new)
            current[address] = new
        return [
            self._deposit_many_plan(chunk, [MAX_FEE_PER_SYNC_WEI] * len(chunk)),
            self._sync_batch_plan(chunk, news),
        ]

    # --- sending
    def _rpc(self, method: str, params: list[Any]) -> Any:
        return self.w3.provider.make_request(method, params)

    def _maybe_time_jump(self) -> None:
        roll = self.rng.random()
        if roll < 0.01:
            seconds = self.rng.randint(200, 400) * 86_400
        elif roll < 0.12:
            seconds = self.rng.randint(60, 3 * 86_400)
        else:
            return
        self._rpc("evm_increaseTime", [seconds])

    def _send(self, plan: Plan) -> str:
        contract = self.c[plan.role]
        data = contract.encode_abi(plan.fn, args=plan.args)
        tx_hash = self.sender.send(plan.account, contract.address, data, plan.value, plan.gas)
        self.sent.append(tx_hash)
        return tx_hash

    def _send_automined(self, plans: list[Plan]) -> list[Action]:
        return [self._finish(plan, self._send(plan)) for plan in plans]

    def _send_block(self, plans: list[Plan]) -> list[Action]:
        self._rpc("evm_setAutomine", [False])
        try:
            hashes = [self._send(plan) for plan in plans]
            self._rpc("evm_mine", [])
        finally:
            self._rpc("evm_setAutomine", [True])
        return [self._finish(plan, tx_hash) for plan, tx_hash in zip(plans, hashes, strict=True)]

    def _finish(self, plan: Plan, tx_hash: str) -> Action:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        block_hash = _hash_hex(receipt["blockHash"])
        if block_hash not in self._block_times:
            self._block_times[block_hash] = int(self.w3.eth.get_block(receipt["blockHash"])["timestamp"])
        action = Action(plan.kind, plan.account.address.lower(), plan.params, tx_hash)
        action.apply_receipt(receipt, self._block_times[block_hash])
        self.model.record(action)
        return action

    # --- reads
    def _last_sats(self, address: str) -> int:
        return self.c["oracle_aggregator"].functions.lastSats(address).call()

    def _prepaid(self, address: str) -> int:
        return self.c["fee_vault"].functions.balanceOf(address).call()

    def _wr(self, address: str) -> int:
        return self.c["vault_wrbtc"].functions.balanceOf(address).call()

    def _rbtc(self, address: str) -> int:
        return self.c["rbtc_synth"].functions.balanceOf(address).call()

    def _participant(self, address: str) -> tuple[Any, ...]:
        return tuple(self.c["yield_scales_pool"].functions.participants(address).call())

    def _pick(self, predicate: Callable[[str], bool] | None = None, strict_chance: float = 0.9) -> LocalAccount:
        """A random user, preferring one that satisfies predicate (when any does)."""
        if predicate is not None and self.rng.random() < strict_chance:
            matching = [u for u in self.users if predicate(u.address)]
            if matching:
                return self.rng.choice(matching)
        return self.rng.choice(self.users)

    # --- planning
    def _plan(self) -> Plan:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        return getattr(self, f"_plan_{kind}")()

    def _agg_plan(self, kind: str, fn: str, args: list[Any], params: dict[str, Any], value: int = 0) -> Plan:
        return Plan(kind, self.d.committee, "oracle_aggregator", fn, args, params, value)

    def _sync_plan(self, kind: str, user: LocalAccount, new: int) -> Plan:
        params = {"user": user.address.lower(), "new_balance": new}
        return self._agg_plan(kind, "sync", [user.address, new, b""], params)

    def _sync_batch_plan(self, users: list[str], news: list[int]) -> Plan:
        params = {"users": [u.lower() for u in users], "new_balances": list(news)}
        gas = min(200_000 + 150_000 * len(users), 29_000_000)
        return Plan("sync_batch", self.d.committee, "oracle_aggregator", "syncBatch", [users, news], params, 0, gas)

    def _deposit_many_plan(self, users: list[str], amounts: list[int]) -> Plan:
        value = sum(amounts)
        params = {"users": [u.lower() for u in users], "amounts": list(amounts), "value": value}
        gas = min(100_000 + 60_000 * len(users), 29_000_000)
        return Plan("deposit_many", self.d.committee, "fee_vault", "depositMany", [users, amounts], params, value, gas)

    def _plan_deposit(self) -> Plan:
        user, payer = self._pick(), self._pick()
        amount = self.rng.randint(1, 20) * 10**15 + self.rng.randint(0, 10**6)
        params = {"user": user.address.lower(), "amount": amount}
        return Plan("deposit", payer, "fee_vault", "depositETH", [user.address], params, amount)

    def _plan_prepay(self) -> Plan:
        user = self._pick()
        amount = self.rng.randint(1, 30) * 10**15
        method, checksum = self.rng.randint(0, 3), self.rng.randbytes(32)
        params = {"user": user.address.lower(), "amount": amount}
        return self._agg_plan("prepay", "registerAndPrepay", [user.address, method, checksum], params, amount)

    def _plan_deposit_many(self) -> Plan:
        chosen = self.rng.sample(self.users, self.rng.randint(1, min(4, len(self.users))))
        amounts = [self.rng.randint(1, 15) * 10**15 for _ in chosen]
        return self._deposit_many_plan([u.address for u in chosen], amounts)

    def _plan_sync_up(self) -> Plan:
        user = self._pick(lambda a: self._prepaid(a) >= MAX_FEE_PER_SYNC_WEI)
        return self._sync_plan("sync_up", user, self._last_sats(user.address) + self.rng.randint(1, MAX_SYNC_UP))

    def _plan_sync_down(self) -> Plan:
        user = self._pick(lambda a: self._last_sats(a) > 0)
        cur = self._last_sats(user.address)
        return self._sync_plan("sync_down", user, self.rng.randint(0, cur - 1) if cur > 0 else 0)

    def _plan_sync_topup_revert(self) -> Plan:
        user = self._pick(lambda a: self._prepaid(a) < MAX_FEE_PER_SYNC_WEI)
        prepaid = self._prepaid(user.address)
        needed = max(1, (prepaid - FEE_FIXED_WEI) // (quote_fee(1) - FEE_FIXED_WEI) + 1)
        delta = self.rng.randint(min(needed, MAX_SYNC_UP), MAX_SYNC_UP)
        return self._sync_plan("sync_topup_revert", user, self._last_sats(user.address) + delta)

    def _plan_sync_emergency(self) -> Plan:
        user = self._pick(lambda a: self._last_sats(a) > 0 and self._prepaid(a) < FEE_FIXED_WEI)
        cur = self._last_sats(user.address)
        return self._sync_plan("sync_emergency", user, self.rng.randint(0, cur - 1) if cur > 0 else 0)

    def _plan_sync_cap_revert(self) -> Plan:
        user = self._pick()
        delta = self.rng.randint(MAX_SYNC_UP + 1, 3 * MAX_SYNC_UP)
        return self._sync_plan("sync_cap_revert", user, self._last_sats(user.address) + delta)

    def _plan_sync_zero(self) -> Plan:
        user = self._pick()
        return self._sync_plan("sync_zero", user, self._last_sats(user.address))

    def _plan_sync_batch(self) -> Plan:
        rich = [u for u in self.users if self._prepaid(u.address) >= MAX_FEE_PER_SYNC_WEI] or self.users
        chosen = self.rng.sample(rich, self.rng.randint(1, min(4, len(rich))))
        news = [self._last_sats(u.address) + self.rng.randint(1, MAX_SYNC_UP) for u in chosen]
        return self._sync_batch_plan([u.address for u in chosen], news)

    def _plan_emergency(self) -> Plan:
        user = self._pick(lambda a: self._last_sats(a) > 0, strict_chance=0.95)
        return self._agg_plan("emergency", "executeEmergencyBurn", [user.address], {"user": user.address.lower()})

    def _plan_reset_emergency(self) -> Plan:
        user = self._pick()
        return self._agg_plan(
            "reset_emergency", "resetEmergencyBurnStatus", [user.address], {"user": user.address.lower()}
        )

    def _plan_withdraw(self) -> Plan:
        user = self._pick(lambda a: self._prepaid(a) > 0)
        return Plan("withdraw", user, "fee_vault", "withdrawUnused", [], {})

    def _plan_wrap(self) -> Plan:
        user = self._pick()
        amount = self.rng.randint(1, 1_000_000)
        params = {"user": user.address.lower(), "amount": amount}
        return Plan("wrap", self.d.wrapper, "vault_wrbtc", "onWrap", [user.address, amount], params)

    def _plan_redeem(self) -> Plan:
        user = self._pick(lambda a: self._wr(a) > 0)
        bal = self._wr(user.address)
        amount = bal + 1 if self.rng.random() < 0.1 or bal == 0 else self.rng.randint(1, bal)
        return Plan("redeem", user, "vault_wrbtc", "redeem", [amount], {"amount": amount})

    def _plan_vault_transfer(self) -> Plan:
        sender = self._pick(lambda a: self._wr(a) > 0)
        to = self.rng.choice([u for u in self.users if u is not sender] or self.users)
        amount = self.rng.randint(0, self._wr(sender.address))
        params = {"to": to.address.lower(), "amount": amount}
        return Plan("vault_transfer", sender, "vault_wrbtc", "transfer", [to.address, amount], params)

    def _plan_vault_approve(self) -> Plan:
        owner, spender = self._pick(), self._pick()
        amount = self.rng.randint(0, 10**8)
        params = {"spender": spender.address.lower(), "amount": amount}
        return Plan("vault_approve", owner, "vault_wrbtc", "approve", [spender.address, amount], params)

    def _plan_slash(self) -> Plan:
        user = self._pick(lambda a: self._wr(a) > 0)
        amount = self.rng.randint(0, self._wr(user.address))
        params = {"user": user.address.lower(), "amount": amount}
        return Plan("slash", self.d.committee, "vault_wrbtc", "slashFromOracle", [user.address, amount], params)

    def _pool_plan(self, kind: str, fn: str, args: list[Any], params: dict[str, Any]) -> Plan:
        return Plan(kind, self.d.pool_oracle, "yield_scales_pool", fn, args, params)

    def _plan_join_holder(self) -> Plan:
        user = self._pick(lambda a: not self._participant(a)[8] and self._rbtc(a) > 0)
        return self._pool_plan("join_holder", "joinAsBitcoinHolder", [user.address], {"user": user.address.lower()})

    def _plan_join_trader(self) -> Plan:
        user = self._pick(lambda a: not self._participant(a)[8] or self._participant(a)[0] == 1)
        amount = self.rng.randint(10**8, 10**10)
        params = {"user": user.address.lower(), "amount": amount}
        return self._pool_plan("join_trader", "joinAsTrader", [user.address, amount], params)

    def _plan_update_contribution(self) -> Plan:
        user = self._pick(lambda a: self._participant(a)[8] and self._participant(a)[0] == 0)
        amount = 0 if self.rng.random() < 0.35 else self.rng.randint(1, 2_000_000)
        params = {"user": user.address.lower(), "amount": amount}
        return self._pool_plan("update_contribution", "updateRBTCContribution", [user.address, amount], params)

    def _plan_claim(self) -> Plan:
        pool = self.c["yield_scales_pool"]
        user = self._pick(lambda a: pool.functions.pendingYield(a).call() > 0)
        return Plan("claim", user, "yield_scales_pool", "claimYield", [], {})

    def _plan_dispute(self) -> Plan:
        pool = self.c["yield_scales_pool"]
        user = self._pick(lambda a: self._participant(a)[8] and not pool.functions.isDisputed(a).call())
        reported, oracle = self.rng.randint(0, 10**7), self.rng.randint(0, 10**7)
        params = {"reported": reported, "oracle": oracle}
        return Plan("dispute", user, "yield_scales_pool", "disputeBalance", [reported, oracle], params)

    def _plan_resolve(self) -> Plan:
        pool = self.c["yield_scales_pool"]
        user = self._pick(lambda a: pool.functions.isDisputed(a).call())
        approved = self.rng.random() < 0.5
        return self._pool_plan("resolve", "resolveDispute", [user.address, approved], {"user": user.address.lower()})

    def _plan_leave(self) -> Plan:
        user = self._pick(lambda a: self._participant(a)[8])
        return self._pool_plan("leave", "leave", [user.address], {"user": user.address.lower()})

    def _plan_collect_fee(self) -> Plan:
        user = self._pick(lambda a: self._prepaid(a) > 0)
        amount = max(1, self._prepaid(user.address) // 3)
        params = {"user": user.address.lower(), "amount": amount}
        return self._agg_plan("collect_fee", "collectFee", [user.address, amount], params)

    def _plan_batch_emergency(self) -> Plan:
        """One transaction syncing several users, one of them emergency-burned (automatic or manual path)."""
        burnable = [u for u in self.users if self._last_sats(u.address) > 0]
        if not burnable:
            return self._plan_sync_batch()
        victim = self.rng.choice(burnable)
        others = [u for u in self.users if u is not victim and self._prepaid(u.address) >= MAX_FEE_PER_SYNC_WEI]
        chosen = self.rng.sample(others, min(len(others), self.rng.randint(1, 3)))
        calls: list[tuple[str, dict[str, Any]]] = []
        for u in chosen[: len(chosen) // 2 + 1]:
            calls.append(("sync", {"user": u.address.lower(), "new_balance": self._last_sats(u.address) + 1000}))
        if self._prepaid(victim.address) < FEE_FIXED_WEI and self.rng.random() < 0.5:
            calls.append(("sync", {"user": victim.address.lower(), "new_balance": 0}))  # automatic path
        else:
            calls.append(("emergency", {"user": victim.address.lower()}))  # the manual path
        for u in chosen[len(chosen) // 2 + 1 :]:
            calls.append(("sync", {"user": u.address.lower(), "new_balance": self._last_sats(u.address) + 2000}))
        return self.multicall_plan(calls)

    def multicall_plan(self, calls: list[tuple[str, dict[str, Any]]]) -> Plan:
        """Committee calls to the aggregator sent as one multicall transaction."""
        agg = self.c["oracle_aggregator"]
        encoded = []
        for kind, params in calls:
            if kind == "sync":
                encoded.append(
                    agg.encode_abi("sync", args=[to_checksum_address(params["user"]), params["new_balance"], b""])
                )
            else:
                encoded.append(agg.encode_abi("executeEmergencyBurn", args=[to_checksum_address(params["user"])]))
        gas = 300_000 + 250_000 * len(calls)
        return Plan(
            "multicall", self.d.committee, "oracle_aggregator", "multicall", [encoded], {"calls": calls}, 0, gas
        )

    def _plan_pool_burn(self) -> Plan:
        user = self._pick()
        amount = self.rng.randint(0, 2_000_000)
        params = {"user": user.address.lower(), "amount": amount}
        return self._pool_plan("pool_burn", "emergencyBurn", [user.address, amount], params)
