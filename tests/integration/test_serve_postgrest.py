"""The /rest/v1 subset driven by the real supabase-js client (@supabase/postgrest-js, run with node), each answer
compared with the same question asked of PostgreSQL directly; plus bad input, caps and writes."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.serve import ServeThread
from tests.support.serve_scenario import ALICE, NOBODY, indexed_scenario

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "support" / "supabase_reads.cjs"


def plain(value):
    """A row value as JSON carries it."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@pytest.fixture(scope="module")
def served(request):
    database_url = request.getfixturevalue("database_url")
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config, max_rows=50) as serve:
        yield scenario, serve


@pytest.fixture(scope="module")
def reads(served):
    _, serve = served
    done = subprocess.run(
        ["node", str(SCRIPT), serve.url, ALICE, NOBODY],
        cwd=REPO / ".tools",
        capture_output=True,
        text=True,
        timeout=60,
        env={"NODE_PATH": str(REPO / ".tools" / "node_modules"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sql(scenario, query, params=()):
    with psycopg.connect(scenario.config.database.url, row_factory=dict_row) as conn:
        conn.execute(f'SET search_path TO "{scenario.config.database.schema_}"')
        return [{k: plain(v) for k, v in r.items()} for r in conn.execute(query, params).fetchall()]


def test_history_query_string_and_rows(served, reads):
    scenario, _ = served
    read = reads["history"]
    [request] = read["sent"]
    assert request["url"].endswith(
        f"/rest/v1/transactions?select=*&user_address=eq.{ALICE}&order=block_timestamp.desc&offset=0&limit=10"
    )
    assert read["error"] is None and read["status"] == 200
    expected = sql(
        scenario, "SELECT * FROM transactions WHERE user_address = %s ORDER BY block_timestamp DESC LIMIT 10", (ALICE,)
    )
    assert read["data"] == expected
    assert len(expected) == 3


def test_single_object_and_pgrst116(served, reads):
    scenario, _ = served
    single = reads["single"]
    assert single["sent"][0]["headers"]["accept"] == "application/vnd.pgrst.object+json"
    [row] = sql(scenario, "SELECT * FROM balances WHERE user_address = %s", (ALICE,))
    assert single["data"] == row and single["error"] is None
    missing = reads["singleMissing"]
    assert missing["status"] == 406 and missing["data"] is None
    assert missing["error"]["code"] == "PGRST116"
    assert missing["error"]["details"] == "The result contains 0 rows"
    maybe = reads["maybeMissing"]
    assert maybe["data"] is None and maybe["error"] is None


def test_exact_counts(served, reads):
    scenario, _ = served
    [total] = sql(scenario, "SELECT count(*) AS n FROM transactions WHERE user_address = %s", (ALICE,))
    head = reads["countHead"]
    assert head["sent"][0]["method"] == "HEAD" and head["sent"][0]["headers"]["prefer"] == "count=exact"
    assert head["count"] == total["n"] == 3 and head["data"] is None
    [everything] = sql(scenario, "SELECT count(*) AS n FROM transactions")
    rows = reads["countRows"]
    assert rows["count"] == everything["n"] and len(rows["data"]) == 2


def test_filters(served, reads):
    scenario, _ = served
    assert reads["inList"]["data"] == sql(
        scenario,
        "SELECT tx_hash, tx_type, log_index FROM transactions WHERE tx_type IN ('MINT', 'BURN') "
        "ORDER BY block_number, log_index",
    )
    assert (
        reads["inList"]["sent"][0]["url"].count("tx_type=in.%28MINT%2CBURN%29")
        + reads["inList"]["sent"][0]["url"].count("tx_type=in.(MINT,BURN)")
        == 1
    )
    assert reads["isNull"]["data"] == sql(
        scenario,
        "SELECT tx_hash, log_index FROM transactions WHERE bitcoin_address IS NULL ORDER BY tx_hash, log_index LIMIT 3",
    )
    assert reads["range"]["data"] == sql(
        scenario,
        "SELECT user_address, last_sats FROM balances WHERE last_sats > 0 AND last_sats <= 5000 ORDER BY user_address",
    )
    assert reads["range"]["data"], "the scenario has balances in that range"
    assert reads["neq"]["data"] == sql(
        scenario,
        "SELECT user_address, burned_amount FROM emergency_burns WHERE user_address <> %s ORDER BY user_address",
        (ALICE,),
    )


def test_writes_and_unknown_names(reads):
    for name in ("insert", "update"):
        assert reads[name]["status"] == 405 and reads[name]["error"]["message"]
    assert reads["unknownColumn"]["status"] == 400
    assert reads["unknownColumn"]["error"]["code"] == "42703"
    assert reads["unknownTable"]["status"] == 404
    assert reads["unknownTable"]["error"]["code"] == "PGRST205"


@pytest.mark.parametrize(
    "query",
    [
        "select=*&user_address=eq.x'%20OR%201=1",  # a value is data, never SQL: no match, no error
    ],
)
def test_sql_looking_values_are_values(served, query):
    _, serve = served
    r = serve.client.get(f"/rest/v1/transactions?{query}")
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("select=tx_hash;drop%20table%20transactions", 400, "PGRST100"),
        ("select=*&order=tx_hash.sideways", 400, "PGRST100"),
        ("select=*&block_number=gt.abc", 400, "22P02"),
        ("select=*&block_number=between.1", 400, "PGRST100"),
        ("select=*&bitcoin_address=is.maybe", 400, "PGRST100"),
        ("select=*&limit=-5", 400, "PGRST100"),
        ('select=*&"user_address"=eq.1', 400, "42703"),
        ("select=*&tx_type=in.MINT", 400, "PGRST100"),
    ],
)
def test_bad_rest_input_is_4xx_with_a_postgrest_body(served, query, status, code):
    _, serve = served
    r = serve.client.get(f"/rest/v1/transactions?{query}")
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "details", "hint", "message"} and body["code"] == code and body["message"]


def test_max_rows_caps_every_answer_and_content_range(served):
    scenario, serve = served
    [total] = sql(scenario, "SELECT count(*) AS n FROM transactions")
    r = serve.client.get("/rest/v1/transactions?select=tx_hash&limit=100000", headers={"Prefer": "count=exact"})
    assert r.status_code == 200
    assert len(r.json()) == min(50, total["n"])
    assert r.headers["content-range"] == f"0-{len(r.json()) - 1}/{total['n']}"
    r = serve.client.get("/rest/v1/transactions?select=tx_hash&limit=2&offset=1")
    assert r.headers["content-range"] == "1-2/*"
    r = serve.client.get(f"/rest/v1/transactions?user_address=eq.{NOBODY}", headers={"Prefer": "count=exact"})
    assert r.json() == [] and r.headers["content-range"] == "*/0"


def test_the_view_and_status_tables_are_readable(served):
    scenario, serve = served
    r = serve.client.get(f"/rest/v1/balance_snapshots?user_address=eq.{ALICE}&select=user_address,rbtc_balance")
    assert r.json() == sql(
        scenario, "SELECT user_address, rbtc_balance FROM balance_snapshots WHERE user_address = %s", (ALICE,)
    )
    r = serve.client.get("/rest/v1/sync_status?select=component&order=component")
    assert r.json() == sql(scenario, "SELECT component FROM sync_status ORDER BY component")
    # Internal tables are not exposed.
    for hidden in ("stored_events", "undo_journal", "follower_cursor", "read_changes"):
        assert serve.client.get(f"/rest/v1/{hidden}").status_code == 404
