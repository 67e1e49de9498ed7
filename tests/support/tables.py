"""Helpers for tests: configurations for local chains, and reading the read tables back as plain data."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from indexer.config import Config, parse_config


def make_config(
    database_url: str,
    schema: str,
    rpc_urls: list[str],
    addresses: dict[str, str],
    *,
    chain_id: int = 31337,
    start_block: int = 0,
    extra_contracts: dict[str, list[str]] | None = None,
    **chain: object,
) -> Config:
    """A validated configuration for a local chain (`extra_contracts`: more addresses per role)."""
    contracts = {role: [{"address": a, "start_block": start_block}] for role, a in addresses.items()}
    for role, more in (extra_contracts or {}).items():
        contracts.setdefault(role, []).extend({"address": a, "start_block": start_block} for a in more)
    data = {
        "chain": {"chain_id": chain_id, "rpc_urls": rpc_urls, "poll_interval": 0.05, **chain},
        "contracts": contracts,
        "database": {"url": database_url, "schema": schema},
        "http": {"enabled": False},
        "log": {"format": "console", "level": "warning"},
    }
    return parse_config(data, "<test>", env={})


TABLE_KEYS = {
    "balances": ("user_address",),
    "transactions": ("tx_hash", "log_index"),
    "emergency_burns": ("tx_hash", "log_index"),
    "yield_scales_participants": ("user_address",),
    "oracle_operations_log": ("tx_hash", "log_index"),
}


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value)
    if hasattr(value, "timestamp"):
        return int(value.timestamp())  # type: ignore[union-attr]
    return value


def table_columns(database_url: str, schema: str) -> dict[str, set[str]]:
    """Every column of every read table."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = ANY(%s)",
            (schema, list(TABLE_KEYS)),
        ).fetchall()
    out: dict[str, set[str]] = {t: set() for t in TABLE_KEYS}
    for table, column in rows:
        out[table].add(column)
    return out


def read_tables(database_url: str, schema: str, columns: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """Every read table as sorted lists of dicts (numbers as int, times as unix seconds)."""
    out: dict[str, list[dict]] = {}
    with psycopg.connect(database_url) as conn:
        for table, key in TABLE_KEYS.items():
            cols = (columns or {}).get(table)
            select = ", ".join(f'"{c}"' for c in cols) if cols else "*"
            with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
                cur.execute(f'SELECT {select} FROM "{schema}"."{table}" ORDER BY {", ".join(key)}')
                out[table] = [{k: _plain(v) for k, v in row.items()} for row in cur.fetchall()]
    return out
