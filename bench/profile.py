"""Where the backfill's time goes: one `run --to-block` of a cached chain, sampled with py-spy.

    .venv/bin/python -m bench.profile [--shape medium] [--quick] [--rate 100] [--out bench/results/profile]

py-spy (`pip install py-spy`) samples the daemon's every thread, idle ones included, and those of its projection
process (labelled `projection process:`), until it exits; the raw
(collapsed-stack) file is kept and summarised: samples per thread, the share spent waiting on PostgreSQL
(inside psycopg's wait), on the RPC (inside requests/urllib3/socket reads), and the functions with the most
samples on top of the stack (self time) and anywhere on the stack (inclusive time) per thread. With `--gil`
only the thread holding the GIL is sampled, which shows how the process's one core of Python is shared.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.chain import ChainParams, cached_chain, load_chain
from bench.measure import Workspace, _popen, _wait

REPO = Path(__file__).resolve().parents[1]
PG_WAIT = ("Connection.wait (psycopg/", "psycopg/waiting.py", "wait_c (")
RPC_WAIT = ("urllib3/", "http/client.py", "socket.py", "ssl.py")


def _thread_of(frames: list[str]) -> tuple[str, list[str]]:
    """(thread label, the stack below it). With --subprocesses py-spy roots each stack in its processes: a
    stack two processes deep is the projection process's. Threads of one name (each range's prefetch
    thread) count as one."""
    processes = 0
    while processes < len(frames) and frames[processes].startswith("process "):
        processes += 1
    rest = frames[processes:]
    name = rest[0] if rest and rest[0].startswith("thread ") else "thread"
    if "): " in name:
        name = name.split("): ", 1)[1]
    elif name.startswith("thread ("):
        name = "main"
    code = rest[1:] if rest and rest[0].startswith("thread ") else rest
    return ("projection process: " if processes > 1 else "") + name, code


def summarise(raw: Path, top: int = 15) -> str:
    """A plain-text summary of a py-spy raw file (one `frame;frame;... count` line per distinct stack)."""
    per_thread: collections.Counter[str] = collections.Counter()
    self_time: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    waits: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, frames = _thread_of(stack.split(";"))
        if not frames:
            continue
        total += count
        per_thread[thread] += count
        self_time[thread][frames[-1]] += count
        for frame in set(frames):
            inclusive[thread][frame] += count
        top_frames = ";".join(frames[-4:])  # a wait is what the thread is doing now, not what called it
        kind = (
            "postgres"
            if any(p in top_frames for p in PG_WAIT)
            else "rpc"
            if any(p in top_frames for p in RPC_WAIT)
            else ""
        )
        if kind:
            waits[thread][kind] += count
    out = [f"{total} samples in {len(per_thread)} threads"]
    for thread, n in per_thread.most_common():
        w = waits[thread]
        out.append(
            f"\n== {thread}: {n} samples ({100 * n / max(1, total):.1f} %); waiting on PostgreSQL "
            f"{100 * w['postgres'] / max(1, n):.1f} %, on the RPC {100 * w['rpc'] / max(1, n):.1f} %"
        )
        out.append("  self:")
        out.extend(f"    {100 * c / n:5.1f} %  {f}" for f, c in self_time[thread].most_common(top))
        out.append("  inclusive:")
        out.extend(f"    {100 * c / n:5.1f} %  {f}" for f, c in inclusive[thread].most_common(top))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="medium")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    parser.add_argument("--to-block", type=int, default=None, help="default: the block with half the logs")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "profile"))
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--summarise", metavar="RAW", help="only summarise an earlier raw file")
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL: where the process's CPU goes"
    )
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    params = ChainParams.for_shape(args.shape, args.quick)
    info, directory, _ = cached_chain(params)
    to_block = args.to_block or info.block_with_half_the_logs()
    node = load_chain(directory, info)
    ws = Workspace(args.database_url, node.url, info)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".raw.txt")
    try:
        schema = ws.new_schema("profile")
        started = time.monotonic()
        proc = _popen(ws.config(schema), ["run", "--to-block", str(to_block)], ws.tmp / "profile.log")
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(proc.pid), "--threads", "--subprocesses", "--rate", str(args.rate)]
            + (["--gil"] if args.gil else ["--idle"])
            + ["--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        code, rss = _wait(proc, 1800)
        seconds = time.monotonic() - started
        spy.wait(timeout=60)
    finally:
        ws.cleanup()
        node.stop()
    logs = info.logs_up_to(to_block)
    header = (
        f"{args.shape} chain {info.key}, backfill to block {to_block}: {logs:,} logs in {seconds:.1f}s "
        f"({logs / seconds:,.0f} logs/s under the profiler, exit {code}, peak RSS {rss:.0f} MB)"
    )
    text = header + "\n" + summarise(raw)
    out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
