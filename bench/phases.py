"""The benchmark's phases, one per chain shape: each loads its cached chain, measures, checks the tables, stops.

- dense: backfill (half chain once, full chain `runs` times), rebuild, baseline, the ceiling, and head latency
  twice: with the shipped defaults (`*_default`) and with a 20 ms poll (today's figure);
- medium: the ceiling, backfill of the full chain `runs` times, once at half and double length (the scaling
  row), one rebuild;
- sparse: the ceiling (blocks/s), one backfill over a million mostly empty blocks (blocks/s).

Every backfill, rebuild and latency run ends with the read tables compared with the scenario model.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.api import run_api_bench
from bench.baseline import run_baseline
from bench.ceiling import fetch_and_parse, headers_per_s
from bench.chain import (
    CACHE_DIR,
    ChainInfo,
    ChainParams,
    RawRpc,
    cached_chain,
    fingerprint,
    load_chain,
    read_model,
)
from bench.enrichment import enrichment_cost, prefetch_gain
from bench.measure import RunFailed, Workspace, backfill, head_latency, rebuild, stored_logs, tables_match
from bench.report import Report, say
from bench.verify_timing import prepare as prepare_verify
from bench.verify_timing import time_verify
from indexer.fetch.fetcher import HEADER_BATCH, HEADER_REQUESTS_IN_FLIGHT
from tests.support.model import ScenarioModel

BACKFILL_TIMEOUT = 900.0
ZERO_ADDRESS = "0x" + "00" * 20
POSTGRES_FULL_RETRIES = 6
SPARSE_TIMEOUT = 1800.0
SPARSE_HEADER_CEILING_BLOCKS = 100_000  # headers fetched for the header ceiling (a few seconds)


@dataclass
class Bench:
    """What every phase needs: the options, the report, the database; chains met so far (for the summary)."""

    args: argparse.Namespace
    report: Report
    database_url: str
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    schemas: int = 0  # schemas made so far (their names are numbered)


@dataclass
class LoadedChain:
    info: ChainInfo
    model: ScenarioModel
    ws: Workspace
    serves_past_state: bool


@contextmanager
def loaded(bench: Bench, shape: str) -> Iterator[LoadedChain]:
    """The shape's chain (generated once, then cached) served by anvil, with a workspace; both cleaned up."""
    params = ChainParams.for_shape(shape, bench.args.quick)
    _wait_for_other_generation(CACHE_DIR / f"{fingerprint(params)}.tmp")
    info, directory, generated = cached_chain(params, say)
    blocks = info.head - info.start_block + 1
    say(
        f"{shape} chain {info.key}: {info.logs:,} protocol logs, {info.transactions:,} transactions, {blocks:,} "
        f"blocks ({len(info.block_logs):,} with logs), {params.users:,} users "
        f"({'generated in' if generated else 'cached; generation took'} {info.generation_seconds:.0f}s)"
    )
    bench.chains[shape] = {
        "key": info.key,
        "logs": info.logs,
        "blocks": blocks,
        "blocks_with_logs": len(info.block_logs),
        "transactions": info.transactions,
        "users": params.users,
        "generated_this_run": generated,
        "generation_s": info.generation_seconds,
    }
    model = read_model(directory)
    node = load_chain(directory, info)
    ws = Workspace(bench.database_url, node.url, info)
    ws.max_block_range = bench.args.max_block_range
    ws.initial_block_range = min(100, ws.max_block_range)
    try:
        yield LoadedChain(info, model, ws, _serves_past_state(node.url, info.start_block))
    finally:
        ws.cleanup()
        node.stop()


def _wait_for_other_generation(tmp: Path, timeout: float = 3600.0) -> None:
    """Another bench process generating the same chain holds `<key>.tmp/`: wait for it rather than clobber it.
    (A `.tmp` left by a generation that crashed must be removed by hand; the message says where.)"""
    if not tmp.exists():
        return
    say(f"{tmp} exists: another process is generating this chain; waiting (remove it if that process is gone)")
    deadline = time.monotonic() + timeout
    while tmp.exists() and time.monotonic() < deadline:
        time.sleep(5)


