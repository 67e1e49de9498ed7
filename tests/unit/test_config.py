"""Configuration: every error names the file and the key, environment overrides win, defaults match the README,
start blocks and ABI paths are resolved as documented."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from indexer.config import ABI_DIR, ENV_DATABASE_URL, ENV_RPC_URL, Config, load_config, parse_config
from indexer.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parents[2]
AGGREGATOR = "0xEcCC1Bf6Ad2e875152eE65DC365F90d07da7aEAc"
SYNTH = "0x5b9375b4ac0f61C7D5af32374aCCe0d058cE6F58"
VAULT = "0x1384d3A60a910B5b402ee09457b3eBfCC964FD4f"

MINIMAL = f"""
[chain]
chain_id = 6342
rpc_urls = ["https://rpc.example.org"]

[[contracts.oracle_aggregator]]
address = "{AGGREGATOR}"
start_block = 100
"""


def write(tmp_path: Path, text: str, name: str = "indexer.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={} if env is None else env)
    return str(caught.value)


def test_a_valid_file_loads_with_its_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.chain.chain_id == 6342
    assert config.chain.rpc_urls == ["https://rpc.example.org"]
    assert [(role, c.address, c.start_block) for role, c in config.watched()] == [
        ("oracle_aggregator", AGGREGATOR.lower(), 100)
    ]
    assert config.source == str(tmp_path / "indexer.toml")


def test_the_shipped_testnet_config_is_valid() -> None:
    config = load_config(REPO / "config" / "megaeth-testnet.toml", env={})
    assert config.chain.chain_id == 6342
    assert {role for role, _ in config.watched()} == {
        "oracle_aggregator",
        "rbtc_synth",
        "fee_vault",
        "vault_wrbtc",
        "yield_scales_pool",
    }
    assert all(c.address == c.address.lower() for _, c in config.watched())


def test_an_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("chain_id = 6342", "chain_id = 6342\nrpc_url = 'https://x.example'"))
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "chain.rpc_url" in message


def test_an_unknown_section_names_the_file_and_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\n[databse]\nurl = 'postgresql://x'\n")
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "databse" in message


def test_an_unknown_contract_role_names_the_role(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + f"\n[[contracts.oracle]]\naddress = '{AGGREGATOR}'\nstart_block = 1\n")
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "contracts.oracle" in message


@pytest.mark.parametrize(
    "address",
    [
        "0xEcCC1Bf6Ad2e875152eE65DC365F90d07da7aEA",  # 39 hex digits
        "EcCC1Bf6Ad2e875152eE65DC365F90d07da7aEAc00",  # no 0x
        "0xZcCC1Bf6Ad2e875152eE65DC365F90d07da7aEAc",  # not hex
        "0xEcCC1Bf6Ad2e875152eE65DC365F90d07da7aEAc1",  # 41 hex digits
    ],
)
def test_a_bad_address_names_the_file_the_key_and_the_value(tmp_path: Path, address: str) -> None:
    path = write(tmp_path, MINIMAL.replace(AGGREGATOR, address))
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "contracts.oracle_aggregator[0].address" in message
    assert address in message


def test_the_second_contract_of_a_role_is_named_by_its_index(tmp_path: Path) -> None:
    text = MINIMAL + "\n[[contracts.oracle_aggregator]]\naddress = '0x12'\nstart_block = 5\n"
    message = config_error(write(tmp_path, text))
    assert "contracts.oracle_aggregator[1].address" in message
    assert "contracts.oracle_aggregator[0]" not in message


def test_a_negative_start_block_names_the_key(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, MINIMAL.replace("start_block = 100", "start_block = -1")))
    assert "contracts.oracle_aggregator[0].start_block" in message


@pytest.mark.parametrize("url", ["ws://rpc.example.org", "wss://rpc.example.org/ws", "ftp://rpc.example.org", "rpc"])
def test_a_url_that_is_not_http_names_the_key(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, MINIMAL.replace('["https://rpc.example.org"]', f'["https://ok.example", "{url}"]'))
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "chain.rpc_urls" in message
    assert "is not an http(s) URL" in message
    assert "ok.example" not in message  # the good URL is not blamed


def test_a_bad_url_is_reported_without_its_secret(tmp_path: Path) -> None:
    secret = "k3y-5ecret-0123456789"
    url = f"wss://user:pa55word@megaeth.example/v2/{secret}?apikey={secret}"
    message = config_error(write(tmp_path, MINIMAL.replace("https://rpc.example.org", url)))
    assert "chain.rpc_urls" in message
    assert "megaeth.example" in message
    assert secret not in message
    assert "pa55word" not in message


def test_an_empty_rpc_url_list_names_the_key(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, MINIMAL.replace('["https://rpc.example.org"]', "[]")))
    assert "chain.rpc_urls" in message


def test_a_missing_required_key_names_it(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, MINIMAL.replace("chain_id = 6342\n", "")))
    assert "chain.chain_id" in message


@pytest.mark.parametrize("schema", ["Rbtc", "1rbtc", "rbtc-indexer", "rbtc;drop", "", "a" * 42])
def test_a_bad_schema_name_names_the_key(tmp_path: Path, schema: str) -> None:
    path = write(tmp_path, MINIMAL + f'\n[database]\nschema = "{schema}"\n')
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "database.schema" in message
    assert "schema_" not in message.removeprefix(f"{path}: ")  # the file's key, not the model's attribute


@pytest.mark.parametrize("schema", ["rbtc", "_x", "rbtc_2", "a" * 41])
def test_good_schema_names_are_accepted(tmp_path: Path, schema: str) -> None:
    config = load_config(write(tmp_path, MINIMAL + f'\n[database]\nschema = "{schema}"\n'), env={})
    assert config.database.schema_ == schema


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace("chain_id = 6342", "chain_id = 0").replace(AGGREGATOR, "0x12")
    message = config_error(write(tmp_path, text))
    assert "chain.chain_id" in message
    assert "contracts.oracle_aggregator[0].address" in message


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("chain_id = 6342", "chain_id = = 6342"))
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert "TOML" in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "= =" in text)
    assert re.search(rf"\bline {line}\b", message)


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "indexer.toml"
    message = config_error(path)
    assert str(path) in message
    assert "not found" in message


def test_config_errors_are_fatal_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml", env={})
    assert caught.value.exit_code is ExitCode.USAGE


def test_the_rpc_url_variable_replaces_the_files_urls_as_a_comma_list(tmp_path: Path) -> None:
    env = {ENV_RPC_URL: " https://private.example/v2/key , ,https://carrot.megaeth.com/rpc,"}
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.chain.rpc_urls == ["https://private.example/v2/key", "https://carrot.megaeth.com/rpc"]


def test_the_rpc_url_variable_supplies_urls_the_file_leaves_out(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('rpc_urls = ["https://rpc.example.org"]\n', ""))
    assert "chain.rpc_urls" in config_error(path)
    config = load_config(path, env={ENV_RPC_URL: "http://127.0.0.1:8545"})
    assert config.chain.rpc_urls == ["http://127.0.0.1:8545"]


def test_a_bad_url_from_the_environment_is_reported_like_one_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    message = config_error(path, env={ENV_RPC_URL: "https://ok.example,wss://bad.example/secretkey"})
    assert message.startswith(f"{path}: ")
    assert "chain.rpc_urls" in message
    assert "bad.example" in message
    assert "secretkey" not in message


def test_an_empty_rpc_url_variable_changes_nothing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={ENV_RPC_URL: ""})
    assert config.chain.rpc_urls == ["https://rpc.example.org"]


def test_the_database_url_variable_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[database]\nurl = "postgresql://file@db/x"\nschema = "ours"\n')
    dsn = "postgresql://indexer:secret@10.0.0.5:5432/rbtc"
    config = load_config(path, env={ENV_DATABASE_URL: dsn})
    assert config.database.url == dsn
    assert config.database.schema_ == "ours"
    assert load_config(path, env={}).database.url == "postgresql://file@db/x"


def test_parse_config_reads_the_process_environment_when_no_env_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_RPC_URL, "https://from-env.example")
    monkeypatch.setenv(ENV_DATABASE_URL, "postgresql://env@db/x")
    config = parse_config(tomllib.loads(MINIMAL), "inline.toml")
    assert config.chain.rpc_urls == ["https://from-env.example"]
    assert config.database.url == "postgresql://env@db/x"
    assert config.source == "inline.toml"


def _readme_defaults() -> dict[str, str]:
    """`key | default` pairs of the README's configuration table (single keys only)."""
    defaults: dict[str, str] = {}
    for line in (REPO / "README.md").read_text().splitlines():
        match = re.match(r"\| `([a-z_]+\.[a-z_]+)` \| ([^|]+) \|", line)
        if match:
            defaults[match.group(1)] = match.group(2).strip().strip("`")
    return defaults


