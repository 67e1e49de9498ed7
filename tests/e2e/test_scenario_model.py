"""The scenario model agrees with the chain itself: contract views, decoded logs, and after a reorg."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from web3 import Web3

from tests.support.anvil import AnvilNode, start_anvil
from tests.support.model import ZERO, ScenarioModel
from tests.support.scenario import Deployment, ScenarioDriver

STEPS = 60
USERS = 6


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    anvil = start_anvil()
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture(scope="module")
def scenario(node: AnvilNode) -> tuple[Web3, Deployment, ScenarioDriver]:
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    driver = ScenarioDriver(w3, deployment, seed=7, users=USERS)
    driver.run_cases()
    driver.run(STEPS)
    return w3, deployment, driver


def assert_views_match(deployment: Deployment, model: ScenarioModel) -> None:
    """Per-user contract views equal the model's balances rows and simulated storage."""
    c = deployment.contracts
    tables = model.expected_tables()
    for row in tables["balances"]:
        user = Web3.to_checksum_address(row["user_address"])
        assert c["oracle_aggregator"].functions.lastSats(user).call() == row["last_sats"]
        assert c["rbtc_synth"].functions.balanceOf(user).call() == row["rbtc_balance"]
        assert c["vault_wrbtc"].functions.balanceOf(user).call() == row["wrbtc_balance"]
        assert c["fee_vault"].functions.balanceOf(user).call() == row["fee_vault_wei"]
        assert row["rbtc_balance"] == row["last_sats"]
    assert c["rbtc_synth"].functions.totalSupply().call() == sum(r["rbtc_balance"] for r in tables["balances"])
    for row in tables["yield_scales_participants"]:
        user = Web3.to_checksum_address(row["user_address"])
        p = c["yield_scales_pool"].functions.participants(user).call()
        assert (p[0], p[1], p[2], p[4], p[5], p[6], p[7], p[8]) == (
            row["participant_type"],
            row["virtual_usdt"],
            row["rbtc_contributed"],
            row["yield_claimed"],
            row["joined_at"],
            row["last_activity_at"],
            row["loyalty_tier"],
            row["is_active"],
        )
        assert c["yield_scales_pool"].functions.isDisputed(user).call() == row["is_disputed"]


def assert_storage_matches(deployment: Deployment, driver: ScenarioDriver, model: ScenarioModel) -> None:
    """The simulator's full storage equals the contracts' storage for every user."""
    c = deployment.contracts
    state = model.expected_state()
    for account in driver.users:
        user, key = account.address, account.address.lower()
        assert c["oracle_aggregator"].functions.lastSats(user).call() == state.last_sats.get(key, 0)
        assert c["rbtc_synth"].functions.balanceOf(user).call() == state.synth.get(key, 0)
        assert c["fee_vault"].functions.balanceOf(user).call() == state.fee.get(key, 0)
        assert c["vault_wrbtc"].functions.balanceOf(user).call() == state.wr.get(key, 0)
        p = c["yield_scales_pool"].functions.participants(user).call()
        sim = state.participants.get(key)
        if sim is None:
            assert p[8] is False
        else:
            expected = (sim["type"], sim["vusdt"], sim["contrib"], sim["claimed"], sim["joined"], sim["last"])
            assert (p[0], p[1], p[2], p[4], p[5], p[6], p[7], p[8]) == (*expected, sim["tier"], bool(sim["exists"]))
        assert c["yield_scales_pool"].functions.isDisputed(user).call() == state.disputed.get(key, False)


def decoded_logs(w3: Web3, deployment: Deployment) -> list[tuple[str, Any]]:
    """All logs of the five contracts, decoded with the test artifacts' ABIs, as (role, event)."""
    by_address = {addr: role for role, addr in deployment.addresses.items()}
    raw = w3.eth.get_logs(
        {
            "fromBlock": deployment.start_block,
            "toBlock": "latest",
            "address": [Web3.to_checksum_address(a) for a in deployment.addresses.values()],
        }
    )
    out = []
    for log in raw:
        role = by_address[log["address"].lower()]
        contract = deployment.contracts[role]
        topic = log["topics"][0]
        for event in contract.events:
            if event.topic == "0x" + bytes(topic).hex():
                out.append((role, event.process_log(log)))
                break
        else:
            raise AssertionError(f"unknown log {log}")
    return out


