"""The indexer's configuration: one TOML file, validated on load, with environment overrides for secrets."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from indexer.errors import ConfigError

ROLES = ("oracle_aggregator", "rbtc_synth", "fee_vault", "vault_wrbtc", "yield_scales_pool")
ABI_DIR = Path(__file__).resolve().parent.parent / "abi"
DEFAULT_ABI_FILES = {
    "oracle_aggregator": "OracleAggregator.json",
    "rbtc_synth": "RBTCSynth.json",
    "fee_vault": "FeeVault.json",
    "vault_wrbtc": "VaultWrBTC.json",
    "yield_scales_pool": "YieldScalesPool.json",
}
ENV_RPC_URL = "RBTC_INDEXER_RPC_URL"
ENV_DATABASE_URL = "RBTC_INDEXER_DATABASE_URL"
ENV_WS_URL = "RBTC_INDEXER_WS_URL"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChainConfig(_Strict):
    name: str = "chain"
    chain_id: int = Field(gt=0)
    rpc_urls: list[str] = Field(min_length=1)
    confirmations: int = Field(default=64, ge=0, description="fallback finality depth for nodes without 'finalized'")
    use_finalized_tag: bool = True
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    max_block_range: int = Field(default=2000, ge=1, description="operator's cap on one eth_getLogs range")
    initial_block_range: int = Field(default=100, ge=1)
    request_timeout: float = Field(default=10.0, gt=0)
    subscribe_heads: bool = Field(default=True, description="wake on eth_subscribe newHeads over WebSocket")
    ws_urls: list[str] = Field(default=[], description="WebSocket endpoints; empty: the rpc_urls as ws(s)://")

    @field_validator("ws_urls")
    @classmethod
    def _urls_are_ws(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"{redact_url(url)!r} is not a ws(s) URL")
        return urls

    @field_validator("rpc_urls")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{redact_url(url)!r} is not an http(s) URL")
        return urls


class ContractConfig(_Strict):
    address: str
    start_block: int = Field(ge=0)
    abi: str | None = None

    @field_validator("address")
    @classmethod
    def _is_address(cls, value: str) -> str:
        body = value[2:] if value.startswith("0x") else ""
        if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
            raise ValueError(f"{value!r} is not a 0x-prefixed 20-byte hex address")
        return value.lower()


class ContractsConfig(_Strict):
    oracle_aggregator: list[ContractConfig] = []
    rbtc_synth: list[ContractConfig] = []
    fee_vault: list[ContractConfig] = []
    vault_wrbtc: list[ContractConfig] = []
    yield_scales_pool: list[ContractConfig] = []


class DatabaseConfig(_Strict):
    url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    schema_: str = Field(default="rbtc", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    pool_size: int = Field(default=6, ge=3)


class HttpConfig(_Strict):
    listen: str = "127.0.0.1:9108"
    enabled: bool = True


class LogConfig(_Strict):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class IndexerConfig(_Strict):
    batch_size: int = Field(default=5000, ge=1, description="about how many logs one projection batch holds")
    watchdog_interval: float = Field(default=10.0, gt=0)


class Config(_Strict):
    chain: ChainConfig
    contracts: ContractsConfig
    database: DatabaseConfig = DatabaseConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    indexer: IndexerConfig = IndexerConfig()
    source: str = "<memory>"

    def watched(self) -> list[tuple[str, ContractConfig]]:
        """Every configured (role, contract) pair."""
        return [(role, c) for role in ROLES for c in getattr(self.contracts, role)]

    def abi_path(self, role: str, contract: ContractConfig) -> Path:
        """The ABI file of a contract: its own `abi` key, else the role's default in abi/."""
        if contract.abi:
            path = Path(contract.abi)
            return path if path.is_absolute() else Path(self.source).parent / path
        return ABI_DIR / DEFAULT_ABI_FILES[role]

    def start_blocks(self) -> dict[str, int]:
        """Each watched address and the first block whose logs count (the lowest if listed twice)."""
        starts: dict[str, int] = {}
        for _, contract in self.watched():
            starts[contract.address] = min(contract.start_block, starts.get(contract.address, contract.start_block))
        return starts

    def start_block(self) -> int:
        """The lowest start block of any contract."""
        blocks = [c.start_block for _, c in self.watched()]
        return min(blocks) if blocks else 0


def redact_url(url: str) -> str:
    """An URL safe to print: no user info, no path or query (API keys often live there)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<invalid url>"
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    hidden = "/…" if "/" in rest.strip("/") or "?" in rest else ""
    return f"{scheme}://{host}{hidden}"


def _location(loc: tuple[object, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append("schema" if item == "schema_" else str(item))
    return ".".join(parts)


def parse_config(data: dict, source: str, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a Config."""
    env = os.environ if env is None else env
    data = {**data, "source": source}
    chain = dict(data.get("chain") or {})
    database = dict(data.get("database") or {})
    if env.get(ENV_RPC_URL):
        chain["rpc_urls"] = [u.strip() for u in env[ENV_RPC_URL].split(",") if u.strip()]
        data["chain"] = chain
    if env.get(ENV_WS_URL):
        chain["ws_urls"] = [u.strip() for u in env[ENV_WS_URL].split(",") if u.strip()]
        data["chain"] = chain
    if env.get(ENV_DATABASE_URL):
        database["url"] = env[ENV_DATABASE_URL]
        data["database"] = database
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; raise ConfigError naming the file and key on any problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path), env)
