"""The same backfill under configuration variants: what receipts and observations cost, and what prefetching
the next range saves when the provider is remote.

Enrichment variants, each a `run --to-block` on a fresh schema over the same chain:
- `receipts` (the defaults: `chain.completeness = "receipts"`, `indexer.receipts = true`): every header of each
  range, the receipts of blocks with logs or a bloom "maybe", calldata and eth_call observations;
- `bloom` (`chain.completeness = "bloom"`, `indexer.receipts = false`): no receipts, headers of blocks with
  logs only.
Prefetch variants (`chain.prefetch` false / true, the default), through a proxy that adds a fixed delay to
every request, as the round trip to a hosted provider does (a local anvil answers in well under a millisecond).
"""

from __future__ import annotations

from collections.abc import Callable

from bench.measure import Workspace, backfill
from tests.support.faultproxy import FaultProxy

ENRICHMENT = {
    "receipts": ('completeness = "receipts"\n', "receipts = true\n"),
    "bloom": ('completeness = "bloom"\n', "receipts = false\n"),
}
PREFETCH = {
    "no_prefetch": ("prefetch = false\n", ""),
    "prefetch": ("prefetch = true\n", ""),
}


Check = Callable[[str, str], None]  # (variant, schema): compare the schema's tables with the model


def fastest_backfills(
    ws: Workspace,
    to_block: int,
    timeout: float,
    variants: dict[str, tuple[str, str]],
    rounds: int,
    check: Check | None = None,
) -> dict[str, dict[str, float]]:
    """Backfill figures per variant (`[chain]` and `[indexer]` keys added to the config): the fastest of
    `rounds` alternating runs, so a loaded machine hurts every variant alike. `check` sees every run's
    tables before they are dropped."""
    out: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for name, (chain_toml, indexer_toml) in variants.items():
            schema = ws.new_schema(f"variant_{name}")
            ws.extra_chain_toml, ws.extra_indexer_toml = chain_toml, indexer_toml
            try:
                result = backfill(ws, schema, to_block, timeout)
                if check is not None:
                    check(name, schema)
            finally:
                ws.extra_chain_toml = ws.extra_indexer_toml = ""
                ws.drop(schema)
            if name not in out or result["seconds"] < out[name]["seconds"]:
                out[name] = result
    return out


def enrichment_cost(ws: Workspace, to_block: int, timeout: float, rounds: int = 2) -> dict[str, dict[str, float]]:
    """Receipts and bloom variants, and the time ratio receipts / bloom."""
    out = fastest_backfills(ws, to_block, timeout, ENRICHMENT, rounds)
    out["ratio"] = {"receipts_over_bloom_seconds": out["receipts"]["seconds"] / out["bloom"]["seconds"]}
    return out


def prefetch_gain(
    ws: Workspace, to_block: int, timeout: float, latency_s: float, check: Check, rounds: int = 1
) -> dict[str, dict[str, float]]:
    """Prefetch off and on behind a proxy adding `latency_s` to every request, and the speed-up on / off;
    both runs' tables go to `check`."""
    proxy = FaultProxy(ws.rpc_url).configure(latency_s=latency_s)
    proxy.start()
    direct, ws.rpc_url = ws.rpc_url, proxy.url
    try:
        out = fastest_backfills(ws, to_block, timeout, PREFETCH, rounds, check)
    finally:
        ws.rpc_url = direct
        proxy.stop()
    out["ratio"] = {"prefetch_speedup": out["prefetch"]["logs_per_s"] / out["no_prefetch"]["logs_per_s"]}
    return out
