"""What the indexer prints of an RPC URL or a DSN: scheme, host and port only, never a secret."""

from __future__ import annotations

import pytest

from indexer.config import redact_url
from indexer.store.db import redact_dsn

SECRET = "s3cr3tK3y"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://mainnet.example.com/v2/{SECRET}", "https://mainnet.example.com"),
        (f"https://rpc.example.com/?apikey={SECRET}", "https://rpc.example.com"),
        (f"https://rpc.example.com?apikey={SECRET}", "https://rpc.example.com"),
        (f"https://rpc.example.com/path?key={SECRET}#frag", "https://rpc.example.com"),
        (f"https://user:{SECRET}@rpc.example.com/", "https://rpc.example.com"),
        (f"https://{SECRET}@rpc.example.com", "https://rpc.example.com"),
        (f"http://user:{SECRET}@10.0.0.5:8545/{SECRET}?k={SECRET}", "http://10.0.0.5:8545"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        (f"https://[::1]:8545/{SECRET}", "https://[::1]:8545"),
        (f"wss://ws.example.com/ws/{SECRET}", "wss://ws.example.com"),
        (f"https://rpc.example.com#{SECRET}", "https://rpc.example.com"),
    ],
)
def test_redact_url_keeps_scheme_host_and_port_only(url, expected):
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [SECRET, f"{SECRET}.example.com/path", f"://{SECRET}", f"https://user:{SECRET}@host:notaport/", "", f"https://rpc.example.com;{SECRET}",
     f"https://host/{SECRET}:x@", f"mailto:{SECRET}@example.com"],
)
def test_redact_url_of_a_malformed_url_never_echoes_it(url):
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://rbtc:{SECRET}@db.example.com:5433/rbtc",
        f"host=db.example.com port=5433 user=rbtc password={SECRET} dbname=rbtc",
        f"postgresql://rbtc:{SECRET}@db.example.com:5433/rbtc?sslmode=require",
        f"postgresql://rbtc@db.example.com/rbtc?password={SECRET}",
    ],
)
def test_redact_dsn_drops_the_password(dsn):
    assert SECRET not in redact_dsn(dsn)
    assert "db.example.com" in redact_dsn(dsn)


def test_redact_dsn_of_an_unparsable_dsn_never_echoes_it():
    assert SECRET not in redact_dsn(f"postgresql://rbtc:{SECRET}@db.example.com:5433:9/x y=z '")
