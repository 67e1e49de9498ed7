"""The read API under load: `serve` against the benchmark chain's tables while the daemon follows the head.

    .venv/bin/python -m bench.api [--quick] [--seconds N] [--clients 1000,5000]   (standalone)
    bench.run calls run_api_bench() after the head-latency phase.

- Routes at 32 connections with `hey` (Debian's package; `make bench` installs it): req/s, p50, p99 per route,
  while a block is mined every second (the daemon follows, the data version moves).
- 304 revalidations: the same route with the current ETag in If-None-Match (no blocks mined meanwhile).
- The server's own ceiling, first: a bare ASGI app that answers every request with the balances route's body and
  headers, under `serve`'s uvicorn settings, at the same connections (no handler, no middleware, no database).
- Push latency: N clients on /api/realtime/stream?topics=indexer (a separate client process, asyncio), blocks
  mined at a steady rate; for every event received, the time from the oldest commit it answers
  (`committedAt`, the database clock inside the commit) to its arrival at the client.
- The same balances and transactions routes through handlers written the way upstream's are (a new connection
  per request, one query per field), as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from bench.measure import RunFailed, Workspace, _kill, _popen, _scalar, _tail

REPO = Path(__file__).resolve().parents[1]
FD_LIMIT = 30_000


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, FD_LIMIT), hard if hard != resource.RLIM_INFINITY else FD_LIMIT)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


class BlockMiner:
    """Mines one empty block every `interval` seconds in a thread (the daemon follows them)."""

    def __init__(self, rpc_url: str, interval: float):
        self.rpc_url = rpc_url
        self.interval = interval
        self.stop = threading.Event()
        self.mined = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            _rpc(self.rpc_url, "evm_mine", [])
            self.mined += 1

    def __enter__(self) -> BlockMiner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


# -- hey ------------------------------------------------------------------------------------------------


def hey(url: str, seconds: float, connections: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Run hey for `seconds` at `connections`; req/s, p50/p99 in ms and the status counts."""
    binary = shutil.which("hey")
    if binary is None:
        raise RunFailed("hey is not installed (make loadgen: apt-get install -y hey)")
    args = [binary, "-z", f"{seconds}s", "-c", str(connections)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    if not (rps and p50 and p99):
        raise RunFailed(f"could not read hey's summary:\n{out[-2000:]}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * 1000,
        "p99_ms": float(p99.group(1)) * 1000,
        "statuses": statuses,
    }


# -- push clients (a separate process) --------------------------------------------------------------------


async def _client(host: str, port: int, path: str, latencies: list[float], ready: list[int]) -> None:
    """One push client: connects (again, after a refused or failed attempt, as EventSource does), counts its
    opening state once, then records the latency of every event that answers a commit."""
    marker = b'"committedAt":'
    counted = False
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
            await writer.drain()
            status = await reader.readline()
            if b" 200 " not in status:
                await asyncio.sleep(0.5)
                continue
            while True:
                line = await reader.readline()
                if not line:
                    break
                if not line.startswith(b"data: "):
                    continue
                now = time.time()
                i = line.find(marker)
                if i < 0:
                    continue
                j = i + len(marker)
                raw = line[j : line.find(b",", j)]
                if raw == b"null":
                    if not counted:
                        counted = True
                        ready[0] += 1
                    continue
                latencies.append((now - float(raw)) * 1000)
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.5)


