"""Comparing the indexer's read tables with the scenario model's expected tables."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from web3 import Web3

from tests.support.tables import TABLE_KEYS, read_tables, table_columns


def assert_model_covers_every_column(database_url: str, schema: str, expected: dict[str, list[dict[str, Any]]]) -> None:
    """The model predicts every column of every table it has rows for: none is left out of a comparison."""
    columns = table_columns(database_url, schema)
    for table, rows in expected.items():
        for row in rows:
            assert set(row) == columns[table], (
                f"{table}: the model's columns differ from the table's: "
                f"model only {sorted(set(row) - columns[table])}, table only {sorted(columns[table] - set(row))}"
            )


def tables_for_model(database_url: str, schema: str, expected: dict[str, list[dict[str, Any]]]) -> dict[str, list]:
    """Every read table, every column, sorted like the model's rows."""
    actual = read_tables(database_url, schema)
    return {table: actual[table] for table in expected}


def sorted_model(expected: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The model's rows in primary-key order."""
    return {
        table: sorted(rows, key=lambda r, keys=TABLE_KEYS[table]: tuple(r[k] for k in keys))
        for table, rows in expected.items()
    }


def assert_tables_match_model(database_url: str, schema: str, expected: dict[str, list[dict[str, Any]]]) -> None:
    """Every table equals the model, row for row and value for value."""
    assert_model_covers_every_column(database_url, schema, expected)
    want = sorted_model(expected)
    got = tables_for_model(database_url, schema, expected)
    for table in want:
        assert got[table] == want[table], f"{table} differs from the model:\n{_diff(got[table], want[table])}"


def _diff(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    """The rows only one side has (first few), for a readable failure."""
    extra = [r for r in got if r not in want][:5]
    missing = [r for r in want if r not in got][:5]
    return f"in the table but not the model: {extra}\nin the model but not the table: {missing}"


def assert_every_log_stored_once(
    database_url: str, schema: str, w3: Web3, addresses: list[str], start: int, head: int
) -> None:
    """The store holds every watched log of the chain up to `head` exactly once: no duplicate, no gap."""
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            f"""SELECT count(*), count(DISTINCT (l->>'block_hash', l->>'log_index'))
                FROM "{schema}".stored_events, jsonb_array_elements(convert_from(state, 'UTF8')::jsonb->'logs') l"""
        ).fetchone()
    emitters = [Web3.to_checksum_address(a) for a in addresses]
    on_chain = len(w3.eth.get_logs({"fromBlock": start, "toBlock": head, "address": emitters}))
    assert stored == (on_chain, on_chain), f"stored (logs, distinct logs) {stored}, on chain {on_chain}"


def wait_for_model(
    database_url: str, schema: str, expected: dict[str, list[dict[str, Any]]], timeout: float = 60
) -> None:
    """Until a running daemon's tables equal the model; then (or at the timeout) assert it, with the difference."""
    deadline = time.monotonic() + timeout
    want = sorted_model(expected)
    while time.monotonic() < deadline:
        try:
            if tables_for_model(database_url, schema, expected) == want:
                return
        except psycopg.errors.UndefinedTable:
            pass  # the daemon has not migrated yet
        time.sleep(0.2)
    assert_tables_match_model(database_url, schema, expected)
