"""The indexer's configuration: one TOML file, validated on load, with environment overrides for secrets."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from indexer.errors import ConfigError
from indexer.package_data import abi_dir

ROLES = ("oracle_aggregator", "rbtc_synth", "fee_vault", "vault_wrbtc", "yield_scales_pool")
ABI_DIR = abi_dir()
DEFAULT_ABI_FILES = {
    "oracle_aggregator": "OracleAggregator.json",
    "rbtc_synth": "RBTCSynth.json",
    "fee_vault": "FeeVault.json",
    "vault_wrbtc": "VaultWrBTC.json",
    "yield_scales_pool": "YieldScalesPool.json",
}
ENV_RPC_URL = "RBTC_INDEXER_RPC_URL"
ENV_DATABASE_URL = "RBTC_INDEXER_DATABASE_URL"
ENV_API_DATABASE_URL = "RBTC_INDEXER_API_DATABASE_URL"
ENV_WS_URL = "RBTC_INDEXER_WS_URL"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _address(value: str) -> str:
    body = value[2:] if value.startswith("0x") else ""
    if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise ValueError(f"{value!r} is not a 0x-prefixed 20-byte hex address")
    return value.lower()


class ChainConfig(_Strict):
    chain_id: int = Field(gt=0)
    rpc_urls: list[str] = Field(min_length=1)
    confirmations: int = Field(default=64, ge=0, description="fallback finality depth for nodes without 'finalized'")
    use_finalized_tag: bool = True
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    max_block_range: int = Field(default=2000, ge=1, description="operator's cap on one eth_getLogs range")
    initial_block_range: int = Field(default=100, ge=1)
    request_timeout: float = Field(default=10.0, gt=0)
    completeness: Literal["receipts", "bloom"] = Field(
        default="receipts",
        description="second source confirming eth_getLogs answers: block receipts, or the bloom's sound check only",
    )
    prefetch: bool = Field(default=True, description="fetch the next backfill range while the current is appended")
    multicall_address: str = Field(
        default="0xcA11bde05977b3631167028862bE2a173976CA11",
        validate_default=True,
        description="Multicall3 for verify's batched reads",
    )

    @field_validator("multicall_address")
    @classmethod
    def _multicall_is_address(cls, value: str) -> str:
        return _address(value)

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
        return _address(value)


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

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        try:
            conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            # libpq's message quotes the string, password included: say only what is wrong.
            raise ValueError("not a PostgreSQL URL or key=value connection string") from None
        return value


class HttpConfig(_Strict):
    listen: str = "127.0.0.1:9108"
    enabled: bool = True


class ApiConfig(_Strict):
    """The read API (`rbtc-indexer serve`): a separate, stateless process; any number may run."""

    listen: str = Field(default="127.0.0.1:8080", pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]*):[0-9]{1,5}$")
    database_url: str | None = Field(default=None, description="read from here (e.g. a replica); default database.url")
    listen_database_url: str | None = Field(default=None, description="LISTEN here (the primary); default database.url")
    pool_size: int = Field(default=4, ge=1, le=64)
    statement_timeout_ms: int = Field(default=2000, ge=10, le=600_000)
    min_block_wait: float = Field(default=5.0, gt=0, le=60, description="longest ?min_block= wait, seconds")
    max_rows: int = Field(default=1000, ge=1, le=100_000, description="cap on rows of one /rest/v1 answer")
    cors_origins: list[str] = ["*"]
    response_cache: int = Field(default=10_000, ge=0, le=1_000_000, description="responses kept per data version")
    access_log: bool = Field(default=True, description="one info line per request: route template, status, time")
    rate_limit: str = Field(default="600/minute", pattern=r"^[0-9]+/(second|minute|hour)$")
    rate_limit_enabled: bool = True
    trust_forwarded_for: bool = Field(default=False, description="key rate limits on X-Forwarded-For (behind a proxy)")
    stale_after: float = Field(default=120.0, gt=0, description="/readyz fails when projections are older, seconds")
    sse_queue: int = Field(default=64, ge=1, le=10_000, description="pending events per push client before drop")
    sse_keepalive: float = Field(default=15.0, gt=0, le=300)
    bitcoin_addresses_table: str | None = Field(
        default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$", description="off-chain table"
    )
    yield_scales_contract: str = "0x0bAbb640c2eb4501b3d62D090A2c34871EB95df8"

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.rstrip("/") != origin):
                raise ValueError(f"{origin!r} is not '*' or an origin like https://app.example.org")
        return origins


class LogConfig(_Strict):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class IndexerConfig(_Strict):
    batch_size: int = Field(default=1000, ge=1, description="about how many logs one projection batch holds")
    watchdog_interval: float = Field(default=10.0, gt=0)
    ready_max_lag_blocks: int = Field(default=10, ge=0, description="/readyz: every component within this many blocks")
    stall_timeout: float = Field(
        default=120.0, gt=0, description="seconds without follower progress while behind before it counts as stuck"
    )
    receipts: bool = Field(default=True, description="store gas, sender and `to` of every tx with protocol logs")
    projection_process: bool = Field(
        default=True, description="`run` applies the projections in a child process, beside the follower"
    )
    verify_interval: int = Field(default=0, ge=0, description="`run` verifies every N blocks; 0 = never")
    verify_users_per_request: int = Field(default=250, ge=1, le=5000, description="first users per state request")


class Config(_Strict):
    chain: ChainConfig
    contracts: ContractsConfig
    database: DatabaseConfig = DatabaseConfig()
    http: HttpConfig = HttpConfig()
    api: ApiConfig = ApiConfig()
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


_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)$")


def redact_url(url: str) -> str:
    """An URL safe to print: scheme, host and port only.

    User info, path, query and fragment are dropped (API keys live in any of them); a URL whose host or port
    does not parse prints as a placeholder, never as itself.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.netloc.rsplit("@", 1)[-1]
    host = host.rsplit(":", 1)[0] if port is not None or host.endswith(":") else host
    if not parts.scheme or not host or not _HOST.match(host):
        return "<invalid url>"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _location(loc: tuple[object, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append("schema" if item == "schema_" else str(item))
    return ".".join(parts)


def parse_config(data: dict[str, Any], source: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a Config."""
    environ: Mapping[str, str] = os.environ if env is None else env
    data = {**data, "source": source}
    chain = dict(data.get("chain") or {})
    database = dict(data.get("database") or {})
    if environ.get(ENV_RPC_URL):
        chain["rpc_urls"] = [u.strip() for u in environ[ENV_RPC_URL].split(",") if u.strip()]
        data["chain"] = chain
    if environ.get(ENV_WS_URL):
        chain["ws_urls"] = [u.strip() for u in environ[ENV_WS_URL].split(",") if u.strip()]
        data["chain"] = chain
    if environ.get(ENV_DATABASE_URL):
        database["url"] = environ[ENV_DATABASE_URL]
        data["database"] = database
    if environ.get(ENV_API_DATABASE_URL):
        data["api"] = {**dict(data.get("api") or {}), "database_url": environ[ENV_API_DATABASE_URL]}
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
