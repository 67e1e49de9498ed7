"""The read API's pure parts, without a database: PostgREST query parsing, notification payloads, event ids,
number formatting, the [api] configuration."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from indexer.config import parse_config
from indexer.errors import ConfigError
from indexer.serve import postgrest
from indexer.serve.hub import parse_change
from indexer.serve.shapes import btc, dumps, normalise_address, text
from indexer.serve.stream import parse_event_id

TABLES = {
    "transactions": {
        "tx_hash": "text",
        "block_number": "bigint",
        "amount": "numeric",
        "tx_type": "text",
        "bitcoin_address": "text",
    }
}


def parse(query: list[tuple[str, str]], headers: dict[str, str] | None = None, max_rows: int = 100):
    return postgrest.parse("transactions", query, headers or {}, TABLES, max_rows)


def test_postgrest_select_order_paging_and_headers():
    q = parse(
        [
            ("select", "tx_hash,amount"),
            ("order", "block_number.desc.nullslast,tx_hash"),
            ("limit", "500"),
            ("offset", "20"),
        ],
        {"accept": "application/vnd.pgrst.object+json", "prefer": "count=exact"},
    )
    assert q.columns == ("tx_hash", "amount")
    assert q.limit == 100 and q.offset == 20  # capped at max-rows
    assert q.single and q.count
    assert parse([("select", "*")]).columns == tuple(TABLES["transactions"])


def test_postgrest_filters_bind_values():
    q = parse(
        [
            ("block_number", "gte.10"),
            ("tx_type", 'in.("MINT","BU,RN")'),
            ("bitcoin_address", "is.null"),
            ("amount", "not.eq.5"),
        ]
    )
    assert q.params == ("10", ["MINT", "BU,RN"], "5")
    assert parse([("tx_type", "in.()")]).params == ([],)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ([("password", "eq.1")], 400, "42703"),
        ([("select", "tx_hash,secret")], 400, "42703"),
        ([("select", "count(*)")], 400, "PGRST100"),
        ([("order", "amount.up")], 400, "PGRST100"),
        ([("amount", "between.1")], 400, "PGRST100"),
        ([("amount", "5")], 400, "PGRST100"),
        ([("tx_type", "in.MINT")], 400, "PGRST100"),
        ([("tx_type", 'in.("MINT)')], 400, "PGRST100"),
        ([("limit", "ten")], 400, "PGRST100"),
        ([("on_conflict", "tx_hash")], 400, "PGRST100"),
    ],
)
def test_postgrest_bad_queries(query, status, code):
    with pytest.raises(postgrest.RestError) as info:
        parse(query)
    assert info.value.status == status and info.value.body["code"] == code


def test_postgrest_unknown_table_and_content_range():
    with pytest.raises(postgrest.RestError) as info:
        postgrest.parse("stored_events", [], {}, TABLES, 10)
    assert info.value.status == 404 and info.value.body["code"] == "PGRST205"
    assert postgrest.content_range(0, 10, 42) == "0-9/42"
    assert postgrest.content_range(5, 0, 0) == "*/0"
    assert postgrest.content_range(5, 2, None) == "5-6/*"


def test_change_payloads():
    payload = orjson.dumps(
        {
            "s": "rbtc",
            "p": "balances",
            "v": 7,
            "b": 100,
            "h": "0xab",
            "r": None,
            "a": ["0x" + "11" * 20],
            "t": 1700000000.5,
        }
    ).decode()
    change = parse_change(payload, "rbtc")
    assert change is not None and change.version == 7 and change.block == 100 and change.committed_at == 1700000000.5
    assert change.touches("0x" + "11" * 20) and not change.touches("0x" + "22" * 20)
    assert parse_change(payload, "other_schema") is None
    assert parse_change("not json", "rbtc") is None
    assert parse_change('{"s": "rbtc", "p": "balances"}', "rbtc") is None
    unknown = parse_change(payload.replace('["0x' + "11" * 20 + '"]', "null"), "rbtc")
    assert unknown is not None and unknown.touches("0x" + "22" * 20)


def test_event_ids_numbers_and_addresses():
    assert parse_event_id("123:45") == 45
    assert parse_event_id(None) is None and parse_event_id("garbage") is None and parse_event_id("1:-2") is None
    assert btc(Decimal(123456789)) == "1.23456789" and btc(0) == "0.00000000"
    assert text(Decimal("1E+3")) == "1000" and text(None, "0") == "0"
    assert dumps({"wei": Decimal(10**30)}) == b'{"wei":1000000000000000000000000000000}'
    assert normalise_address("0x" + "AB" * 20) == "0x" + "ab" * 20
    assert normalise_address("0x123") is None and normalise_address(None) is None


def test_api_config_is_validated():
    base = {"chain": {"chain_id": 1, "rpc_urls": ["http://x"]}, "contracts": {}}
    config = parse_config(
        {**base, "api": {"listen": "0.0.0.0:8081", "cors_origins": ["https://a.example"]}},
        "c.toml",
        env={"RBTC_INDEXER_API_DATABASE_URL": "postgresql://reader@replica/db"},
    )
    assert config.api.listen == "0.0.0.0:8081" and config.api.database_url == "postgresql://reader@replica/db"
    for bad, field in (
        ({"listen": "nowhere"}, "api.listen"),
        ({"cors_origins": ["evil.example"]}, "api.cors_origins"),
        ({"rate_limit": "lots"}, "api.rate_limit"),
        ({"pool_size": 0}, "api.pool_size"),
        ({"bitcoin_addresses_table": "x; drop"}, "api.bitcoin_addresses_table"),
        ({"colour": "blue"}, "api.colour"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "api": bad}, "c.toml", env={})
        assert field in str(info.value)