async def _clients_main(url: str, n: int) -> None:
    host, port = url.split("//", 1)[1].split(":")
    latencies: list[float] = []
    ready = [0]
    tasks = []
    for i in range(n):
        tasks.append(
            asyncio.create_task(_client(host, int(port), "/api/realtime/stream?topics=indexer", latencies, ready))
        )
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 120
    while ready[0] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    print(json.dumps({"ready": ready[0]}), flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    t0 = time.time()
    del latencies[:]
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    alive = sum(1 for t in tasks if not t.done())
    print(json.dumps({"latencies": latencies, "alive": alive, "t0": t0, "line": line.strip()}), flush=True)
    for t in tasks:
        t.cancel()


def push_latency(serve_url: str, rpc_url: str, clients: int, seconds: float, interval: float) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "clients", "--url", serve_url, "--n", str(clients)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_raise_fd_limit,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready = json.loads(proc.stdout.readline())["ready"]
        if ready < clients:
            raise RunFailed(f"only {ready} of {clients} push clients connected")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        with BlockMiner(rpc_url, interval) as miner:
            time.sleep(seconds)
        time.sleep(1.0)
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
    finally:
        _kill(proc)
    latencies = result["latencies"]
    if not latencies:
        raise RunFailed(f"no push events reached {clients} clients")
    return {
        "clients": clients,
        "clients_connected_at_end": result["alive"],
        "blocks_mined": miner.mined,
        "events": len(latencies),
        "events_per_client": len(latencies) / clients,
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
    }


# -- the upstream way, for comparison ----------------------------------------------------------------------


def naive_app(dsn: str, schema: str) -> Any:
    """The balances and transactions routes the way upstream's handlers do it: a new connection per request and
    one query per field (no pool, no snapshot)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def connect() -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await conn.execute(f'SET search_path TO "{schema}"')
        return conn

    async def field(conn: psycopg.AsyncConnection[Any], column: str, address: str) -> Any:
        cur = await conn.execute(f"SELECT {column} FROM balances WHERE user_address = %s", (address,))
        row = await cur.fetchone()
        return row[0] if row else None

    async def balances(request: Request) -> JSONResponse:
        address = request.query_params["address"].lower()
        conn = await connect()
        try:
            sats = await field(conn, "last_sats", address) or 0
            last = await field(conn, "last_sync_time", address)
            block = await (await conn.execute("SELECT max(updated_block) FROM balances")).fetchone()
        finally:
            await conn.close()
        return JSONResponse(
            {
                "success": True,
                "address": address,
                "balance": str(sats),
                "oracleSats": int(sats),
                "btc": f"{int(sats) / 1e8:.8f}",
                "lastUpdate": str(last),
                "source": "oracle_contract",
                "blockNumber": str(block[0] if block else 0),
            }
        )

    async def transactions(request: Request) -> JSONResponse:
        address = request.query_params["address"].lower()
        limit = min(int(request.query_params.get("limit", 10)), 100)
        conn = await connect()
        try:
            cur = await conn.execute(
                "SELECT * FROM transactions WHERE user_address = %s ORDER BY block_timestamp DESC LIMIT %s",
                (address, limit),
            )
            names = [c.name for c in cur.description or []]
            rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
        finally:
            await conn.close()
        return JSONResponse(
            [
                {k: (str(v) if not isinstance(v, int | bool | dict | type(None)) else v) for k, v in r.items()}
                for r in rows
            ]
        )

    return Starlette(
        routes=[Route("/api/realtime/balances", balances), Route("/api/realtime/transactions", transactions)]
    )


def _run_naive(dsn: str, schema: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        naive_app(dsn, schema), host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools"
    )


def naive_comparison(
    ws: Workspace, schema: str, paths: dict[str, str], seconds: float, connections: int, say: Any
) -> dict[str, Any]:
    from tests.support.anvil import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "naive", "--dsn", ws.database_url, "--schema", schema, "--port", str(port)],
        cwd=REPO,
    )
    out: dict[str, Any] = {}
    try:
        _wait_http(f"http://127.0.0.1:{port}{paths['balances']}", proc, ws.tmp / "none.log")
        for name, path in paths.items():
            say(f"  naive {name}: hey -z {seconds:.0f}s -c {connections} ...")
            r = hey(f"http://127.0.0.1:{port}{path}", seconds, connections)
            out[name] = r
            say(f"    {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['statuses']}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill(proc)
    return out


# -- the server's ceiling ---------------------------------------------------------------------------------

_HOP_HEADERS = ("content-length", "date", "server", "connection", "transfer-encoding", "keep-alive")


def _run_ceiling(port: int, response: Path) -> None:
    """(internal) The bare app: the recorded response's headers and body, sent for every request."""
    from indexer.serve.server import server_config

    recorded = json.loads(response.read_text())
    body = recorded["body"].encode()
    headers = [(k.encode(), v.encode()) for k, v in recorded["headers"]] + [
        (b"content-length", str(len(body)).encode())
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = server_config(app, "127.0.0.1", port)
    config.lifespan = "off"
    import uvicorn

    uvicorn.Server(config).run()


def server_ceiling(ws: Workspace, url: str, seconds: float, connections: int) -> dict[str, Any]:
    """hey against the bare app serving what `url` answers now: the most any handler could reach."""
    from tests.support.anvil import free_port

    with urllib.request.urlopen(url, timeout=30) as response:
        recorded = {
            "body": response.read().decode(),
            "headers": [(k.lower(), v) for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS],
        }
    path = ws.tmp / "ceiling-response.json"
    path.write_text(json.dumps(recorded))
    port = free_port()
    log = ws.tmp / "ceiling.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.api", "ceiling", "--port", str(port), "--response", str(path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log)
        return hey(f"http://127.0.0.1:{port}/", seconds, connections)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill(proc)


# -- the whole API benchmark -------------------------------------------------------------------------------


def _serve_config(ws: Workspace, schema: str, port: int) -> Path:
    base = ws.config(schema).read_text()
    path = ws.tmp / f"{schema}-api.toml"
    path.write_text(
        base + f'\n[api]\nlisten = "127.0.0.1:{port}"\nrate_limit_enabled = false\npool_size = 4\nsse_queue = 1000\n'
    )
    return path


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RunFailed(f"serve did not come up:\n{_tail(log)}")
        time.sleep(0.2)


def run_api_bench(
    ws: Workspace,
    schema: str,
    say: Any = print,
    *,
    seconds: float = 10.0,
    connections: int = 32,
    clients: tuple[int, ...] = (1000, 5000),
) -> dict[str, Any]:
    """Daemon following and `serve` running on a caught-up schema; every figure of the API benchmark."""
    from tests.support.anvil import free_port

    _raise_fd_limit()
    daemon_log = ws.tmp / f"{schema}-api-daemon.log"
    daemon = _popen(ws.config(schema, poll_interval=0.02), ["run"], daemon_log)
    port = free_port()
    serve_log = ws.tmp / f"{schema}-serve.log"
    serve = _popen(_serve_config(ws, schema, port), ["serve"], serve_log)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"routes": {}}
    try:
        head = int(_rpc(ws.rpc_url, "eth_blockNumber", []), 16)
        with psycopg.connect(ws.database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while (_scalar(conn, f'SELECT min(block_number) FROM "{schema}".read_versions') or -1) < head:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RunFailed(f"the daemon did not reach the head:\n{_tail(daemon_log)}")
                time.sleep(0.1)
            user = _scalar(
                conn, f'SELECT user_address FROM "{schema}".transactions GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1'
            )
        _wait_http(base + "/healthz", serve, serve_log)
        routes = {
            "balances": f"/api/realtime/balances?address={user}",
            "transactions": f"/api/realtime/transactions?address={user}&limit=50",
            "emergency_burns": f"/api/realtime/emergency-burns?address={user}",
            "proof_of_reserves": "/api/realtime/proof-of-reserves",
            "rest_transactions": f"/rest/v1/transactions?select=*&user_address=eq.{user}"
            "&order=block_timestamp.desc&offset=0&limit=10",
        }
        say(f"  the server's ceiling (a bare app, the balances response): hey -z {seconds:.0f}s -c {connections} ...")
        r = server_ceiling(ws, base + routes["balances"], seconds, connections)
        out["server_ceiling"] = r
        say(f"    {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['statuses']}")
        with BlockMiner(ws.rpc_url, 1.0):
            for name, path in routes.items():
                say(f"  {name}: hey -z {seconds:.0f}s -c {connections} ...")
                r = hey(base + path, seconds, connections)
                out["routes"][name] = r
                say(f"    {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['statuses']}")
        time.sleep(1.0)
        with urllib.request.urlopen(base + routes["balances"], timeout=30) as response:
            etag = response.headers["ETag"]
        say(f"  304 revalidation of balances: hey -z {seconds:.0f}s -c {connections} ...")
        r = hey(base + routes["balances"], seconds, connections, {"If-None-Match": etag})
        out["routes"]["balances_304"] = r
        say(f"    {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['statuses']}")
        for n in clients:
            say(f"  push latency, {n} clients on the stream, a block every 0.5 s for 15 s ...")
            p = push_latency(base, ws.rpc_url, n, 15.0, 0.5)
            out[f"push_{n}"] = p
            say(
                f"    p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, {p['events']:,} events, "
                f"{p['clients_connected_at_end']} clients still connected"
            )
        out["naive"] = naive_comparison(
            ws,
            schema,
            {"balances": routes["balances"], "transactions": routes["transactions"]},
            seconds,
            connections,
            say,
        )
    finally:
        for proc in (serve, daemon):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _kill(proc)
    routes_out = out["routes"]
    figures = {
        "api_balances_rps": routes_out["balances"]["rps"],
        "api_balances_p99_ms": routes_out["balances"]["p99_ms"],
        "api_transactions_p99_ms": routes_out["transactions"]["p99_ms"],
        "api_304_rps": routes_out["balances_304"]["rps"],
        "api_server_ceiling_rps": out["server_ceiling"]["rps"],
        "api_server_ceiling_p99_ms": out["server_ceiling"]["p99_ms"],
    }
    figures["api_balances_rps_over_ceiling"] = figures["api_balances_rps"] / figures["api_server_ceiling_rps"]
    naive = out.get("naive", {})
    if "balances" in naive:
        figures["api_balances_rps_over_naive"] = routes_out["balances"]["rps"] / naive["balances"]["rps"]
        figures["api_transactions_rps_over_naive"] = routes_out["transactions"]["rps"] / naive["transactions"]["rps"]
    for n in clients:
        figures[f"push_latency_ms_p50_{n}_clients"] = out[f"push_{n}"]["p50_ms"]
        figures[f"push_latency_ms_p99_{n}_clients"] = out[f"push_{n}"]["p99_ms"]
    return {"figures": {k: round(v, 3) for k, v in figures.items()}, "detail": out}


def _standalone(args: argparse.Namespace) -> int:
    from bench.chain import ChainParams, cached_chain, load_chain
    from bench.measure import backfill

    database_url = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )
    params = ChainParams.quick() if args.quick else ChainParams()
    info, directory, _ = cached_chain(params, print)
    node = load_chain(directory, info)
    ws = Workspace(database_url, node.url, info)
    try:
        schema = ws.new_schema("api")
        print(f"backfill of {info.logs:,} logs ...", flush=True)
        backfill(ws, schema, info.head, 900)
        result = run_api_bench(
            ws,
            schema,
            lambda m: print(m, flush=True),
            seconds=args.seconds,
            clients=tuple(int(c) for c in args.clients.split(",")),
        )
    finally:
        ws.cleanup()
        node.stop()
    latest = REPO / "bench" / "results" / "latest.json"
    document = json.loads(latest.read_text()) if latest.exists() else {}
    if args.quick:
        print(json.dumps(result["figures"], indent=2))
        return 0
    document.update(result["figures"])
    document["api"] = result["detail"]
    latest.write_text(json.dumps(document, indent=2, default=str))
    print(json.dumps(result["figures"], indent=2))
    print(f"figures merged into {latest.relative_to(REPO)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    sub = parser.add_subparsers(dest="command")
    clients = sub.add_parser("clients", help="(internal) push clients for the latency measurement")
    clients.add_argument("--url", required=True)
    clients.add_argument("--n", type=int, required=True)
    naive = sub.add_parser("naive", help="(internal) the upstream-style handlers, for the comparison")
    naive.add_argument("--dsn", required=True)
    naive.add_argument("--schema", required=True)
    naive.add_argument("--port", type=int, required=True)
    ceiling = sub.add_parser("ceiling", help="(internal) the bare app for the server's ceiling")
    ceiling.add_argument("--port", type=int, required=True)
    ceiling.add_argument("--response", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="the small chain; figures printed, not recorded")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1000,5000")
    args = parser.parse_args(argv)
    if args.command == "ceiling":
        _run_ceiling(args.port, args.response)
        return 0
    if args.command == "naive":
        _run_naive(args.dsn, args.schema, args.port)
        return 0
    if args.command == "clients":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_clients_main(args.url, args.n))
        return 0
    return _standalone(args)


if __name__ == "__main__":
    sys.exit(main())
