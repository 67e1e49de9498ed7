"""`make bench`: measure the indexer on three generated chain shapes (dense, medium, sparse) against the
node's own ceiling and a hand-written baseline.

    .venv/bin/python -m bench.run [--quick] [--shapes dense,medium,sparse] [--runs N] [--latency-blocks N]
                                  [--baseline-logs N] [--max-block-range N] [--regenerate]

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

from bench.chain import CACHE_DIR, SHAPES, fingerprint
from bench.phases import PHASES, Bench
from bench.report import TARGETS, Report, print_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small chains of each shape, to check the harness")
    parser.add_argument(
        "--shapes", default=",".join(PHASES), help=f"comma-separated chain shapes to run (default {','.join(PHASES)})"
    )
    parser.add_argument("--runs", type=int, default=3, help="backfill and rebuild repetitions (default 3)")
    parser.add_argument(
        "--latency-blocks", type=int, default=None, help="blocks timed at the head, per setting (default 300)"
    )
    parser.add_argument(
        "--skip-fast-poll-latency",
        action="store_true",
        help="measure head latency with the shipped defaults only (not also with a 20 ms poll)",
    )
    parser.add_argument(
        "--baseline-logs",
        type=int,
        default=None,
        help="index only a prefix of at least this many logs of the dense chain with the baseline (default: the "
        "whole chain, about 100 s at ~2,500 logs/s)",
    )
    parser.add_argument(
        "--max-block-range",
        type=int,
        default=2000,
        help="chain.max_block_range for the daemon (default 2000, the project's default); "
        "initial_block_range is min(100, this); also the ceiling's eth_getLogs range",
    )
    parser.add_argument(
        "--sparse-blocks",
        type=int,
        default=None,
        help="backfill only the first N blocks of the sparse chain (default: all of it); blocks/s is uniform "
        "along it, the time is not",
    )
    parser.add_argument("--skip-api", action="store_true", help="leave out the read API benchmark (bench/api.py)")
    parser.add_argument("--regenerate", action="store_true", help="drop the cached chains and generate them again")
    args = parser.parse_args(argv)
    args.latency_blocks = args.latency_blocks or (100 if args.quick else 300)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in PHASES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(PHASES)}")
    started = time.monotonic()
    if args.regenerate:
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
    _prune_cache({fingerprint(p) for pair in SHAPES.values() for p in pair})
    load_before = os.getloadavg()
    bench = Bench(args, Report(), _database_url())
    for shape in shapes:
        phase_started = time.monotonic()
        PHASES[shape](bench)
        bench.report.extra.setdefault("phase_seconds", {})[shape] = round(time.monotonic() - phase_started, 1)
    report = bench.report
    full_rss, half_rss = report.samples.get("peak_rss_mb"), report.samples.get("peak_rss_mb_half_chain")
    if full_rss and half_rss:
        report.add("rss_growth_full_over_half", max(full_rss) / max(half_rss))
    total = time.monotonic() - started
    load_after = os.getloadavg()
    print()
    print(
        f"rbtc-indexer benchmark: shapes {', '.join(shapes)}"
        + (" (--quick)" if args.quick else "")
        + f", {args.runs} runs, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start and "
        f"{load_after[0]:.1f} at the end, total {total:.0f}s"
    )
    for shape, c in bench.chains.items():
        print(
            f"  {shape}: {c['logs']:,} logs in {c['blocks']:,} blocks ({c['blocks_with_logs']:,} with logs, "
            f"{c['logs'] / c['blocks']:.1f} logs per block), {c['transactions']:,} transactions, {c['users']:,} users"
        )
    print_table(report)
    dense = bench.chains.get("dense")
    if args.baseline_logs and dense and report.extra.get("baseline_logs", 0) < dense["logs"]:
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
        print("!! tables_match_model: FALSE - a read table differed from the model, or a run failed (see above)")
        print("!" * 100)

    def first(metric: str, pick: Any = statistics.median) -> float | None:
        values = report.samples.get(metric)
        if not values:
            return None
        value = pick(values)
        return None if math.isinf(value) else round(value, 3)

    now = dt.datetime.now(dt.UTC)
    peaks = {m for m in report.samples if m.startswith("peak_rss_mb")}
    document = {
        **{metric: first(metric, max if metric in peaks else statistics.median) for metric in report.samples},
        "baseline_logs": report.extra.get("baseline_logs"),
        "logs": dense["logs"] if dense else None,
        "tables_match_model": report.tables_match_model,
        "blocks": dense["blocks"] if dense else None,
        "transactions": dense["transactions"] if dense else None,
        "users": dense["users"] if dense else None,
        "chains": bench.chains,
        "quick": args.quick,
        "shapes": shapes,
        "runs": {
            metric: [round(v, 3) if not math.isinf(v) else None for v in values]
            for metric, values in report.samples.items()
        },
        "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in report.checks],
        "failures": report.failures,
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "daemon_max_block_range": args.max_block_range,
        "total_s": round(total, 1),
        "load_average_start": round(load_before[0], 2),
        "load_average_end": round(load_after[0], 2),
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