def test_defaults_are_the_ones_the_readme_documents(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    documented = _readme_defaults()
    checked = 0
    for key, text in documented.items():
        section, name = key.split(".")
        if text in ("—", "local server"):
            continue
        value = getattr(getattr(config, section), "schema_" if name == "schema" else name)
        if value is None:
            assert text == "none", key
        elif isinstance(value, list):
            assert json.dumps(value) == text, key
        elif isinstance(value, bool):
            assert value is (text == "true"), key
        elif isinstance(value, (int, float)):
            assert value == float(text), key
        else:
            assert value == text, key
        checked += 1
    assert checked >= 8  # the table has not silently lost its rows
    assert (config.http.listen, config.http.enabled) == ("127.0.0.1:9108", True)
    assert (config.log.format, config.log.level) == ("auto", "info")
    assert config.database.url.startswith("postgresql://")


def test_an_empty_contracts_section_watches_nothing(tmp_path: Path) -> None:
    text = "[chain]\nchain_id = 1\nrpc_urls = ['http://127.0.0.1:8545']\n\n[contracts]\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.watched() == []
    assert config.start_blocks() == {}
    assert config.start_block() == 0


def _with_contracts(tmp_path: Path, contracts: str) -> Config:
    text = "[chain]\nchain_id = 1\nrpc_urls = ['http://127.0.0.1:8545']\n" + contracts
    return load_config(write(tmp_path, text), env={})


def test_each_contract_keeps_its_own_start_block(tmp_path: Path) -> None:
    config = _with_contracts(
        tmp_path,
        f"""
[[contracts.oracle_aggregator]]
address = "{AGGREGATOR}"
start_block = 17000000
[[contracts.rbtc_synth]]
address = "{SYNTH}"
start_block = 15862201
[[contracts.fee_vault]]
address = "{VAULT}"
start_block = 16500000
""",
    )
    assert config.start_blocks() == {
        AGGREGATOR.lower(): 17_000_000,
        SYNTH.lower(): 15_862_201,
        VAULT.lower(): 16_500_000,
    }
    assert config.start_block() == 15_862_201


def test_an_address_listed_twice_starts_at_its_lower_block(tmp_path: Path) -> None:
    config = _with_contracts(
        tmp_path,
        f"""
[[contracts.oracle_aggregator]]
address = "{AGGREGATOR}"
start_block = 900
[[contracts.oracle_aggregator]]
address = "{AGGREGATOR.lower()}"
start_block = 300
[[contracts.fee_vault]]
address = "{VAULT}"
start_block = 500
""",
    )
    assert config.start_blocks() == {AGGREGATOR.lower(): 300, VAULT.lower(): 500}
    assert config.start_block() == 300


def test_a_relative_abi_path_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc" / "rbtc"
    conf_dir.mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = MINIMAL.replace("start_block = 100", 'start_block = 100\nabi = "abis/Aggregator.json"')
    text += f'\n[[contracts.fee_vault]]\naddress = "{VAULT}"\nstart_block = 1\nabi = "{tmp_path}/abs/FeeVault.json"\n'
    text += f'\n[[contracts.rbtc_synth]]\naddress = "{SYNTH}"\nstart_block = 1\n'
    config = load_config(write(conf_dir, text), env={})
    paths = {role: config.abi_path(role, contract) for role, contract in config.watched()}
    assert paths["oracle_aggregator"] == conf_dir / "abis" / "Aggregator.json"
    assert paths["fee_vault"] == tmp_path / "abs" / "FeeVault.json"
    assert paths["rbtc_synth"] == ABI_DIR / "RBTCSynth.json"
    assert (REPO / "abi" / "RBTCSynth.json").resolve() == paths["rbtc_synth"].resolve()


def test_every_role_has_a_default_abi_file_that_exists(tmp_path: Path) -> None:
    contracts = "".join(
        f'\n[[contracts.{role}]]\naddress = "0x{i:040x}"\nstart_block = {i}\n'
        for i, role in enumerate(
            ("oracle_aggregator", "rbtc_synth", "fee_vault", "vault_wrbtc", "yield_scales_pool"), start=1
        )
    )
    config = _with_contracts(tmp_path, contracts)
    assert len(config.watched()) == 5
    for role, contract in config.watched():
        assert config.abi_path(role, contract).is_file(), role