def rows_from_logs(w3: Web3, deployment: Deployment) -> dict[str, list[dict[str, Any]]]:
    """Transactions, emergency burns and balances rebuilt directly from decoded logs."""
    logs = decoded_logs(w3, deployment)
    # The emergency Synced is the next Synced of the burned user in the same transaction (reference §4.5).
    emergency_positions: set[tuple[str, int]] = set()
    pending: set[tuple[str, str]] = set()
    for role, e in logs:
        if role != "oracle_aggregator":
            continue
        key = ("0x" + bytes(e["transactionHash"]).hex(), e["args"]["user"].lower())
        if e["event"] == "EmergencyBurn":
            pending.add(key)
        elif e["event"] == "Synced" and key in pending:
            pending.discard(key)
            emergency_positions.add((key[0], e["logIndex"]))
    times: dict[int, int] = {}
    txs, burns = [], []
    balances: dict[str, dict[str, int]] = {}

    def bal(user: str) -> dict[str, int]:
        return balances.setdefault(user.lower(), {"rbtc": 0, "wr": 0, "fee": 0, "last": 0})

    for role, ev in logs:
        block = ev["blockNumber"]
        if block not in times:
            times[block] = int(w3.eth.get_block(block)["timestamp"])
        tx_hash = "0x" + bytes(ev["transactionHash"]).hex()
        a, name = ev["args"], ev["event"]
        base = {"tx_hash": tx_hash, "log_index": ev["logIndex"], "block_number": block}
        kind = {
            ("oracle_aggregator", "Synced"): "SYNC",
            ("fee_vault", "Deposited"): "DEPOSIT",
            ("fee_vault", "Withdrawn"): "WITHDRAW",
            ("vault_wrbtc", "Wrapped"): "WRAP",
            ("vault_wrbtc", "Redeemed"): "UNWRAP",
        }.get((role, name))
        if kind == "SYNC":
            kind = "MINT" if a["deltaSats"] > 0 else "BURN"
            txs.append({**base, "user": a["user"].lower(), "type": kind, "delta": a["deltaSats"]})
            assert a["timestamp"] == times[block] and a["height"] == 0
            bal(a["user"])["last"] = a["newBalanceSats"]
        elif kind is not None:
            sign = -1 if kind in ("WITHDRAW", "UNWRAP") else 1
            txs.append({**base, "user": a["user"].lower(), "type": kind, "delta": sign * a["amount"]})
        if name == "EmergencyBurn":
            burns.append({**base, "user": a["user"].lower(), "amount": a["burnedAmount"], "reason": a["reason"]})
        if name == "Transfer":
            field = "rbtc" if role == "rbtc_synth" else "wr"
            if a["from"].lower() != ZERO:
                bal(a["from"])[field] -= a["amount"]
            if a["to"].lower() != ZERO:
                bal(a["to"])[field] += a["amount"]
        if role == "fee_vault":
            bal(a["user"])["fee"] += a["amount"] if name == "Deposited" else -a["amount"]
            if name == "Spent":
                assert a["by"].lower() == deployment.addresses["oracle_aggregator"]
    for row in txs:
        row["emergency"] = (row["tx_hash"], row["log_index"]) in emergency_positions
    return {
        "transactions": txs,
        "emergency_burns": burns,
        "balances": [{"user": u, **b} for u, b in balances.items()],
    }


def assert_logs_match(w3: Web3, deployment: Deployment, model: ScenarioModel) -> None:
    """The model's rows equal rows rebuilt from the real logs, position by position."""
    actual = rows_from_logs(w3, deployment)
    tables = model.expected_tables()
    got_txs = [
        {
            "tx_hash": r["tx_hash"],
            "log_index": r["log_index"],
            "block_number": r["block_number"],
            "user": r["user_address"],
            "type": r["tx_type"],
            "delta": r["delta"],
            "emergency": r["is_emergency_burn"],
        }
        for r in tables["transactions"]
    ]
    key = lambda r: (r["block_number"], r["log_index"])  # noqa: E731
    assert got_txs == sorted(actual["transactions"], key=key)
    got_burns = [
        {
            "tx_hash": r["tx_hash"],
            "log_index": r["log_index"],
            "block_number": r["block_number"],
            "user": r["user_address"],
            "amount": r["burned_amount"],
            "reason": r["reason"],
        }
        for r in tables["emergency_burns"]
    ]
    assert got_burns == sorted(actual["emergency_burns"], key=key)
    got_bal = {
        r["user_address"]: (r["rbtc_balance"], r["wrbtc_balance"], r["fee_vault_wei"], r["last_sats"])
        for r in tables["balances"]
    }
    assert got_bal == {b["user"]: (b["rbtc"], b["wr"], b["fee"], b["last"]) for b in actual["balances"]}
    for row in tables["transactions"]:
        assert row["amount"] == abs(row["delta"]) and row["status"] == "confirmed"


