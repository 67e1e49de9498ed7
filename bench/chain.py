"""The benchmark chain: generated once with the project's contracts and scenario driver, then cached.

The chain is built on anvil with automine off, so every block holds a batch of transactions: segments of
mixed protocol activity (every kind the scenario driver knows, from a subset of active users) alternate
with bulk rounds (`depositMany` + `syncBatch` over every user, four logs per user per round). The scenario
model records every action with its receipt facts, so the expected tables can be computed at any time.

The cache (`bench/cache/<key>/`) holds anvil's state dump (`--dump-state`; `--load-state` restores the
accounts and storage *and* the block history: blocks, hashes, transactions, receipts and logs, which
`load_chain` verifies on every load) plus `meta.json` (addresses, head, logs per block) and `model.pkl`
(the scenario model). The key hashes the generation parameters, this file, the scenario driver and the
compiled test contracts, so changing any of them generates a new chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from eth_abi import decode as abi_decode
from web3 import Web3

from tests.support.anvil import AnvilNode, start_anvil
from tests.support.model import Action, ScenarioModel
from tests.support.scenario import (
    BUILD_DIR,
    FUND_WEI,
    ROLES,
    Deployment,
    Plan,
    ScenarioDriver,
    load_artifact,
    role_account,
)

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / "bench" / "cache"
GAS_LIMIT = 1_000_000_000
CONTRACT_NAMES = {
    "oracle_aggregator": "OracleAggregator",
    "rbtc_synth": "RBTCSynth",
    "fee_vault": "FeeVault",
    "vault_wrbtc": "VaultWrBTC",
    "yield_scales_pool": "YieldScalesPool",
}


@dataclass(frozen=True)
class ChainParams:
    """What the generated chain looks like; every field is part of the cache key."""

    shape: str = "dense"
    seed: int = 20240601
    users: int = 2000
    active_users: int = 48  # the users the mixed activity picks from (predicates read their state per block)
    segments: int = 10  # mixed and bulk activity alternate this many times
    mixed_blocks: int = 1600  # blocks of mixed activity in total
    mixed_txs_per_block: tuple[int, int] = (1, 6)
    bulk_logs: int = 196_000  # logs from depositMany + syncBatch rounds in total
    bulk_batch: tuple[int, int] = (10, 40)  # users per depositMany / syncBatch
    bulk_txs_per_block: tuple[int, int] = (2, 8)
    empty_blocks: int = 0  # empty blocks (anvil_mine) in total, spread evenly after each segment
    hardfork: str = ""  # anvil --hardfork ("" = anvil's default)

    @classmethod
    def quick(cls) -> ChainParams:
        return cls(users=200, active_users=24, segments=4, mixed_blocks=240, bulk_logs=16_000)

    @classmethod
    def for_shape(cls, shape: str, quick: bool = False) -> ChainParams:
        """The parameters of one benchmark chain shape (see SHAPES)."""
        if shape not in SHAPES:
            raise ValueError(f"unknown chain shape {shape!r}; known: {', '.join(SHAPES)}")
        return SHAPES[shape][1 if quick else 0]

    def anvil_args(self) -> list[str]:
        """anvil flags used both to generate the chain and to load its dump."""
        args = ["--gas-limit", str(GAS_LIMIT)]
        return args + (["--hardfork", self.hardfork] if self.hardfork else [])


SHAPES: dict[str, tuple[ChainParams, ChainParams]] = {
    # About 97 logs per block: bulk rounds of 2-8 transactions per block, 10-40 users each.
    "dense": (ChainParams(), ChainParams.quick()),
    # About 60 logs per block over twice 3,000 blocks (the scaling row backfills a quarter, half and all of
    # it): syncs batched 14-30 users per transaction, one or two such transactions per block.
    "medium": (
        ChainParams(
            shape="medium",
            segments=20,
            mixed_blocks=1200,
            bulk_logs=420_000,
            bulk_batch=(14, 30),
            bulk_txs_per_block=(1, 2),
        ),
        ChainParams(
            shape="medium",
            users=200,
            active_users=24,
            segments=4,
            mixed_blocks=120,
            bulk_logs=24_000,
            bulk_batch=(14, 30),
            bulk_txs_per_block=(1, 2),
        ),
    ),
    # A million mostly empty blocks: protocol activity in about 0.2 % of them. Blocks are mined with the
    # shanghai rules: from cancun on, the beacon-root and block-hash system contracts grow the state with
    # every block and anvil_mine slows down with chain length (measured: 15 ms per block at 6,000 blocks).
    # An empty block still costs anvil time in proportion to the accounts in the state, hence 100 users.
    "sparse": (
        ChainParams(
            shape="sparse",
            users=100,
            active_users=48,
            segments=10,
            mixed_blocks=1500,
            bulk_logs=20_000,
            bulk_batch=(14, 30),
            bulk_txs_per_block=(1, 2),
            empty_blocks=1_000_000,
            hardfork="shanghai",
        ),
        ChainParams(
            shape="sparse",
            users=100,
            active_users=24,
            segments=4,
            mixed_blocks=120,
            bulk_logs=1_600,
            bulk_batch=(14, 30),
            bulk_txs_per_block=(1, 2),
            empty_blocks=100_000,
            hardfork="shanghai",
        ),
    ),
}
MINE_CHUNK = 50_000  # empty blocks per anvil_mine call


@dataclass
class ChainInfo:
    """What a benchmark needs to know about a cached chain."""

    key: str
    params: dict[str, Any]
    addresses: dict[str, str]
    deploy_blocks: dict[str, int]
    fee_policy_address: str
    start_block: int
    head: int
    head_hash: str
    logs: int
    block_logs: dict[int, int]  # block number -> protocol logs in it (blocks without logs omitted)
    generation_seconds: float
    transactions: int

    def logs_up_to(self, block: int) -> int:
        return sum(n for b, n in self.block_logs.items() if b <= block)

    def block_with_half_the_logs(self) -> int:
        total = 0
        for block in sorted(self.block_logs):
            total += self.block_logs[block]
            if total * 2 >= self.logs:
                return block
        return self.head

    def max_logs_in_window(self, span: int) -> int:
        counts = [self.block_logs.get(b, 0) for b in range(self.start_block, self.head + 1)]
        best = window = sum(counts[:span])
        for i in range(span, len(counts)):
            window += counts[i] - counts[i - span]
            best = max(best, window)
        return best


class RawRpc:
    """Plain JSON-RPC over one keep-alive session, with batches (much cheaper than web3 per call)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self._id = 0

    def call(self, method: str, params: list[Any]) -> Any:
        return self.batch([(method, params)])[0]

    def batch(self, calls: list[tuple[str, list[Any]]], chunk: int = 2000, errors: bool = True) -> list[Any]:
        """Results in order; an error raises, or (errors=False) gives None in its place."""
        out: list[Any] = []
        for start in range(0, len(calls), chunk):
            body = []
            for method, params in calls[start : start + chunk]:
                self._id += 1
                body.append({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
            resp = self.session.post(self.url, json=body, timeout=120)
            resp.raise_for_status()
            replies = {r["id"]: r for r in resp.json()}
            for item in body:
                reply = replies[item["id"]]
                if "error" in reply and not errors:
                    out.append(None)
                    continue
                if "error" in reply:
                    raise RuntimeError(f"{item['method']}: {reply['error']}")
                out.append(reply["result"])
        return out


def lean_web3(url: str) -> Web3:
    """web3 without its default middleware (no per-call chain id checks, plain dict results)."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 120}))
    w3.middleware_onion.clear()
    return w3


def _selector(signature: str) -> str:
    return Web3.keccak(text=signature)[:4].hex().removeprefix("0x")


def _addr_arg(address: str) -> str:
    return address.lower().removeprefix("0x").rjust(64, "0")


class BenchDriver(ScenarioDriver):
    """The scenario driver with batched JSON-RPC: one request for a block's receipts, cached state reads.

    Mixed activity picks from `active_users` only (the driver's predicates scan its user list); bulk rounds
    cover every user. Blocks are mined explicitly (automine off) with all their transactions.
    """

    def __init__(self, w3: Web3, deployment: Deployment, seed: int, users: int, active_users: int, **kw: Any):
        self.rpc = RawRpc(w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        self._reads: dict[tuple[str, str], Any] = {}
        super().__init__(w3, deployment, seed, users=users, **kw)
        self.all_users = self.users
        self.users = self.rng.sample(self.all_users, min(active_users, len(self.all_users)))
        self.actions: list[Action] = []

    # -- cheaper chain access
    def resync(self) -> None:
        self.sender.refresh()
        accounts = [self.d.committee, self.d.wrapper, self.d.pool_oracle, *getattr(self, "all_users", self.users)]
        balances = self.rpc.batch([("eth_getBalance", [a.address, "latest"]) for a in accounts])
        low = [a.address for a, b in zip(accounts, balances, strict=True) if int(b, 16) < FUND_WEI // 10]
        self.rpc.batch([("anvil_setBalance", [a, hex(FUND_WEI)]) for a in low])

    # Every state read of the driver's planning, fetched for all active users in one batch per kind and block.
    READS: dict[str, tuple[str, str, list[str]]] = {
        "last_sats": ("oracle_aggregator", "lastSats(address)", ["uint64"]),
        "prepaid": ("fee_vault", "balanceOf(address)", ["uint256"]),
        "wr": ("vault_wrbtc", "balanceOf(address)", ["uint256"]),
        "rbtc": ("rbtc_synth", "balanceOf(address)", ["uint256"]),
        "participant": (
            "yield_scales_pool",
            "participants(address)",
            ["uint8", "uint256", "uint256", "uint256", "uint256", "uint256", "uint256", "uint8", "bool"],
        ),
        "pending_yield": ("yield_scales_pool", "pendingYield(address)", ["uint256"]),
        "disputed": ("yield_scales_pool", "isDisputed(address)", ["bool"]),
    }

    def _cached(self, kind: str, address: str) -> Any:
        key = (kind, address)
        if key not in self._reads:
            role, signature, types = self.READS[kind]
            wanted = sorted({u.address for u in self.users} | {address})
            data = "0x" + _selector(signature)
            to = self.d.addresses[role]
            calls = [("eth_call", [{"to": to, "data": data + _addr_arg(a)}, "latest"]) for a in wanted]
            for a, raw in zip(wanted, self.rpc.batch(calls, errors=False), strict=True):
                # A view that reverts (pendingYield can, when the call's time is before a participant's last
                # activity) reads as zeros, so the plan that needs it is simply not chosen for that user.
                values = abi_decode(types, bytes.fromhex(raw.removeprefix("0x"))) if raw else [0] * len(types)
                self._reads[(kind, a)] = values[0] if len(values) == 1 else tuple(values)
        return self._reads[key]

    def _last_sats(self, address: str) -> int:
        return self._cached("last_sats", address)

    def _prepaid(self, address: str) -> int:
        return self._cached("prepaid", address)

    def _wr(self, address: str) -> int:
        return self._cached("wr", address)

    def _rbtc(self, address: str) -> int:
        return self._cached("rbtc", address)

    def _participant(self, address: str) -> tuple[Any, ...]:
        return self._cached("participant", address)

    # The three plans below are ScenarioDriver's, with the pool reads going through the batch cache.
    def _plan_claim(self) -> Plan:
        user = self._pick(lambda a: self._cached("pending_yield", a) > 0)
        return Plan("claim", user, "yield_scales_pool", "claimYield", [], {})

    def _plan_dispute(self) -> Plan:
        user = self._pick(lambda a: self._participant(a)[8] and not self._cached("disputed", a))
        reported, oracle = self.rng.randint(0, 10**7), self.rng.randint(0, 10**7)
        params = {"reported": reported, "oracle": oracle}
        return Plan("dispute", user, "yield_scales_pool", "disputeBalance", [reported, oracle], params)

    def _plan_resolve(self) -> Plan:
        user = self._pick(lambda a: self._cached("disputed", a))
        approved = self.rng.random() < 0.5
        return self._pool_plan("resolve", "resolveDispute", [user.address, approved], {"user": user.address.lower()})

    def last_sats_of(self, addresses: list[str]) -> dict[str, int]:
        """lastSats of many users in one batch."""
        agg = self.d.addresses["oracle_aggregator"]
        data = "0x" + _selector("lastSats(address)")
        calls = [("eth_call", [{"to": agg, "data": data + _addr_arg(a)}, "latest"]) for a in addresses]
        return {a: int(r, 16) for a, r in zip(addresses, self.rpc.batch(calls), strict=True)}

    # -- blocks
    def send_plans(self, plans: list[Plan]) -> list[str]:
        return [self._send(plan) for plan in plans]

    def mine(self, plans: list[Plan], hashes: list[str]) -> list[Action]:
        """Mine one block holding the sent transactions, then record them in the model."""
        self.rpc.call("evm_mine", [])
        return self.record(plans, hashes)

    def record(self, plans: list[Plan], hashes: list[str]) -> list[Action]:
        self._reads.clear()
        receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        missing = [h for h, r in zip(hashes, receipts, strict=True) if r is None]
        if missing:
            raise RuntimeError(f"{len(missing)} transactions were not mined, e.g. {missing[0]}")
        blocks = {r["blockHash"] for r in receipts}
        times = {}
        for block_hash in blocks:
            times[block_hash] = int(self.rpc.call("eth_getBlockByHash", [block_hash, False])["timestamp"], 16)
        done = []
        for plan, tx_hash, raw in zip(plans, hashes, receipts, strict=True):
            receipt = {
                "blockNumber": int(raw["blockNumber"], 16),
                "blockHash": raw["blockHash"],
                "transactionIndex": int(raw["transactionIndex"], 16),
                "status": int(raw["status"], 16),
                "logs": [{"logIndex": int(log["logIndex"], 16)} for log in raw["logs"]],
                "gasUsed": int(raw["gasUsed"], 16),
                "effectiveGasPrice": int(raw["effectiveGasPrice"], 16),
                "from": raw["from"],
                "to": raw["to"],
            }
            action = Action(plan.kind, plan.account.address.lower(), plan.params, tx_hash)
            action.apply_receipt(receipt, times[raw["blockHash"]])
            self.model.record(action)
            self.actions.append(action)
            done.append(action)
        return done

    def mixed_block(self, low: int, high: int) -> list[Action]:
        """One block of 1..n transactions of random kinds (reverts included, as the driver plans them)."""
        self._maybe_time_jump()
        plans = [self._plan() for _ in range(self.rng.randint(low, high))]
        return self.mine(plans, self.send_plans(plans))

    def bulk_plans(self, users: list[str], current: dict[str, int], batch: tuple[int, int]) -> list[Plan]:
        """depositMany + syncBatch chunks over `users` (as ScenarioDriver.run_bulk plans them)."""
        plans: list[Plan] = []
        start = 0
        while start < len(users):
            size = self.rng.randint(*batch)
            chunk = users[start : start + size]
            start += size
            plans.extend(self._bulk_round(chunk, current))
        return plans

    def bulk(self, target_logs: int, batch: tuple[int, int], per_block: tuple[int, int]) -> int:
        """Bulk rounds over every user until about target_logs logs; every transaction must succeed."""
        addresses = [u.address for u in self.all_users]
        current = self.last_sats_of(addresses)
        produced = 0
        while produced < target_logs:
            plans = self.bulk_plans(addresses, current, batch)
            produced += 4 * len(addresses)
            i = 0
            while i < len(plans):
                count = self.rng.randint(*per_block)
                group = plans[i : i + count]
                i += count
                failed = [a.tx_hash for a in self.mine(group, self.send_plans(group)) if a.status != 1]
                if failed:
                    raise RuntimeError(f"bulk transaction reverted: {failed}")
        return produced


def fingerprint(params: ChainParams) -> str:
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    for path in [Path(__file__), REPO / "tests" / "support" / "scenario.py", *sorted(BUILD_DIR.glob("*.json"))]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _stop_anvil(node: AnvilNode, timeout: float = 300.0) -> None:
    """SIGTERM and wait long enough for anvil to write its state dump."""
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)


def generate(params: ChainParams, target: Path, say: Any = print) -> ChainInfo:
    """Build the chain on a fresh anvil and write the cache entry into `target`."""
    started = time.monotonic()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Historical states are not kept while generating (the driver reads "latest" only): with a million
    # blocks they would cost gigabytes. The dump still holds every block, transaction, receipt and log.
    pruning = ["--prune-history"] if params.empty_blocks else []
    node = start_anvil([*params.anvil_args(), *pruning, "--dump-state", str(tmp / "state.json")])
    try:
        w3 = lean_web3(node.url)
        deployment = Deployment.deploy(w3)
        driver = BenchDriver(w3, deployment, params.seed, params.users, params.active_users)
        driver.rpc.call("evm_setAutomine", [False])
        for segment in range(params.segments):
            share = params.mixed_blocks // params.segments
            for _ in range(share):
                driver.mixed_block(*params.mixed_txs_per_block)
            driver.bulk(params.bulk_logs // params.segments, params.bulk_batch, params.bulk_txs_per_block)
            gap = params.empty_blocks // params.segments
            for done in range(0, gap, MINE_CHUNK):
                driver.rpc.call("anvil_mine", [hex(min(MINE_CHUNK, gap - done))])
            say(
                f"  segment {segment + 1}/{params.segments}: block {w3.eth.block_number}, "
                f"{sum(len(a.log_indexes) for a in driver.actions if a.status == 1)} logs, "
                f"{time.monotonic() - started:.0f}s"
            )
        head = w3.eth.block_number
        head_hash = driver.rpc.call("eth_getBlockByNumber", [hex(head), False])["hash"]
        block_logs: dict[int, int] = {}
        for action in driver.actions:
            if action.status == 1 and action.log_indexes:
                block_logs[action.block_number] = block_logs.get(action.block_number, 0) + len(action.log_indexes)
        info = ChainInfo(
            key=target.name,
            params=asdict(params),
            addresses=deployment.addresses,
            deploy_blocks=deployment.deploy_blocks,
            fee_policy_address=deployment.fee_policy_address,
            start_block=deployment.start_block,
            head=head,
            head_hash=head_hash,
            logs=sum(block_logs.values()),
            block_logs=block_logs,
            generation_seconds=0.0,
            transactions=len(driver.actions),
        )
        with open(tmp / "model.pkl", "wb") as fh:
            pickle.dump(driver.model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        _stop_anvil(node)
    if not (tmp / "state.json").exists():
        raise RuntimeError("anvil did not write its state dump")
    info.generation_seconds = round(time.monotonic() - started, 1)
    (tmp / "meta.json").write_text(json.dumps(asdict(info), indent=1))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return info


def cached_chain(params: ChainParams, say: Any = print) -> tuple[ChainInfo, Path, bool]:
    """The cache entry for params, generating it first if needed; returns (info, directory, generated)."""
    target = CACHE_DIR / fingerprint(params)
    if (target / "meta.json").exists() and (target / "state.json").exists() and (target / "model.pkl").exists():
        return read_info(target), target, False
    say(f"generating the benchmark chain into {target.relative_to(REPO)} (once) ...")
    return generate(params, target, say), target, True


def read_info(directory: Path) -> ChainInfo:
    raw = json.loads((directory / "meta.json").read_text())
    raw["block_logs"] = {int(k): v for k, v in raw["block_logs"].items()}
    return ChainInfo(**raw)


def read_model(directory: Path) -> ScenarioModel:
    with open(directory / "model.pkl", "rb") as fh:
        return pickle.load(fh)


def load_chain(directory: Path, info: ChainInfo) -> AnvilNode:
    """Start anvil on the cached state and check that the block history came back with it."""
    params = ChainParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.params.items()})
    node = start_anvil([*params.anvil_args(), "--load-state", str(directory / "state.json")], timeout=900)
    try:
        rpc = RawRpc(node.url)
        head = int(rpc.call("eth_blockNumber", []), 16)
        block = rpc.call("eth_getBlockByNumber", [hex(info.head), False])
        if head != info.head or block is None or block["hash"] != info.head_hash:
            raise RuntimeError(f"anvil --load-state did not restore the block history (head {head})")
        last = max(info.block_logs)
        logs = rpc.call(
            "eth_getLogs",
            [{"fromBlock": hex(last), "toBlock": hex(last), "address": list(info.addresses.values())}],
        )
        if len(logs) != info.block_logs[last]:
            want = info.block_logs[last]
            raise RuntimeError(f"anvil --load-state restored {len(logs)} of the {want} logs of block {last}")
        # Wall-clock time is behind the chain (the scenario jumps time forward): let new blocks and eth_call
        # continue from the head's time.
        rpc.call("evm_setTime", [int(block["timestamp"], 16) + 1])
    except BaseException:
        node.stop()
        raise
    return node


def deployment_for(w3: Web3, info: ChainInfo) -> Deployment:
    """The Deployment of a cached chain (no transactions sent)."""
    contracts = {
        role: w3.eth.contract(address=Web3.to_checksum_address(info.addresses[role]), abi=load_artifact(name)["abi"])
        for role, name in CONTRACT_NAMES.items()
    }
    return Deployment(
        w3=w3,
        committee=role_account("committee"),
        wrapper=role_account("wrapper"),
        pool_oracle=role_account("pool-oracle"),
        addresses={role: info.addresses[role] for role in ROLES},
        deploy_blocks={role: info.deploy_blocks[role] for role in ROLES},
        fee_policy_address=info.fee_policy_address,
        contracts=contracts,
    )
