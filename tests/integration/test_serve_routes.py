"""The upstream-compatible routes: JSON shapes (types included) from reference §5, values from what the scenario
did, totals as exact aggregates, consistency headers, and bad input answered 4xx, never 500."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.serve import ServeThread
from tests.support.serve_scenario import ALICE, BOB, CAROL, DAVE, NOBODY, Scenario, indexed_scenario
from tests.support.shapes import assert_shape


@pytest.fixture(scope="module")
def served(request):
    database_url = request.getfixturevalue("database_url")
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        yield scenario, serve


def table(scenario: Scenario, query: str, params: tuple = ()) -> list[dict]:
    with psycopg.connect(scenario.config.database.url, row_factory=dict_row) as conn:
        conn.execute(f'SET search_path TO "{scenario.config.database.schema_}"')
        return conn.execute(query, params).fetchall()


def head_block(scenario: Scenario) -> tuple[int, str]:
    head = scenario.chain.canonical_blocks()[-1]
    number = head["number"]
    return (int(number, 16) if isinstance(number, str) else int(number)), head["hash"]


def test_every_response_names_the_head_block_it_reflects(served):
    scenario, serve = served
    number, block_hash = head_block(scenario)
    for path in (
        f"/api/realtime/balances?address={ALICE}",
        "/api/realtime/proof-of-reserves",
        f"/api/realtime/transactions?address={ALICE}",
        "/api/oracle/operations",
        f"/rest/v1/balances?user_address=eq.{ALICE}",
    ):
        r = serve.client.get(path)
        assert r.status_code == 200, path
        assert int(r.headers["x-indexed-block"]) == number, path
        assert r.headers["x-indexed-block-hash"] == block_hash, path
        assert int(r.headers["x-data-version"]) > 0
        assert r.headers["etag"].startswith('W/"')


def test_balances_shape_and_values(served):
    scenario, serve = served
    for user in (ALICE, BOB, CAROL, DAVE, NOBODY):
        r = serve.client.get("/api/realtime/balances", params={"address": user.upper().replace("0X", "0x")})
        body = r.json()
        assert_shape(body, "balances")
        sats = scenario.last_sats(user)
        assert body["success"] is True and body["source"] == "oracle_contract"
        assert body["address"] == user
        assert body["balance"] == str(sats) and body["oracleSats"] == sats
        assert body["btc"] == f"{Decimal(sats) / Decimal(10**8):.8f}"
        assert body["blockNumber"] == r.headers["x-indexed-block"] == str(body["_block"])


def test_balances_without_or_with_a_bad_address_is_400(served):
    _, serve = served
    r = serve.client.get("/api/realtime/balances")
    assert r.status_code == 400 and r.json() == {"error": "Address parameter is required"}
    for bad in ("0x12", "0x" + "zz" * 20, "1" * 42, "' OR 1=1 --"):
        r = serve.client.get("/api/realtime/balances", params={"address": bad})
        assert r.status_code == 400 and "Invalid address" in r.json()["error"]


def test_transactions_are_the_users_rows_newest_first_with_upstream_types(served):
    scenario, serve = served
    r = serve.client.get("/api/realtime/transactions", params={"address": ALICE})
    body = r.json()
    assert isinstance(body, list)
    rows = table(
        scenario,
        "SELECT * FROM transactions WHERE user_address = %s "
        "ORDER BY block_timestamp DESC, block_number DESC, log_index DESC",
        (ALICE,),
    )
    # Alice deposited once and synced twice.
    assert [a.kind for a in scenario.actions if a.user == ALICE] == ["deposit", "sync", "sync"]
    assert len(body) == len(rows) == 3
    for got, row in zip(body, rows, strict=True):
        assert_shape(got, "transaction")
        assert got == {
            "tx_hash": row["tx_hash"],
            "block_number": row["block_number"],
            "block_timestamp": row["block_timestamp"].isoformat(),
            "user_address": row["user_address"],
            "tx_type": row["tx_type"],
            "amount": str(row["amount"]),
            "delta": str(row["delta"]),
            "fee_wei": str(row["fee_wei"]),
            "bitcoin_address": row["bitcoin_address"],
            "gas_used": row["gas_used"],
            "gas_price": None if row["gas_price"] is None else str(row["gas_price"]),
            "status": row["status"],
            "metadata": row["metadata"],
        }
    assert [t["tx_type"] for t in body] == ["MINT", "MINT", "DEPOSIT"]
    assert body[0]["amount"] == "3000" and body[1]["amount"] == "5000" and body[2]["amount"] == str(10**16)


def test_transactions_limit_offset_and_post_body(served):
    scenario, serve = served
    everything = serve.client.get("/api/realtime/transactions", params={"address": ALICE}).json()
    page = serve.client.get("/api/realtime/transactions", params={"address": ALICE, "limit": 1, "offset": 1}).json()
    assert page == [everything[1]]
    posted = serve.client.post("/api/realtime/transactions", json={"userAddress": ALICE, "limit": 2}).json()
    assert posted == everything[:2]
    posted = serve.client.post("/api/realtime/transactions", json={"address": ALICE}).json()
    assert posted == everything
    assert serve.client.get("/api/realtime/transactions", params={"address": NOBODY}).json() == []


@pytest.mark.parametrize(
    "params",
    [{"limit": 10_000}, {"limit": 0}, {"limit": "ten"}, {"offset": -1}, {"limit": "1; DROP TABLE transactions"}],
)
def test_transactions_bad_paging_is_400(served, params):
    _, serve = served
    r = serve.client.get("/api/realtime/transactions", params={"address": ALICE, **params})
    assert r.status_code == 400
    assert set(r.json()) == {"error"}


def test_transactions_post_with_a_broken_body_is_400(served):
    _, serve = served
    r = serve.client.post(
        "/api/realtime/transactions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = serve.client.post("/api/realtime/transactions", json=[ALICE])
    assert r.status_code == 400


def test_emergency_burns_and_the_exact_system_total(served):
    scenario, serve = served
    body = serve.client.get("/api/realtime/emergency-burns", params={"address": BOB}).json()
    assert_shape(body, "emergency_burns")
    burns = [a for a in scenario.actions if a.kind == "emergency"]
    assert body["data"]["totalSystemBurns"] == sum(a.amount for a in burns) == 2300
    assert body["data"]["hasEmergencyBurns"] is True
    [burn] = body["data"]["userBurns"]
    assert_shape(burn, "emergency_burn_row")
    assert burn["burned_amount"] == 2000 and burn["user_address"] == BOB and burn["reason"] == "Insufficient fees"
    [tx] = body["data"]["emergencyTransactions"]
    assert_shape(tx, "transaction")
    assert tx["tx_hash"] == burn["tx_hash"] and tx["tx_type"] == "BURN" and tx["amount"] == "2000"
    none = serve.client.get("/api/realtime/emergency-burns", params={"address": ALICE}).json()
    assert none["data"]["userBurns"] == [] and none["data"]["hasEmergencyBurns"] is False
    assert none["data"]["totalSystemBurns"] == 2300


def test_yield_status_and_participant(served):
    scenario, serve = served
    bob = serve.client.get("/api/realtime/yield-status", params={"address": BOB}).json()
    assert_shape(bob, "yield_status")
    joins = [a for a in scenario.actions if a.kind == "join"]
    assert bob["isParticipant"] is True
    assert bob["participantData"]["participant_type"] == 1 and bob["participantData"]["user_address"] == BOB
    assert bob["systemStats"] == {
        "totalParticipants": len(joins),
        "bitcoinHolders": sum(a.participant_type == 0 for a in joins),
        "traders": sum(a.participant_type == 1 for a in joins),
        "bronzeTier": len(joins),
        "silverTier": 0,
        "goldTier": 0,
    }
    assert bob["currentBalance"] == scenario.rbtc(BOB) == 0 and bob["isEligible"] is False
    alice = serve.client.get("/api/realtime/yield-status", params={"address": ALICE}).json()
    assert alice["isParticipant"] is False and alice["participantData"] is None
    assert alice["currentBalance"] == scenario.rbtc(ALICE) == 8000 and alice["isEligible"] is True

    joined = serve.client.get("/api/yield-scales/participant", params={"address": BOB}).json()
    assert_shape(joined, "participant_joined")
    assert joined["participantType"] == 1 and joined["yieldClaimed"] == 0.0 and joined["yieldEarned"] == 0.0
    absent = serve.client.get("/api/yield-scales/participant", params={"address": ALICE}).json()
    assert_shape(absent, "participant_absent")
    assert absent["eligibleToJoin"] is True
    assert (
        serve.client.get("/api/yield-scales/participant", params={"address": NOBODY}).json()["eligibleToJoin"] is False
    )


def test_proof_of_reserves_totals_every_user(served):
    scenario, serve = served
    body = serve.client.get("/api/realtime/proof-of-reserves").json()
    assert_shape(body, "proof_of_reserves")
    users = scenario.users()
    total_rbtc = sum(scenario.rbtc(u) for u in users)
    total_sats = sum(scenario.last_sats(u) for u in users)
    totals = body["data"]["currentTotals"]
    assert totals["totalRBTC"] == total_rbtc and totals["totalSats"] == total_sats
    assert totals["backingRatio"] == f"{Decimal(total_rbtc) / Decimal(total_sats) * 100:.2f}"


def test_sync_status_from_the_users_last_sync(served):
    scenario, serve = served
    body = serve.client.get("/api/realtime/sync-status", params={"address": ALICE}).json()
    assert_shape(body, "sync_status")
    assert body["synced"] is True and body["userRegistered"] is True
    # The simulated chain's clock is in 2023: Alice's last sync is old.
    assert body["status"] == "stale" and body["isRecent"] is False
    last = datetime.fromisoformat(body["lastSync"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - last).total_seconds() * 1000 - body["syncAge"]) < 60_000
    nobody = serve.client.get("/api/realtime/sync-status", params={"address": NOBODY}).json()
    assert_shape(nobody, "sync_status")
    assert nobody["status"] == "not_registered" and nobody["userRegistered"] is False


def test_bitcoin_addresses_without_the_off_chain_table(served):
    _, serve = served
    body = serve.client.get("/api/realtime/bitcoin-addresses", params={"address": ALICE}).json()
    assert_shape(body, "bitcoin_addresses")
    assert body["ethAddress"] == ALICE and body["bitcoinAddresses"] == [] and body["count"] == 0


def test_oracle_operations_and_stats(served):
    scenario, serve = served
    syncs = [a for a in scenario.actions if a.kind == "sync"]
    emergencies = [a for a in scenario.actions if a.kind == "emergency"]
    body = serve.client.get("/api/oracle/operations").json()
    assert_shape(body, "operations")
    for op in body["operations"]:
        assert_shape(op, "operation")
        assert op["user_address"] == op["amount"] == op["tx_hash"] == "encrypted"
    assert body["stats"]["total"] == len(syncs) + len(emergencies) == len(body["operations"])
    assert body["stats"]["mints"] == sum(a.amount > 0 for a in syncs)
    assert body["stats"]["burns"] == sum(a.amount < 0 for a in syncs)
    assert body["pagination"] == {"limit": 50, "offset": 0, "total": 0, "hasMore": False}
    mints = serve.client.get("/api/oracle/operations", params={"filter": "mint", "limit": 2}).json()
    assert [o["action"] for o in mints["operations"]] == ["MINT", "MINT"]
    assert mints["pagination"]["hasMore"] is True
    times = [o["timestamp"] for o in body["operations"]]
    assert times == sorted(times, reverse=True)
    public = serve.client.get("/api/oracle/public-operations").json()
    assert_shape(public, "public_operations")
    for op in public["operations"]:
        assert_shape(op, "public_operation")
    assert public["stats"]["total_operations"] == body["stats"]["total"]
    assert [o["action"] for o in public["operations"]] == [o["action"] for o in body["operations"]][:20]


@pytest.mark.parametrize("params", [{"filter": "MINT' OR '1'='1"}, {"limit": 101}, {"offset": "x"}])
def test_oracle_operations_bad_input_is_400(served, params):
    _, serve = served
    r = serve.client.get("/api/oracle/operations", params=params)
    assert r.status_code == 400 and set(r.json()) == {"error"}


def test_unknown_route_is_404_and_bad_min_block_is_400(served):
    _, serve = served
    assert serve.client.get("/api/realtime/nothing").status_code == 404
    r = serve.client.get("/api/realtime/balances", params={"address": ALICE, "min_block": "-1"})
    assert r.status_code == 400 and "min_block" in r.json()["error"]
    r = serve.client.get("/api/realtime/balances", params={"address": ALICE}, headers={"X-Min-Block": "abc"})
    assert r.status_code == 400


def test_bitcoin_addresses_from_a_configured_table(database_url):
    with indexed_scenario(database_url) as scenario:
        schema = scenario.config.database.schema_
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                f'CREATE TABLE "{schema}".bitcoin_addresses (id serial PRIMARY KEY, eth_address text, '
                "bitcoin_address text, network text, verified_at timestamptz, monitoring_started_at timestamptz, "
                "is_monitoring boolean, created_at timestamptz)"
            )
            for i, created in enumerate(("2025-09-01", "2025-09-03", "2025-09-02")):
                conn.execute(
                    f'INSERT INTO "{schema}".bitcoin_addresses (eth_address, bitcoin_address, network, '
                    "is_monitoring, created_at) VALUES (%s, %s, 'testnet', true, %s)",
                    (ALICE, f"tb1q{i}", created),
                )
        with ServeThread(scenario.config, bitcoin_addresses_table="bitcoin_addresses") as serve:
            body = serve.client.get("/api/realtime/bitcoin-addresses", params={"address": ALICE}).json()
            assert_shape(body, "bitcoin_addresses")
            assert [r["bitcoin_address"] for r in body["bitcoinAddresses"]] == ["tb1q1", "tb1q2", "tb1q0"]
            assert body["count"] == 3
            assert set(body["bitcoinAddresses"][0]) == {
                "id",
                "eth_address",
                "bitcoin_address",
                "network",
                "verified_at",
                "monitoring_started_at",
                "is_monitoring",
                "created_at",
            }