def test_scenario_covers_activity(scenario: tuple[Web3, Deployment, ScenarioDriver]) -> None:
    _, _, driver = scenario
    tables = driver.model.expected_tables()
    assert len(driver.model.actions) >= STEPS
    assert any(a.status == 0 for a in driver.model.actions.values())
    assert {r["tx_type"] for r in tables["transactions"]} >= {"MINT", "BURN", "DEPOSIT"}
    assert tables["balances"] and tables["yield_scales_participants"]
    assert {r["operation_type"] for r in tables["oracle_operations_log"]} >= {"MINT"}


def test_model_matches_contract_views(scenario: tuple[Web3, Deployment, ScenarioDriver]) -> None:
    _, deployment, driver = scenario
    assert_views_match(deployment, driver.model)
    assert_storage_matches(deployment, driver, driver.model)


def test_model_matches_decoded_logs(scenario: tuple[Web3, Deployment, ScenarioDriver]) -> None:
    w3, deployment, driver = scenario
    assert_logs_match(w3, deployment, driver.model)


def test_model_follows_reorg_and_keeps_driving(node: AnvilNode) -> None:
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    driver = ScenarioDriver(w3, deployment, seed=11, users=4, multi_tx_block_chance=0.4)
    driver.run(30)
    w3.provider.make_request("anvil_reorg", [4, []])
    counts = driver.model.recheck_canonical(w3)
    assert counts["dropped"] > 0
    assert_views_match(deployment, driver.model)
    driver.run(15)
    driver.model.recheck_canonical(w3)
    assert_storage_matches(deployment, driver, driver.model)
    assert_logs_match(w3, deployment, driver.model)


def test_every_tricky_case_occurs(scenario: tuple[Web3, Deployment, ScenarioDriver]) -> None:
    """Each case the tables must get right happened at least once in the generated history."""
    _, _, driver = scenario
    model = driver.model
    ok = [a for a in model.canonical_actions() if a.status == 1]
    tables = model.expected_tables()
    txs = tables["transactions"]
    by_tx: dict[str, list[dict[str, Any]]] = {}
    for row in txs:
        by_tx.setdefault(row["tx_hash"], []).append(row)
    mixed = [
        rows
        for rows in by_tx.values()
        if any(r["is_emergency_burn"] for r in rows)
        and any(not r["is_emergency_burn"] and r["tx_type"] in ("MINT", "BURN") for r in rows)
    ]
    kinds_of_mixed = {next(a.kind for a in ok if a.tx_hash == rows[0]["tx_hash"]) for rows in mixed}
    assert {"sync_batch", "multicall"} <= kinds_of_mixed, kinds_of_mixed  # automatic and manual path
    manual_in_batch = [
        a
        for a in ok
        if a.kind == "multicall"
        and any(k == "emergency" for k, _ in a.params["calls"])
        and any(k == "sync" for k, _ in a.params["calls"])
    ]
    assert manual_in_batch
    # Leaving, then joining again as each type.
    history: dict[str, list[tuple[str, int | None]]] = {}
    for a in ok:
        if a.kind in ("join_holder", "join_trader", "leave"):
            history.setdefault(a.params["user"], []).append((a.kind, None))
    rejoined = {
        kind
        for events in history.values()
        for (prev, _), (kind, _) in zip(events, events[1:], strict=False)
        if prev == "leave" and kind.startswith("join")
    }
    assert rejoined == {"join_holder", "join_trader"}
    updates = [a.params["amount"] for a in ok if a.kind == "update_contribution"]
    assert any(x > 0 for x in updates) and 0 in updates
    assert any(a.kind == "dispute" for a in ok) and any(a.kind == "resolve" for a in ok)
    assert any(a.kind == "prepay" for a in ok)
    assert any(r["operation_type"] == "DEPOSIT" for r in tables["oracle_operations_log"])
    synced = {r["user_address"] for r in txs if r["tx_type"] in ("MINT", "BURN")}
    depositors = {r["user_address"] for r in txs if r["tx_type"] == "DEPOSIT"}
    spenders = {a.params["user"] for a in ok if a.kind == "collect_fee"}
    assert depositors - synced - spenders, "no user appears only in Deposited"
    assert spenders - synced, "no user has fees spent without a sync"
    assert any(r["loyalty_tier"] > 0 for r in tables["yield_scales_participants"]) or any(
        a.kind == "update_contribution" for a in ok
    )