def _expected(chain: LoadedChain, to_block: int) -> dict[str, list[dict[str, Any]]]:
    """The model's tables at `to_block`. anvil restored from a state dump keeps no state of past blocks (it
    answers eth_call only at the head), like a pruned full node: a backfill that stops below the head cannot
    see the disputes resolved before it, and the model says so (every dispute filed still open)."""
    hashes = [a.tx_hash for a in chain.model.actions.values() if a.block_number <= to_block]
    visible = to_block >= chain.info.head or chain.serves_past_state
    return chain.model.expected_tables(hashes, resolutions_visible=visible)


def _serves_past_state(rpc_url: str, block: int) -> bool:
    """Whether the node answers state reads at a past block (an archive node does; a restored anvil does not)."""
    return RawRpc(rpc_url).batch([("eth_getBalance", [ZERO_ADDRESS, hex(block)])], errors=False)[0] is not None


def _ceiling(bench: Bench, chain: LoadedChain, to_block: int, metric: str) -> float | None:
    try:
        c = fetch_and_parse(chain.ws.rpc_url, chain.info, to_block, span=bench.args.max_block_range)
    except (RuntimeError, OSError) as exc:
        bench.report.fail(metric, exc)
        return None
    bench.report.add(metric, c["logs_per_s"])
    say(f"  ceiling: {c['logs']:,} logs fetched and parsed in {c['seconds']:.2f}s = {c['logs_per_s']:,.0f} logs/s")
    return c["logs_per_s"]


