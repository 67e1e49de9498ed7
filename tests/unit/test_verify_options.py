"""verify's command-line values and configuration checks."""

from __future__ import annotations

import pytest

from indexer.config import ROLES, parse_config
from indexer.errors import ConfigError, ExitCode
from indexer.verify.verifier import BlockChoice, contracts_of, parse_users


def _config(extra_pool: bool = False):
    contracts = {role: [{"address": "0x" + f"{i + 1:02x}" * 20, "start_block": 0}] for i, role in enumerate(ROLES)}
    if extra_pool:
        contracts["yield_scales_pool"].append({"address": "0x" + "ff" * 20, "start_block": 0})
    return parse_config({"chain": {"chain_id": 1, "rpc_urls": ["http://x"]}, "contracts": contracts}, "c.toml", env={})


def test_block_choice_reads_numbers_and_latest_consistent():
    assert BlockChoice.parse(None, 5) == BlockChoice("at-indexed", None, 5)
    assert BlockChoice.parse("latest-consistent", 5) == BlockChoice("latest-consistent", None, 5)
    assert BlockChoice.parse("0x10", 5) == BlockChoice("block", 16, 5)
    for bad in ("soon", "-3"):
        with pytest.raises(ConfigError) as raised:
            BlockChoice.parse(bad, 5)
        assert raised.value.exit_code == ExitCode.USAGE and "--block" in str(raised.value)


def test_users_are_lower_cased_deduplicated_and_checked():
    a, b = "0x" + "Ab" * 20, "0x" + "cd" * 20
    assert parse_users([f"{a},{b}", a.lower(), " "]) == [a.lower(), b]
    with pytest.raises(ConfigError, match="--users '0x12'"):
        parse_users(["0x12"])


def test_one_contract_per_role_is_required():
    assert contracts_of(_config()).yield_scales_pool == "0x" + "05" * 20
    with pytest.raises(ConfigError, match="contracts.yield_scales_pool: verify needs exactly one contract per role"):
        contracts_of(_config(extra_pool=True))


def test_the_multicall_address_is_configurable_and_checked():
    assert _config().chain.multicall_address == "0xca11bde05977b3631167028862be2a173976ca11"
    with pytest.raises(ConfigError, match="chain.multicall_address"):
        parse_config(
            {"chain": {"chain_id": 1, "rpc_urls": ["http://x"], "multicall_address": "0x12"}, "contracts": {}},
            "c.toml",
            env={},
        )
