"""Where a backfill's CPU goes: one `run --to-block` of a cached chain, with every process's CPU time read.

    .venv/bin/python -m bench.cpu [--shape dense] [--runs 1] [--quick]

While the backfill runs, /proc is read every 0.1 s and each process's CPU time (user + system) is sorted into
a group: the `run` process, its projection process (its child), PostgreSQL, anvil, kernel threads, this
harness (which reads /proc), processes at a positive nice level (other jobs), and the rest. It prints the
CPU-seconds of each group, the wall time and the CPU the machine's cores could give at perfect overlap in the
time a target rate allows, so that "is this CPU-bound?" is a measurement, not a guess. A process that ends
between two readings loses at most its last 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass

from bench.chain import ChainParams, cached_chain, load_chain
from bench.measure import Workspace, _popen, _wait

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessTime:
    ppid: int
    comm: str
    nice: int
    cpu_s: float
    cmdline: str


def _read(pid: int) -> ProcessTime | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is the state (field 3 of proc(5))
    return ProcessTime(
        ppid=int(fields[1]),
        comm=comm,
        nice=int(fields[16]),
        cpu_s=(int(fields[11]) + int(fields[12])) / TICKS,
        cmdline=cmdline,
    )


def snapshot() -> dict[int, ProcessTime]:
    """Every process's CPU time now."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (process := _read(int(entry))) is not None:
            found[int(entry)] = process
    return found


def group_of(pid: int, process: ProcessTime, run_pid: int) -> str:
    if pid == run_pid:
        return "run process"
    if process.ppid == run_pid and "python" in process.cmdline:
        return "projection process"
    if pid == os.getpid():
        return "this harness"
    if process.comm.startswith("postgres"):
        return "postgresql"
    if process.comm.startswith("anvil"):
        return "anvil"
    if process.ppid == 2:  # kthreadd's children: writeback and the like, for PostgreSQL's writes mostly
        return "kernel threads"
    if process.nice > 0:
        return "niced (other jobs)"
    return "other"


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(t) for t in fh.readline().split()[1:8]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / TICKS, sum(ticks) / TICKS


def measure(ws: Workspace, schema: str, to_block: int) -> tuple[float, int, dict[str, float], float]:
    """Backfill to `to_block`: (wall seconds, exit code, CPU-seconds per group, machine-busy CPU-seconds)."""
    before = snapshot()
    last = dict(before)
    groups_of: dict[int, str] = {}  # fixed at first sight: an orphaned projection process stays one
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            now = snapshot()
            for pid, process in now.items():
                groups_of.setdefault(pid, group_of(pid, process, proc.pid))
            last.update(now)

    busy0, _ = machine_busy()
    started = time.monotonic()
    proc = _popen(ws.config(schema), ["run", "--to-block", str(to_block)], ws.tmp / f"{schema}.log")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code, _ = _wait(proc, 1800)
    finally:
        done.set()
        sampler.join()
    wall = time.monotonic() - started
    last.update(snapshot())
    busy1, _ = machine_busy()
    groups: dict[str, float] = {}
    for pid, process in last.items():
        was = before[pid].cpu_s if pid in before and before[pid].comm == process.comm else 0.0
        group = groups_of.get(pid) or group_of(pid, process, proc.pid)
        groups[group] = groups.get(group, 0.0) + process.cpu_s - was
    return wall, code, groups, busy1 - busy0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="dense")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--to-block", type=int, default=None, help="default: the chain's head")
    parser.add_argument("--target", type=float, default=20_000, help="logs/s the comparison is made at")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    info, directory, _ = cached_chain(ChainParams.for_shape(args.shape, args.quick))
    to_block = args.to_block or info.head
    logs = info.logs_up_to(to_block)
    cores = os.cpu_count() or 1
    node = load_chain(directory, info)
    ws = Workspace(args.database_url, node.url, info)
    failed = 0
    try:
        for run in range(args.runs):
            wall, code, groups, busy = measure(ws, ws.new_schema(f"cpu{run}"), to_block)
            failed += code != 0
            ours = sum(v for k, v in groups.items() if k != "niced (other jobs)" and k != "this harness")
            at_target = logs / args.target
            print(
                f"{args.shape} to block {to_block}, run {run + 1}: {logs:,} logs in {wall:.1f} s = "
                f"{logs / wall:,.0f} logs/s (exit {code}); machine busy {busy:.1f} CPU-s of {cores * wall:.1f}"
            )
            for group, seconds in sorted(groups.items(), key=lambda item: -item[1]):
                if seconds >= 0.05:
                    print(f"  {group:<20} {seconds:6.1f} CPU-s")
            print(
                f"  all but this harness and niced jobs: {ours:.1f} CPU-s; at {args.target:,.0f} logs/s the chain "
                f"takes {at_target:.1f} s, {cores * at_target:.1f} CPU-s on {cores} cores at perfect overlap"
            )
    finally:
        ws.cleanup()
        node.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