def _backfill_checked(
    bench: Bench, chain: LoadedChain, label: str, to_block: int, timeout: float = BACKFILL_TIMEOUT
) -> tuple[dict[str, float], str] | None:
    """One backfill to `to_block` on a fresh schema, checked against the model; (figures, schema) or None."""
    bench.schemas += 1
    schema = f"{chain.ws.prefix}_b{bench.schemas}"

    def run() -> dict[str, float]:
        chain.ws.new_schema(f"b{bench.schemas}")
        return backfill(chain.ws, schema, to_block, timeout)

    try:
        r = _retry_when_postgres_is_full(run, label)
        bench.report.check(label, tables_match(bench.database_url, schema, _expected(chain, to_block)))
    except (RunFailed, psycopg.OperationalError) as exc:
        bench.report.fail(label, exc)
        return None
    blocks = to_block - chain.info.start_block + 1
    say(
        f"  {r['logs_per_s']:,.0f} logs/s, {blocks / r['seconds']:,.0f} blocks/s, {r['seconds']:.1f}s, "
        f"first block after {r['time_to_first_block_s']:.2f}s, peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    return r, schema


def _retry_when_postgres_is_full(run: Callable[[], dict[str, float]], label: str) -> dict[str, float]:
    """A run that could not even connect (the shared server's connection limit) is retried, not counted."""
    for attempt in range(1, POSTGRES_FULL_RETRIES + 1):
        try:
            return run()
        except (RunFailed, psycopg.OperationalError) as exc:
            if "too many clients" not in str(exc) or attempt == POSTGRES_FULL_RETRIES:
                raise
            say(f"  {label}: PostgreSQL has no free connection slot; retrying the run in 10s")
            time.sleep(10)
    raise AssertionError("unreachable")


def _latency(bench: Bench, chain: LoadedChain, schema: str, poll_interval: float | None, suffix: str) -> None:
    blocks = bench.args.latency_blocks
    setting = "the shipped defaults" if poll_interval is None else f"poll_interval {poll_interval}"
    say(f"head latency with {setting} over {blocks} blocks mined one at a time, daemon following ...")
    try:
        lat = head_latency(
            chain.ws, schema, chain.model, blocks, chain.info.params["seed"] + 99 + len(suffix), say, poll_interval
        )
    except (RunFailed, psycopg.OperationalError) as exc:
        bench.report.fail(f"head latency ({setting})", exc)
        return
    bench.report.add(f"head_latency_ms_p50{suffix}", lat["p50_ms"])
    bench.report.add(f"head_latency_ms_p99{suffix}", lat["p99_ms"])
    bench.report.extra[f"head_latency{suffix}"] = lat
    bench.report.check(f"head latency ({setting}, daemon following live)", lat["differing_tables"])
    say(
        f"  p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms, "
        f"{lat['timeouts']} blocks not visible within 10s, newHeads subscribed: {lat['subscribed_to_new_heads']}"
    )


def dense(bench: Bench) -> None:
    report, args = bench.report, bench.args
    with loaded(bench, "dense") as chain:
        info = chain.info
        say("dense: ceiling (eth_getLogs + JSON parse of every log) ...")
        ceiling = _ceiling(bench, chain, info.head, "ceiling_logs_per_s_dense")
        half_block = info.block_with_half_the_logs()
        say(f"dense: backfill of half the chain (to block {half_block}, {info.logs_up_to(half_block):,} logs) ...")
        done = _backfill_checked(bench, chain, "half-chain backfill", half_block)
        if done:
            report.add("peak_rss_mb_half_chain", done[0]["peak_rss_mb"])
            report.add("half_backfill_logs_per_s", done[0]["logs_per_s"])
            chain.ws.drop(done[1])
        kept: str | None = None
        for i in range(args.runs):
            say(f"dense: backfill {i + 1}/{args.runs} of the full chain (to block {info.head}, {info.logs:,} logs) ...")
            done = _backfill_checked(bench, chain, f"backfill {i + 1}", info.head)
            if not done:
                continue
            r, schema = done
            for metric in ("logs_per_s", "time_to_first_block_s", "peak_rss_mb"):
                report.add("backfill_logs_per_s" if metric == "logs_per_s" else metric, r[metric])
            if kept is None:
                in_store = stored_logs(bench.database_url, schema)
                report.extra["stored_logs"] = in_store
                report.check("event store holds every log once", [] if in_store == info.logs else ["stored_events"])
            else:
                chain.ws.drop(kept)
            kept = schema
        if ceiling and report.median("backfill_logs_per_s"):
            report.add("ratio_to_ceiling_dense", report.median("backfill_logs_per_s") / ceiling)
        if kept is not None:
            for i in range(args.runs):
                say(f"dense: rebuild {i + 1}/{args.runs} of every projection from the store ...")
                try:
                    r = rebuild(chain.ws, kept, info.logs, BACKFILL_TIMEOUT)
                except RunFailed as exc:
                    report.fail(f"rebuild {i + 1}", exc)
                    break
                report.add("rebuild_events_per_s", r["events_per_s"])
                expected = _expected(chain, info.head)
                report.check(f"rebuild {i + 1}", tables_match(bench.database_url, kept, expected))
                say(
                    f"  {r['events_per_s']:,.0f} events/s, {r['seconds']:.1f}s wall, peak RSS {r['peak_rss_mb']:.0f} MB"
                )
        _enrichment_cost(bench, chain)
        _prefetch_gain(bench, chain)
        _baseline(bench, chain)
        if kept is not None:
            _latency(bench, chain, kept, None, "_default")
            if not args.skip_fast_poll_latency:
                _latency(bench, chain, kept, 0.02, "")
            _verify(bench, chain, kept)
            if not args.skip_api:
                _api(bench, chain, kept)


def _enrichment_cost(bench: Bench, chain: LoadedChain) -> None:
    """What receipts and observations cost: a backfill with them, and one with the bloom check only."""
    report = bench.report
    say("dense: enrichment cost: backfill with receipts and observations, then with neither (bloom check only) ...")
    try:
        cost = enrichment_cost(chain.ws, chain.info.head, BACKFILL_TIMEOUT)
    except RunFailed as exc:
        report.fail("enrichment cost", exc)
        return
    report.add("backfill_logs_per_s_bloom_no_receipts", cost["bloom"]["logs_per_s"])
    report.add("backfill_logs_per_s_receipts", cost["receipts"]["logs_per_s"])
    report.add("receipts_over_bloom_time", cost["ratio"]["receipts_over_bloom_seconds"])
    say(
        f"  receipts: {cost['receipts']['logs_per_s']:,.0f} logs/s ({cost['receipts']['seconds']:.1f}s); "
        f"bloom, no receipts: {cost['bloom']['logs_per_s']:,.0f} logs/s ({cost['bloom']['seconds']:.1f}s); "
        f"time ratio {cost['ratio']['receipts_over_bloom_seconds']:.2f}"
    )


def _prefetch_gain(bench: Bench, chain: LoadedChain, latency_s: float = 0.02) -> None:
    """What prefetching the next range saves when every request takes a round trip to a remote provider."""
    report, label = bench.report, f"rtt{latency_s * 1000:.0f}ms"
    say(f"dense: prefetch off, then on, through a proxy adding {latency_s * 1000:.0f} ms to every request ...")
    try:
        expected = _expected(chain, chain.info.head)

        def check(variant: str, schema: str) -> None:
            report.check(f"backfill, {label}, {variant}", tables_match(bench.database_url, schema, expected))

        gain = prefetch_gain(chain.ws, chain.info.head, BACKFILL_TIMEOUT, latency_s, check)
    except RunFailed as exc:
        report.fail("prefetch gain", exc)
        return
    report.add(f"backfill_logs_per_s_{label}_no_prefetch", gain["no_prefetch"]["logs_per_s"])
    report.add(f"backfill_logs_per_s_{label}_prefetch", gain["prefetch"]["logs_per_s"])
    report.add(f"prefetch_speedup_{label}", gain["ratio"]["prefetch_speedup"])
    say(
        f"  prefetch off: {gain['no_prefetch']['logs_per_s']:,.0f} logs/s; on: {gain['prefetch']['logs_per_s']:,.0f} "
        f"logs/s (peak RSS {gain['no_prefetch']['peak_rss_mb']:.0f} / {gain['prefetch']['peak_rss_mb']:.0f} MB); "
        f"{gain['ratio']['prefetch_speedup']:.2f}x"
    )


def _verify(bench: Bench, chain: LoadedChain, kept: str) -> None:
    """`rbtc-indexer verify` over every user at one pinned block, timed; its differences fail a check."""
    report = bench.report
    say("dense: verify: the tables against the chain at one pinned block (Multicall3 aggregate3) ...")
    try:
        block = prepare_verify(chain.ws, kept)
        v = time_verify(chain.ws, kept, runs=bench.args.runs)
    except (RunFailed, subprocess.SubprocessError) as exc:
        report.fail("verify", exc)
        return
    for own, wall in zip(v["seconds_runs"], v["wall_seconds_runs"], strict=True):
        report.add("verify_seconds", own)
        report.add("verify_wall_seconds", wall)
    report.extra["verify"] = v
    report.check("verify: tables equal the chain", sorted(v["differences_by_column"]), "the chain")
    say(
        f"  {v['users_checked']:,} users at block {block}: {v['seconds']:.2f}s ({v['wall_seconds']:.2f}s wall), "
        f"{v['chain_calls']:,} getter calls in {v['chain_requests']} requests, {v['differences']} differences"
    )


def _api(bench: Bench, chain: LoadedChain, kept: str) -> None:
    """The read API (`serve`) under load while the daemon follows the head."""
    report = bench.report
    say("dense: read API (serve) with the daemon following the head ...")
    try:
        api = run_api_bench(chain.ws, kept, say)
    except RunFailed as exc:
        report.fail("read API", exc)
        return
    for metric, value in api["figures"].items():
        report.add(metric, value)
    report.extra["api"] = api["detail"]


def _baseline(bench: Bench, chain: LoadedChain) -> None:
    logs = bench.args.baseline_logs
    say(
        "dense: baseline: web3 get_logs in 1000-block ranges, process_log, one INSERT per log"
        + (f" (the first {logs:,} logs)" if logs else " (the whole chain)")
        + " ..."
    )
    schema = chain.ws.new_schema("baseline")
    try:
        b = run_baseline(chain.ws.rpc_url, bench.database_url, schema, chain.info, logs)
    except psycopg.Error as exc:
        bench.report.fail("baseline", exc)
        return
    chain.ws.drop(schema)
    bench.report.add("baseline_logs_per_s", b["logs_per_s"])
    bench.report.extra["baseline_logs"] = b["logs"]
    bench.report.extra["baseline_to_block"] = b["to_block"]
    say(f"  {b['logs_per_s']:,.0f} logs/s over {b['logs']:,} logs (to block {b['to_block']}), {b['seconds']:.1f}s")
    if bench.report.median("backfill_logs_per_s"):
        bench.report.add("speedup_over_baseline", bench.report.median("backfill_logs_per_s") / b["logs_per_s"])


def _block_with_share_of_logs(info: ChainInfo, share: float) -> int:
    total = 0
    for block in sorted(info.block_logs):
        total += info.block_logs[block]
        if total >= share * info.logs:
            return block
    return info.head


def medium(bench: Bench) -> None:
    """The medium chain is generated at double length: 'full' is its first half, 'half' its first quarter."""
    report, args = bench.report, bench.args
    with loaded(bench, "medium") as chain:
        info = chain.info
        lengths = {
            "half": _block_with_share_of_logs(info, 0.25),
            "full": _block_with_share_of_logs(info, 0.5),
            "double": info.head,
        }
        full = lengths["full"]
        say(f"medium: ceiling to block {full} ({info.logs_up_to(full):,} logs) ...")
        ceiling = _ceiling(bench, chain, full, "ceiling_logs_per_s")
        scaling: dict[str, dict[str, float]] = {}
        kept: str | None = None
        for length, to_block in lengths.items():
            runs = args.runs if length == "full" else 1
            for i in range(runs):
                blocks = to_block - info.start_block + 1
                say(
                    f"medium: backfill at {length} length {i + 1}/{runs} (to block {to_block}, {blocks:,} blocks, "
                    f"{info.logs_up_to(to_block):,} logs) ..."
                )
                done = _backfill_checked(bench, chain, f"medium backfill ({length} length, run {i + 1})", to_block)
                if not done:
                    continue
                r, schema = done
                suffix = "" if length == "full" else f"_{length}"
                report.add(f"backfill_logs_per_s_medium{suffix}", r["logs_per_s"])
                report.add(f"peak_rss_mb_medium{suffix}", r["peak_rss_mb"])
                scaling.setdefault(length, {"to_block": to_block, "blocks": blocks, "logs": r["logs"]})
                if length == "full" and kept is None:
                    kept = schema
                else:
                    chain.ws.drop(schema)
        for length in scaling:
            suffix = "" if length == "full" else f"_{length}"
            scaling[length]["logs_per_s"] = report.median(f"backfill_logs_per_s_medium{suffix}") or 0.0
            scaling[length]["peak_rss_mb"] = max(report.samples.get(f"peak_rss_mb_medium{suffix}", [0.0]))
        report.extra["scaling_medium"] = scaling
        if len(scaling) == 3:
            rates = [s["logs_per_s"] for s in scaling.values()]
            rss = [s["peak_rss_mb"] for s in scaling.values()]
            report.add("scaling_logs_per_s_spread_medium", max(rates) / min(rates))
            report.add("scaling_rss_spread_medium", max(rss) / min(rss))
        if ceiling and report.median("backfill_logs_per_s_medium"):
            report.add("ratio_to_ceiling_medium", report.median("backfill_logs_per_s_medium") / ceiling)
        if kept is not None:
            say("medium: rebuild of every projection from the store ...")
            try:
                r = rebuild(chain.ws, kept, info.logs_up_to(full), BACKFILL_TIMEOUT)
                report.add("rebuild_events_per_s_medium", r["events_per_s"])
                report.check("medium rebuild", tables_match(bench.database_url, kept, _expected(chain, full)))
                say(f"  {r['events_per_s']:,.0f} events/s, {r['seconds']:.1f}s wall")
            except RunFailed as exc:
                report.fail("medium rebuild", exc)


def sparse(bench: Bench) -> None:
    report = bench.report
    with loaded(bench, "sparse") as chain:
        info = chain.info
        blocks = info.head - info.start_block + 1
        say(f"sparse: ceiling (eth_getLogs over {blocks:,} blocks in ranges of {bench.args.max_block_range}) ...")
        logs_per_s = _ceiling(bench, chain, info.head, "ceiling_logs_per_s_sparse")
        if logs_per_s:
            report.add("ceiling_blocks_per_s_sparse", blocks * logs_per_s / max(1, info.logs))
        count = min(blocks, SPARSE_HEADER_CEILING_BLOCKS)
        say(f"sparse: header ceiling (eth_getBlockByNumber for {count:,} blocks, batches of {HEADER_BATCH}) ...")
        try:
            rate = headers_per_s(chain.ws.rpc_url, info.start_block, count, HEADER_BATCH)
            report.add("ceiling_headers_per_s_sparse", rate)
            parallel = headers_per_s(chain.ws.rpc_url, info.start_block, count, HEADER_BATCH, HEADER_REQUESTS_IN_FLIGHT)
            report.add("ceiling_headers_per_s_sparse_in_flight", parallel)
            say(f"  {rate:,.0f} headers/s one batch at a time, {parallel:,.0f} {HEADER_REQUESTS_IN_FLIGHT} at once")
        except (RuntimeError, OSError) as exc:
            report.fail("sparse header ceiling", exc)
        to_block = info.head
        if bench.args.sparse_blocks:
            to_block = min(info.head, info.start_block + bench.args.sparse_blocks - 1)
        scanned = to_block - info.start_block + 1
        with_logs = sum(1 for b in info.block_logs if b <= to_block)
        say(
            f"sparse: backfill over {scanned:,} blocks ({info.logs_up_to(to_block):,} logs in {with_logs:,} blocks) ..."
        )
        done = _backfill_checked(bench, chain, "sparse backfill", to_block, SPARSE_TIMEOUT)
        if done:
            r, schema = done
            report.extra["sparse_blocks_backfilled"] = scanned
            report.add("backfill_blocks_per_s_sparse", scanned / r["seconds"])
            report.add("backfill_logs_per_s_sparse", r["logs_per_s"])
            report.add("peak_rss_mb_sparse", r["peak_rss_mb"])
            chain.ws.drop(schema)
        # The bloom completeness mode reads the headers of blocks with logs only (receipts still enrich them).
        say(f'sparse: backfill over {scanned:,} blocks with completeness = "bloom" ...')
        chain.ws.extra_chain_toml = 'completeness = "bloom"\n'
        try:
            done = _backfill_checked(bench, chain, "sparse backfill, bloom completeness", to_block, SPARSE_TIMEOUT)
        finally:
            chain.ws.extra_chain_toml = ""
        if done:
            r, schema = done
            report.add("backfill_blocks_per_s_sparse_bloom", scanned / r["seconds"])
            chain.ws.drop(schema)


PHASES: dict[str, Callable[[Bench], None]] = {"dense": dense, "medium": medium, "sparse": sparse}
