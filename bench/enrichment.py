"""The cost of receipts and observations: the same backfill with the enrichment on and off.

Variants, each a `run --to-block` on a fresh schema over the same chain:
- `receipts` (the defaults: `chain.completeness = "receipts"`, `indexer.receipts = true`): every header of each
  range, the receipts of blocks with logs or a bloom "maybe", calldata and eth_call observations;
- `bloom` (`chain.completeness = "bloom"`, `indexer.receipts = false`): no receipts, headers of blocks with
  logs only.
"""

from __future__ import annotations

from bench.measure import Workspace, backfill

VARIANTS = {
    "receipts": ('completeness = "receipts"\n', "receipts = true\n"),
    "bloom": ('completeness = "bloom"\n', "receipts = false\n"),
}


def enrichment_cost(ws: Workspace, to_block: int, timeout: float, rounds: int = 2) -> dict[str, dict[str, float]]:
    """Backfill figures per variant (the fastest of `rounds` alternating runs, so a loaded machine hurts both
    alike) and the time ratio receipts / bloom."""
    out: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for name, (chain_toml, indexer_toml) in VARIANTS.items():
            schema = ws.new_schema(f"enrich_{name}")
            ws.extra_chain_toml, ws.extra_indexer_toml = chain_toml, indexer_toml
            try:
                result = backfill(ws, schema, to_block, timeout)
            finally:
                ws.extra_chain_toml = ws.extra_indexer_toml = ""
                ws.drop(schema)
            if name not in out or result["seconds"] < out[name]["seconds"]:
                out[name] = result
    out["ratio"] = {"receipts_over_bloom_seconds": out["receipts"]["seconds"] / out["bloom"]["seconds"]}
    return out
