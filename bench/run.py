"""`make bench`: measure the indexer on a large generated chain and compare it with a hand-written baseline.

    .venv/bin/python -m bench.run [--quick] [--runs N] [--latency-blocks N] [--baseline-logs N]
                                  [--max-block-range N] [--regenerate]

Prints a table (median, min, max over the runs, the target and whether it is met) and writes the figures to
bench/results/latest.json and a dated copy. Exits non-zero when any read table differs from the scenario
model after any benchmark run (or a run fails); a missed performance target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.api import run_api_bench
from bench.baseline import run_baseline
from bench.chain import CACHE_DIR, ChainParams, cached_chain, fingerprint, load_chain, read_model
from bench.enrichment import enrichment_cost
from bench.measure import RunFailed, Workspace, backfill, head_latency, rebuild, stored_logs, tables_match
from bench.verify_timing import prepare as prepare_verify
from bench.verify_timing import time_verify

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGETS = {
    "backfill_logs_per_s": (">=", 15_000),
    "rebuild_events_per_s": (">=", 30_000),
    "head_latency_ms_p50": ("<=", 100),
    "head_latency_ms_p99": ("<=", 500),
    "peak_rss_mb": ("<=", 300),
    "peak_rss_mb_half_chain": ("<=", 300),
    "rss_growth_full_over_half": ("<=", 1.25),
    "api_balances_rps": (">=", 2_000),
    "api_balances_p99_ms": ("<=", 10),
    "api_transactions_p99_ms": ("<=", 20),
    "api_304_rps": (">=", 5_000),
    "push_latency_ms_p99_1000_clients": ("<=", 50),
    "push_latency_ms_p99_5000_clients": ("<=", 250),
}


def _say(message: str) -> None:
    print(message, flush=True)


def _database_url() -> str:
    return (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def _prune_cache(keep: set[str]) -> None:
    """Remove cached chains of earlier parameters or contracts (each is a few hundred MB)."""
    for entry in CACHE_DIR.iterdir() if CACHE_DIR.exists() else []:
        if entry.is_dir() and entry.name.split(".")[0] not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "indexer", "projections", "sql"], cwd=REPO, capture_output=True, text=True
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


class Report:
    """Collects runs per metric, the table checks and failures."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.checks: list[tuple[str, bool, str]] = []
        self.failures: list[str] = []
        self.extra: dict[str, Any] = {}

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def check(self, name: str, differing: list[str], against: str = "the model") -> None:
        self.checks.append((name, not differing, ", ".join(differing)))
        if differing:
            _say(f"  !! {name}: tables differ from {against}: {', '.join(differing)}")

    def fail(self, phase: str, exc: BaseException) -> None:
        self.failures.append(f"{phase}: {exc}")
        self.checks.append((phase, False, "run failed"))
        _say(f"  !! {phase} failed: {exc}")

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None

    @property
    def tables_match_model(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "timeout"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _met(metric: str, value: float | None) -> str:
    if metric not in TARGETS:
        return ""
    if value is None:
        return "n/a"
    op, target = TARGETS[metric]
    ok = value >= target if op == ">=" else value <= target
    return "yes" if ok else "NO"


ROWS = [
    ("backfill_logs_per_s", "backfill, logs/s (RPC -> store -> all projections)"),
    ("time_to_first_block_s", "backfill, time to first processed block, s"),
    ("peak_rss_mb", "backfill peak RSS, MB (full chain)"),
    ("peak_rss_mb_half_chain", "backfill peak RSS, MB (half chain)"),
    ("rss_growth_full_over_half", "peak RSS growth, full / half chain"),
    ("half_backfill_logs_per_s", "backfill of half the chain, logs/s"),
    ("rebuild_events_per_s", "rebuild all projections, events/s"),
    ("head_latency_ms_p50", "head latency p50, ms (mined -> balances+transactions)"),
    ("head_latency_ms_p99", "head latency p99, ms"),
    ("verify_seconds", "verify, every user at one pinned block, s"),
    ("verify_wall_seconds", "verify, whole command (process start to exit), s"),
    ("baseline_logs_per_s", "baseline (web3 get_logs + row inserts), logs/s"),
    ("speedup_over_baseline", "backfill / baseline"),
    ("api_balances_rps", "API balances, req/s at 32 connections"),
    ("api_balances_p99_ms", "API balances p99, ms"),
    ("api_transactions_p99_ms", "API transactions?limit=50 p99, ms"),
    ("api_304_rps", "API 304 revalidations, req/s"),
    ("push_latency_ms_p99_1000_clients", "push commit -> client p99, ms, 1,000 clients"),
    ("push_latency_ms_p99_5000_clients", "push commit -> client p99, ms, 5,000 clients"),
]


def print_table(report: Report) -> None:
    header = ("metric", "median", "min", "max", "runs", "target", "met?")
    rows = [header]
    for metric, label in ROWS:
        values = report.samples.get(metric)
        target = TARGETS.get(metric)
        rows.append(
            (
                label,
                _fmt(report.median(metric)),
                _fmt(min(values)) if values else "-",
                _fmt(max(values)) if values else "-",
                str(len(values or [])),
                f"{target[0]} {target[1]:,}" if target else "",
                _met(metric, report.median(metric)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in pairs]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small chain (about 20k logs) to check the harness")
    parser.add_argument("--runs", type=int, default=3, help="backfill and rebuild repetitions (default 3)")
    parser.add_argument("--latency-blocks", type=int, default=None, help="blocks timed at the head (default 250)")
    parser.add_argument(
        "--baseline-logs",
        type=int,
        default=None,
        help="index only a prefix of at least this many logs with the baseline (default: the whole "
        "chain, about 100 s at ~2,500 logs/s)",
    )
    parser.add_argument(
        "--max-block-range",
        type=int,
        default=2000,
        help="chain.max_block_range for the daemon (default 2000, the project's default); "
        "initial_block_range is min(100, this)",
    )
    parser.add_argument("--skip-api", action="store_true", help="leave out the read API benchmark (bench/api.py)")
    parser.add_argument("--regenerate", action="store_true", help="drop the cached chain and generate it again")
    args = parser.parse_args(argv)
    started = time.monotonic()
    params = ChainParams.quick() if args.quick else ChainParams()
    latency_blocks = args.latency_blocks or (200 if args.quick else 250)
    baseline_logs = args.baseline_logs
    database_url = _database_url()
    report = Report()

    if args.regenerate:
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
    info, directory, generated = cached_chain(params, _say)
    _prune_cache({fingerprint(ChainParams()), fingerprint(ChainParams.quick())})
    blocks = info.head - info.start_block + 1
    _say(
        f"chain {info.key}: {info.logs:,} protocol logs, {info.transactions:,} transactions, {blocks:,} blocks, "
        f"{params.users:,} users ({'generated in' if generated else 'cached; generation took'} "
        f"{info.generation_seconds:.0f}s)"
    )
    model = read_model(directory)
    full_expected = model.expected_tables()
    half_block = info.block_with_half_the_logs()
    half_hashes = [a.tx_hash for a in model.actions.values() if a.block_number <= half_block]
    # Half the chain ends far below the head, where a full node has no state: dispute resolutions (which emit
    # nothing and are read by eth_call) are not visible there yet.
    half_expected = model.expected_tables(half_hashes, resolutions_visible=False)
    node = load_chain(directory, info)
    ws = Workspace(database_url, node.url, info)
    ws.max_block_range = args.max_block_range
    ws.initial_block_range = min(100, ws.max_block_range)
    _say(f"daemon config: max_block_range {ws.max_block_range}, initial_block_range {ws.initial_block_range}")
    backfill_timeout = 600.0
    kept: str | None = None
    try:
        _say(f"backfill of half the chain (to block {half_block}, {info.logs_up_to(half_block):,} logs) ...")
        try:
            schema = ws.new_schema("half")
            r = backfill(ws, schema, half_block, backfill_timeout)
            report.add("peak_rss_mb_half_chain", r["peak_rss_mb"])
            report.add("half_backfill_logs_per_s", r["logs_per_s"])
            report.check("half-chain backfill", tables_match(database_url, schema, half_expected))
            _say(f"  {r['logs_per_s']:,.0f} logs/s, {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB")
            ws.drop(schema)
        except RunFailed as exc:
            report.fail("half-chain backfill", exc)

        for i in range(args.runs):
            _say(f"backfill {i + 1}/{args.runs} of the full chain (to block {info.head}, {info.logs:,} logs) ...")
            schema = ws.new_schema(f"full{i}")
            try:
                r = backfill(ws, schema, info.head, backfill_timeout)
            except RunFailed as exc:
                report.fail(f"backfill {i + 1}", exc)
                continue
            for metric in ("logs_per_s", "time_to_first_block_s", "peak_rss_mb"):
                report.add("backfill_logs_per_s" if metric == "logs_per_s" else metric, r[metric])
            report.check(f"backfill {i + 1}", tables_match(database_url, schema, full_expected))
            if kept is None:
                in_store = stored_logs(database_url, schema)
                report.extra["stored_logs"] = in_store
                report.check("event store holds every log once", [] if in_store == info.logs else ["stored_events"])
            _say(
                f"  {r['logs_per_s']:,.0f} logs/s, {r['seconds']:.1f}s, first block after "
                f"{r['time_to_first_block_s']:.2f}s, peak RSS {r['peak_rss_mb']:.0f} MB"
            )
            if kept is not None:
                ws.drop(kept)
            kept = schema

        if kept is not None:
            for i in range(args.runs):
                _say(f"rebuild {i + 1}/{args.runs} of every projection from the store ...")
                try:
                    r = rebuild(ws, kept, info.logs, backfill_timeout)
                except RunFailed as exc:
                    report.fail(f"rebuild {i + 1}", exc)
                    break
                report.add("rebuild_events_per_s", r["events_per_s"])
                report.check(f"rebuild {i + 1}", tables_match(database_url, kept, full_expected))
                _say(
                    f"  {r['events_per_s']:,.0f} events/s, {r['seconds']:.1f}s wall (all five projections in one "
                    f"pass), peak RSS {r['peak_rss_mb']:.0f} MB"
                )

        _say("enrichment cost: backfill with receipts and observations, then with neither (bloom check only) ...")
        try:
            cost = enrichment_cost(ws, info.head, backfill_timeout)
            report.add("backfill_logs_per_s_bloom_no_receipts", cost["bloom"]["logs_per_s"])
            report.add("backfill_logs_per_s_receipts", cost["receipts"]["logs_per_s"])
            report.add("receipts_over_bloom_time", cost["ratio"]["receipts_over_bloom_seconds"])
            _say(
                f"  receipts: {cost['receipts']['logs_per_s']:,.0f} logs/s ({cost['receipts']['seconds']:.1f}s); "
                f"bloom, no receipts: {cost['bloom']['logs_per_s']:,.0f} logs/s ({cost['bloom']['seconds']:.1f}s); "
                f"time ratio {cost['ratio']['receipts_over_bloom_seconds']:.2f}"
            )
        except RunFailed as exc:
            report.fail("enrichment cost", exc)

        _say(
            "baseline: web3 get_logs in 1000-block ranges, process_log, one INSERT per log"
            + (f" (the first {baseline_logs:,} logs)" if baseline_logs else " (the whole chain)")
            + " ..."
        )
        schema = ws.new_schema("baseline")
        b = run_baseline(node.url, database_url, schema, info, baseline_logs)
        ws.drop(schema)
        report.add("baseline_logs_per_s", b["logs_per_s"])
        report.extra["baseline_logs"] = b["logs"]
        report.extra["baseline_to_block"] = b["to_block"]
        _say(f"  {b['logs_per_s']:,.0f} logs/s over {b['logs']:,} logs (to block {b['to_block']}), {b['seconds']:.1f}s")
        if report.median("backfill_logs_per_s"):
            report.add("speedup_over_baseline", report.median("backfill_logs_per_s") / b["logs_per_s"])

        if kept is not None:
            _say(f"head latency over {latency_blocks} blocks mined one at a time, daemon following ...")
            try:
                lat = head_latency(ws, kept, model, latency_blocks, params.seed + 99, _say)
                report.add("head_latency_ms_p50", lat["p50_ms"])
                report.add("head_latency_ms_p99", lat["p99_ms"])
                report.extra["head_latency"] = lat
                report.check("head latency (daemon following live)", lat["differing_tables"])
                _say(
                    f"  p50 {_fmt(lat['p50_ms'])} ms, p99 {_fmt(lat['p99_ms'])} ms, max {_fmt(lat['max_ms'])} ms, "
                    f"{lat['timeouts']} blocks not visible within 10s"
                )
            except RunFailed as exc:
                report.fail("head latency", exc)

        if kept is not None:
            _say("verify: the tables against the chain at one pinned block (Multicall3 aggregate3) ...")
            try:
                block = prepare_verify(ws, kept)
                v = time_verify(ws, kept, runs=args.runs)
                for own, wall in zip(v["seconds_runs"], v["wall_seconds_runs"], strict=True):
                    report.add("verify_seconds", own)
                    report.add("verify_wall_seconds", wall)
                report.extra["verify"] = v
                report.check("verify: tables equal the chain", sorted(v["differences_by_column"]), "the chain")
                _say(
                    f"  {v['users_checked']:,} users at block {block}: {v['seconds']:.2f}s ({v['wall_seconds']:.2f}s "
                    f"wall), {v['chain_calls']:,} getter calls in {v['chain_requests']} requests, "
                    f"{v['differences']} differences"
                )
            except (RunFailed, subprocess.SubprocessError) as exc:
                report.fail("verify", exc)

        if kept is not None and not args.skip_api:
            _say("read API (serve) with the daemon following the head ...")
            try:
                api = run_api_bench(ws, kept, _say)
                for metric, value in api["figures"].items():
                    report.add(metric, value)
                report.extra["api"] = api["detail"]
            except RunFailed as exc:
                report.fail("read API", exc)
    finally:
        ws.cleanup()
        node.stop()

    full_rss, half_rss = report.samples.get("peak_rss_mb"), report.samples.get("peak_rss_mb_half_chain")
    if full_rss and half_rss:
        report.add("rss_growth_full_over_half", max(full_rss) / max(half_rss))
    total = time.monotonic() - started
    print()
    print(
        f"rbtc-indexer benchmark: {info.logs:,} logs in {blocks:,} blocks ({params.users:,} users)"
        + (", --quick" if args.quick else "")
        + f", {args.runs} runs, {os.cpu_count()} CPUs, total {total:.0f}s"
    )
    print_table(report)
    if baseline_logs and report.extra.get("baseline_logs", 0) < info.logs:
        done = report.extra["baseline_logs"]
        print(f"(the baseline indexed the first {done:,} logs only, to stay within the time budget)")
    print()
    for name, ok, detail in report.checks:
        print(f"  {'ok ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""))
    if report.tables_match_model:
        print("tables_match_model: true (every read table equals the scenario model after every run)")
    else:
        print()
        print("!" * 100)
        print("!! tables_match_model: FALSE - a table differed from the model or the chain, or a run failed (above)")
        print("!" * 100)

    def first(metric: str, pick: Any = statistics.median) -> float | None:
        values = report.samples.get(metric)
        if not values:
            return None
        value = pick(values)
        return None if math.isinf(value) else round(value, 3)

    now = dt.datetime.now(dt.UTC)
    document = {
        "backfill_logs_per_s": first("backfill_logs_per_s"),
        "time_to_first_block_s": first("time_to_first_block_s"),
        "rebuild_events_per_s": first("rebuild_events_per_s"),
        "head_latency_ms_p50": first("head_latency_ms_p50"),
        "head_latency_ms_p99": first("head_latency_ms_p99"),
        "peak_rss_mb": first("peak_rss_mb", max),
        "peak_rss_mb_half_chain": first("peak_rss_mb_half_chain", max),
        "baseline_logs_per_s": first("baseline_logs_per_s"),
        "baseline_logs": report.extra.get("baseline_logs"),
        "speedup_over_baseline": first("speedup_over_baseline"),
        **{m: first(m) for m in report.samples if m.startswith(("api_", "push_latency_"))},
        "logs": info.logs,
        "tables_match_model": report.tables_match_model,
        "blocks": blocks,
        "transactions": info.transactions,
        "users": params.users,
        "quick": args.quick,
        "runs": {
            metric: [round(v, 3) if not math.isinf(v) else None for v in values]
            for metric, values in report.samples.items()
        },
        "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in report.checks],
        "failures": report.failures,
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "daemon_max_block_range": ws.max_block_range,
        "chain_key": info.key,
        "chain_generated_this_run": generated,
        "chain_generation_s": info.generation_seconds,
        "total_s": round(total, 1),
        "git": _git(),
        "cpus": os.cpu_count(),
        "timestamp": now.isoformat(timespec="seconds"),
        **{k: v for k, v in report.extra.items() if k not in ("baseline_logs",)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, default=str)
    (RESULTS / "latest.json").write_text(text)
    dated = RESULTS / f"{now.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    dated.write_text(text)
    print(f"figures written to {(RESULTS / 'latest.json').relative_to(REPO)} and {dated.relative_to(REPO)}")
    return 0 if report.tables_match_model else 1


if __name__ == "__main__":
    sys.exit(main())
