"""Operations: CORS from config, per-client rate limits with RateLimit headers, health and readiness, metrics,
the OpenAPI document, access logs without addresses, and the `serve` command itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from indexer.serve import routes
from tests.support.anvil import free_port
from tests.support.serve import ServeThread
from tests.support.serve_scenario import ALICE, indexed_scenario

REPO = Path(__file__).resolve().parents[2]


def test_cors_preflight_and_exposed_headers(database_url):
    with (
        indexed_scenario(database_url) as scenario,
        ServeThread(scenario.config, cors_origins=["https://app.reservebtc.io"]) as serve,
    ):
        r = serve.client.options(
            "/rest/v1/transactions",
            headers={
                "Origin": "https://app.reservebtc.io",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "apikey, authorization, x-client-info, prefer, accept-profile",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.reservebtc.io"
        assert "GET" in r.headers["access-control-allow-methods"]
        assert "apikey" in r.headers["access-control-allow-headers"].lower()
        r = serve.client.get(
            "/api/realtime/balances", params={"address": ALICE}, headers={"Origin": "https://app.reservebtc.io"}
        )
        exposed = r.headers["access-control-expose-headers"].lower()
        for header in ("x-indexed-block", "x-indexed-block-hash", "x-data-version", "etag", "content-range"):
            assert header in exposed
        refused = serve.client.options(
            "/rest/v1/transactions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


def test_rate_limit_per_client_with_headers(database_url):
    with (
        indexed_scenario(database_url) as scenario,
        ServeThread(scenario.config, rate_limit_enabled=True, rate_limit="5/minute", trust_forwarded_for=True) as serve,
    ):
        path = "/api/realtime/proof-of-reserves"
        remaining = []
        for _ in range(5):
            r = serve.client.get(path, headers={"X-Forwarded-For": "203.0.113.7"})
            assert r.status_code == 200
            assert r.headers["ratelimit-limit"] == "5"
            remaining.append(int(r.headers["ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        r = serve.client.get(path, headers={"X-Forwarded-For": "203.0.113.7"})
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60 and r.json()["error"] == "rate limit exceeded"
        # Another client is not affected; health checks are never limited.
        assert serve.client.get(path, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
        for _ in range(8):
            assert serve.client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200


def test_health_readiness_metrics_and_openapi(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        assert serve.client.get("/healthz").json() == {"status": "ok", "listening": True}
        ready = serve.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert set(ready.json()["projections"]) == set(routes.ALL_PROJECTIONS)
        serve.client.get("/api/realtime/balances", params={"address": ALICE})
        metrics = serve.client.get("/metrics").text
        assert 'rbtc_api_request_seconds_count{method="GET",route="/api/realtime/balances",status="200"}' in metrics
        assert "rbtc_api_sse_clients" in metrics and "rbtc_api_push_lag_seconds" in metrics
        assert ALICE not in metrics
        doc = serve.client.get("/openapi.json").json()
        assert doc["openapi"].startswith("3.")
        for route in routes.ROUTES:
            assert route.path in doc["paths"]
        assert "/rest/v1/{table}" in doc["paths"] and "/api/realtime/stream" in doc["paths"]

        # Stale projections make the service unready (but still alive).
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE \"{scenario.config.database.schema_}\".sync_status SET updated_at = now() - interval '1 hour'"
            )
        stale = serve.client.get("/readyz")
        assert stale.status_code == 503 and any("last reported" in p for p in stale.json()["problems"])
        assert serve.client.get("/healthz").status_code == 200


def test_serve_command_runs_logs_without_addresses_and_stops_on_sigterm(database_url, tmp_path):
    with indexed_scenario(database_url) as scenario:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(
            '[chain]\nchain_id = 31337\nrpc_urls = ["http://127.0.0.1:1"]\n\n'
            f'[database]\nurl = "{database_url}"\nschema = "{scenario.config.database.schema_}"\n\n'
            '[api]\nlisten = "127.0.0.1:1"\ncors_origins = ["*"]\nstatement_timeout_ms = 1000\n\n'
            '[log]\nformat = "json"\nlevel = "info"\n\n'
            + "".join(
                f'[[contracts.{role}]]\naddress = "{a}"\nstart_block = 0\n\n'
                for role, a in __import__("tests.support.protocol_logs", fromlist=["x"]).ADDRESSES.items()
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "indexer", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/api/realtime/balances", params={"address": ALICE})
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    assert time.monotonic() < deadline, "serve did not answer"
                    time.sleep(0.1)
            assert r.status_code == 200 and r.json()["balance"] == str(scenario.last_sats(ALICE))
            # Bad input through the real server (uvloop, httptools) is a 400 too.
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/realtime/transactions", params={"address": ALICE, "limit": "5000"}
            )
            assert r.status_code == 400
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert ALICE not in err and ALICE not in out
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert "serve started" in [line["event"] for line in lines]
        requests = {(line["route"], line["status"]) for line in lines if line["event"] == "request"}
        assert {("/api/realtime/balances", 200), ("/api/realtime/transactions", 400)} <= requests


def test_reads_are_read_only_sessions(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config, statement_timeout_ms=1234) as serve:
        import asyncio

        async def settings():
            async with serve.state.db.snapshot() as snap:
                return await snap.row(
                    "SELECT current_setting('transaction_read_only') AS ro, "
                    "current_setting('statement_timeout') AS timeout, "
                    "current_setting('transaction_isolation') AS isolation"
                )

        future = asyncio.run_coroutine_threadsafe(settings(), serve.loop)
        row = future.result(timeout=10)
        assert row == {"ro": "on", "timeout": "1234ms", "isolation": "repeatable read"}


def test_table_counts_are_exact_when_small_and_estimated_when_large_before_any_analyze(database_url):
    """The status (and the `indexer` push topic, read after every block) must not count a large table row by row,
    also before the planner has ever analyzed it (right after a backfill its row count is unknown)."""
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        schema = scenario.config.database.schema_
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # synthetic rows: no undo journal trigger
            conn.execute(
                f'INSERT INTO "{schema}".transactions (tx_hash, log_index, block_number, block_timestamp, '
                "user_address, tx_type, amount, delta) "
                "SELECT '0x' || lpad(to_hex(i), 64, '0'), 0, i, now(), '0x' || lpad('ab', 40, '0'), 'MINT', 1, 1 "
                "FROM generate_series(1, 60000) AS i"
            )
            conn.execute("SELECT pg_stat_force_next_flush()")
            real = {
                t: conn.execute(f'SELECT count(*) FROM "{schema}".{t}').fetchone()[0]
                for t in ("transactions", "balances", "emergency_burns")
            }
        status = serve.client.get("/api/status").json()
        assert "transactions" in status["tableCountsEstimated"]
        assert 0.5 * real["transactions"] <= status["tableCounts"]["transactions"] <= 1.5 * real["transactions"]
        assert {"balances", "emergency_burns"}.isdisjoint(status["tableCountsEstimated"])
        assert status["tableCounts"]["balances"] == real["balances"]
        assert status["tableCounts"]["emergency_burns"] == real["emergency_burns"]
