"""Fault-injecting JSON-RPC/HTTP proxy placed in front of a real node (anvil or SimChain).

Whole-request faults (error, timeout, rate limit, truncation) hit the HTTP request as a whole;
per-call faults (empty logs, max range, lag) apply to each element of a batch.
All faults default to off and are deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_OPTIONS = (
    "error_rate",
    "timeout_rate",
    "timeout_s",
    "rate_limit_rate",
    "rate_limit_style",
    "truncate_rate",
    "empty_logs_rate",
    "forked_logs_rate",
    "cut_logs_rate",
    "cut_logs_style",
    "max_range",
    "lag_blocks",
    "down",
    "null_finalized",
    "strip_block_timestamp",
    "refuse_methods",
    "chain_id",
    "state_blocks",
    "latency_s",
)
STAT_KEYS = (
    "requests",
    "upstream_calls",
    "error",
    "timeout",
    "rate_limit",
    "rate_limit_http",
    "rate_limit_rpc",
    "truncate",
    "empty_logs",
    "forked_logs",
    "cut_logs",
    "max_range",
    "lag_rewrites",
    "upstream_error",
    "internal_error",
    "restarts",
    "null_finalized",
    "pruned_state",
)
_RANGE_STYLES = 3


class _CallError(Exception):
    """A JSON-RPC error object to answer for one call."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


class _UpstreamError(Exception):
    """The upstream could not be reached or answered garbage."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upstream failure {status}")
        self.status = status
        self.body = body


@dataclass
class _Plan:
    """What to do with one call: answer `local` directly, or forward `call` and apply `post`."""

    call: Any
    local: dict[str, Any] | None = None
    post: Callable[[Any], Any] | None = None


def _quantity(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise _CallError({"code": -32602, "message": f"invalid block number or tag: {value!r}"})


def _without_timestamps(logs: Any) -> Any:
    if not isinstance(logs, list):
        return logs
    return [{k: v for k, v in log.items() if k != "blockTimestamp"} if isinstance(log, dict) else log for log in logs]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class FaultProxy:
    """HTTP JSON-RPC proxy injecting configurable faults in front of `upstream`."""

    def __init__(self, upstream: str, seed: int = 0, upstream_timeout: float = 30.0) -> None:
        self.upstream = upstream
        self.upstream_timeout = upstream_timeout
        self.error_rate = 0.0
        self.timeout_rate = 0.0
        self.timeout_s = 2.0
        self.rate_limit_rate = 0.0
        self.rate_limit_style = "mixed"  # "http" (429), "rpc" (-32005) or "mixed"
        self.truncate_rate = 0.0
        self.empty_logs_rate = 0.0
        self.forked_logs_rate = 0.0  # eth_getLogs answered from another fork: every log's blockHash differs
        self.cut_logs_rate = 0.0  # eth_getLogs answered with some logs cut, the rest kept
        self.cut_logs_style = "tail"  # "tail": the last 1-3 logs go; "middle": one log from the middle goes
        self.max_range: int | None = None
        self.lag_blocks = 0
        self.null_finalized = 0  # answer this many eth_getBlockByNumber("finalized") calls with null (-1: all)
        self.strip_block_timestamp = False  # drop `blockTimestamp` from eth_getLogs answers (older nodes)
        self.refuse_methods: frozenset[str] = frozenset()  # answered with "invalid params" (-32602, not retryable)
        self.chain_id: int | None = None  # answer eth_chainId with this (a node of another chain)
        self.state_blocks: int | None = None  # a full node: eth_call only within this many blocks of the head
        self.latency_s = 0.0  # added to every request: the round trip to a remote provider
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._range_style = 0
        self._down = False
        self._running = False
        self._port = 0
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- configuration
    def configure(self, **options: Any) -> FaultProxy:
        """Set fault options (see FAULT_OPTIONS); returns self for chaining."""
        unknown = set(options) - set(FAULT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown fault options: {sorted(unknown)}")
        for name, value in options.items():
            setattr(self, name, value)
        return self

    def clear_faults(self) -> None:
        """Turn every fault off (keeps stats)."""
        self.configure(
            error_rate=0.0,
            timeout_rate=0.0,
            rate_limit_rate=0.0,
            truncate_rate=0.0,
            empty_logs_rate=0.0,
            forked_logs_rate=0.0,
            cut_logs_rate=0.0,
            max_range=None,
            lag_blocks=0,
            down=False,
            null_finalized=0,
            strip_block_timestamp=False,
            refuse_methods=frozenset(),
            chain_id=None,
            state_blocks=None,
            latency_s=0.0,
        )

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        """True really stops listening (connections refused); False listens again on the same port."""
        value = bool(value)
        if value == self._down:
            return
        self._down = value
        if self._running:
            if value:
                self._unlisten()
            else:
                self._listen()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start listening on a free loopback port (kept for the proxy's lifetime); return the URL."""
        if self._running:
            return self.url
        self._running = True
        self._listen()
        if self._down:
            self._unlisten()
        return self.url

    def stop(self) -> None:
        self._running = False
        self._unlisten()

    def restart(self) -> None:
        """Drop the listener and every connection, then listen again on the same port."""
        self._unlisten()
        self._bump("restarts")
        if self._running and not self._down:
            self._listen()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FaultProxy was never started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = None
        for attempt in range(50):
            try:
                server = _ProxyServer(("127.0.0.1", self._port), _ProxyHandler)
                break
            except OSError:
                if not self._port or attempt == 49:
                    raise
                time.sleep(0.05)
        assert server is not None
        server.proxy = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="faultproxy", daemon=True
        )
        self._thread.start()

    def _unlisten(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.stop_event.set()
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if thread is not None:
            thread.join(timeout=5)

    # ----------------------------------------------------------------- randomness & stats
    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def _bump(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.stats[kind] = self.stats.get(kind, 0) + n

    # ----------------------------------------------------------------- request handling
    def handle(self, handler: _ProxyHandler, body: bytes) -> None:
        """Serve one HTTP request, injecting whole-request faults first."""
        self._bump("requests")
        if self.latency_s:
            time.sleep(self.latency_s)
        if self._roll(self.timeout_rate):
            self._bump("timeout")
            handler.hold(self.timeout_s)
            return
        if self._roll(self.error_rate):
            self._bump("error")
            with self._lock:
                status = self._rng.choice((500, 502, 503))
            handler.reply(status, f"upstream error {status}".encode(), "text/plain")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            handler.reply(
                200, _dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
            )
            return
        if self._roll(self.rate_limit_rate):
            self._rate_limit(handler, payload)
            return
        try:
            data = _dumps(self._process(payload))
        except _UpstreamError as exc:
            self._bump("upstream_error")
            handler.reply(exc.status, exc.body, "text/plain")
            return
        except Exception:  # surface proxy bugs to the client instead of dropping the connection
            self._bump("internal_error")
            handler.reply(500, traceback.format_exc().encode(), "text/plain")
            return
        if self._roll(self.truncate_rate):
            self._bump("truncate")
            with self._lock:
                cut = self._rng.randint(1, max(1, len(data) - 1))
            data = data[:cut]
        handler.reply(200, data)

    def _rate_limit(self, handler: _ProxyHandler, payload: Any) -> None:
        self._bump("rate_limit")
        style = self.rate_limit_style
        if style == "mixed":
            with self._lock:
                style = "http" if self._rng.random() < 0.5 else "rpc"
        if style == "http":
            self._bump("rate_limit_http")
            handler.reply(429, b'{"error":"Too Many Requests"}', extra_headers={"Retry-After": "1"})
            return
        self._bump("rate_limit_rpc")
        error = {"code": -32005, "message": "rate limited"}

        def one(call: Any) -> dict[str, Any]:
            call_id = call.get("id") if isinstance(call, dict) else None
            return {"jsonrpc": "2.0", "id": call_id, "error": error}

        reply = [one(c) for c in payload] if isinstance(payload, list) and payload else one(payload)
        handler.reply(200, _dumps(reply))

    def _process(self, payload: Any) -> Any:
        batch = isinstance(payload, list)
        calls = payload if batch else [payload]
        if not calls:
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "empty batch"}}
        view = _View(self)
        plans = [self._plan(call, view) for call in calls]
        forward_idx = [i for i, p in enumerate(plans) if p.local is None]
        replies = self._forward([plans[i].call for i in forward_idx], batch) if forward_idx else []
        out: list[dict[str, Any]] = []
        reply_by_idx = dict(zip(forward_idx, replies, strict=True))
        for i, (call, plan) in enumerate(zip(calls, plans, strict=True)):
            call_id = call.get("id") if isinstance(call, dict) else None
            if plan.local is not None:
                out.append({"jsonrpc": "2.0", "id": call_id, **plan.local})
                continue
            reply = dict(reply_by_idx[i])
            reply["id"] = call_id
            if plan.post is not None and "result" in reply:
                reply["result"] = plan.post(reply["result"])
            out.append(reply)
        return out if batch else out[0]

    def _plan(self, call: Any, view: _View) -> _Plan:
        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            return _Plan(call, local={"error": {"code": -32600, "message": "invalid request"}})
        params = call.get("params") or []
        method = call["method"]
        if method in self.refuse_methods:
            return _Plan(call, local={"error": {"code": -32602, "message": f"invalid params for {method}"}})
        if method == "eth_chainId" and self.chain_id is not None:
            return _Plan(call, local={"result": hex(self.chain_id)})
        try:
            if method == "eth_getBlockByNumber" and params and params[0] == "finalized" and self._take_null_finalized():
                return _Plan(call, local={"result": None})
            if method == "eth_getLogs" and params and isinstance(params[0], dict) and self.strip_block_timestamp:
                plan = self._plan_get_logs(call, params[0], view)
                inner = plan.post
                plan.post = lambda logs: _without_timestamps(inner(logs) if inner else logs)
                return plan
            if method == "eth_getLogs" and params and isinstance(params[0], dict):
                return self._plan_get_logs(call, params[0], view)
            if method == "eth_call" and self.state_blocks is not None and len(params) > 1:
                self._check_state(params[1], view)
            if self.lag_blocks > 0:
                return self._plan_lagged(call, method, params, view)
        except _CallError as exc:
            return _Plan(call, local={"error": exc.error})
        return _Plan(call)

    def _check_state(self, tag: Any, view: _View) -> None:
        """A pruned full node: state older than `state_blocks` below the head is gone (geth's answer)."""
        if not isinstance(tag, str):
            return
        assert self.state_blocks is not None
        if view.resolve(tag) < view.head() - self.state_blocks:
            self._bump("pruned_state")
            raise _CallError({"code": -32000, "message": "missing trie node 5a3e (path ) state is not available"})

    def _take_null_finalized(self) -> bool:
        with self._lock:
            if self.null_finalized == 0:
                return False
            if self.null_finalized > 0:
                self.null_finalized -= 1
            self.stats["null_finalized"] += 1
            return True

    def _plan_lagged(self, call: dict[str, Any], method: str, params: list[Any], view: _View) -> _Plan:
        if method == "eth_blockNumber":
            self._bump("lag_rewrites")
            return _Plan(call, local={"result": hex(view.head())})
        if method == "eth_getBlockByNumber" and params:
            number = view.resolve(params[0])
            self._bump("lag_rewrites")
            if number > view.head():
                return _Plan(call, local={"result": None})
            return _Plan({**call, "params": [hex(number), *params[1:]]})
        if method == "eth_getBlockByHash":
            head = view.head()

            def hide_future(block: Any) -> Any:
                return None if isinstance(block, dict) and _quantity(block.get("number")) > head else block

            return _Plan(call, post=hide_future)
        return _Plan(call)

    def _plan_get_logs(self, call: dict[str, Any], flt: dict[str, Any], view: _View) -> _Plan:
        lag = self.lag_blocks
        by_hash = flt.get("blockHash") is not None
        start = end = 0
        if not by_hash and (self.max_range is not None or lag > 0):
            start = view.resolve(flt.get("fromBlock") or "latest")
            end = view.resolve(flt.get("toBlock") or "latest")
            if self.max_range is not None and end - start + 1 > self.max_range:
                self._bump("max_range")
                return _Plan(call, local={"error": self._range_error(start)})
        if self._roll(self.empty_logs_rate):
            self._bump("empty_logs")
            return _Plan(call, local={"result": []})
        if self._roll(self.forked_logs_rate):
            self._bump("forked_logs")

            def other_fork(logs: Any) -> Any:
                if not isinstance(logs, list):
                    return logs
                return [{**log, "blockHash": "0x" + "f" * 64} if isinstance(log, dict) else log for log in logs]

            return _Plan(call, post=other_fork)
        if self._roll(self.cut_logs_rate):
            style = self.cut_logs_style
            drop = self._rng.randint(1, 3)

            def cut(logs: Any) -> Any:
                if not isinstance(logs, list) or not logs:
                    return logs
                self._bump("cut_logs")
                if style == "middle":
                    middle = len(logs) // 2
                    return logs[:middle] + logs[middle + 1 :]
                return logs[: max(0, len(logs) - drop)]

            return _Plan(call, post=cut)
        if lag <= 0:
            return _Plan(call)
        head = view.head()
        self._bump("lag_rewrites")

        def drop_future(logs: Any) -> Any:
            if not isinstance(logs, list):
                return logs
            return [log for log in logs if _quantity(log.get("blockNumber")) <= head]

        if by_hash:
            return _Plan(call, post=drop_future)
        if start > head:
            return _Plan(call, local={"result": []})
        new_filter = {**flt, "fromBlock": hex(start), "toBlock": hex(min(end, head))}
        return _Plan({**call, "params": [new_filter, *call["params"][1:]]}, post=drop_future)

    def _range_error(self, start: int) -> dict[str, Any]:
        with self._lock:
            style = self._range_style % _RANGE_STYLES
            self._range_style += 1
        limit = self.max_range or 1
        if style == 0:
            hint = f"[{hex(start)}, {hex(start + limit - 1)}]"
            return {
                "code": -32005,
                "message": f"query returned more than 10000 results. Try with this block range {hint}.",
            }
        if style == 1:
            return {"code": -32000, "message": "block range is too wide"}
        return {"code": -32602, "message": f"eth_getLogs is limited to a {limit} block range"}

    # ----------------------------------------------------------------- upstream
    def _forward(self, calls: list[dict[str, Any]], batch: bool) -> list[dict[str, Any]]:
        """Send calls upstream with positional ids; return one reply per call, in order."""
        wire = [{**c, "jsonrpc": c.get("jsonrpc", "2.0"), "id": i} for i, c in enumerate(calls)]
        reply = self._post_upstream(wire if batch else wire[0])
        replies = reply if isinstance(reply, list) else [reply]
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        fallback = {"error": {"code": -32603, "message": "no reply from upstream"}}
        if len(replies) == 1 and isinstance(replies[0], dict) and replies[0].get("id") is None:
            fallback = replies[0]
        return [by_id.get(i, fallback) for i in range(len(calls))]

    def call_upstream(self, method: str, params: list[Any]) -> Any:
        """Call the upstream directly (no faults); raises _CallError on a JSON-RPC error."""
        reply = self._post_upstream({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        if not isinstance(reply, dict):
            raise _UpstreamError(502, b"bad upstream reply")
        if "error" in reply:
            raise _CallError(reply["error"])
        return reply.get("result")

    def _post_upstream(self, payload: Any) -> Any:
        self._bump("upstream_calls")
        request = urllib.request.Request(
            self.upstream, data=_dumps(payload), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.upstream_timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise _UpstreamError(exc.code, exc.read() or b"upstream error") from exc
        except (OSError, ValueError) as exc:
            raise _UpstreamError(502, f"upstream unreachable: {exc}".encode()) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _UpstreamError(502, b"upstream sent invalid JSON") from exc


class _View:
    """The (possibly lagging) chain as seen by clients during one HTTP request; upstream reads are cached."""

    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy
        self._lag = max(0, proxy.lag_blocks)
        self._head: int | None = None
        self._tags: dict[str, int] = {}

    def head(self) -> int:
        if self._head is None:
            self._head = max(0, _quantity(self._proxy.call_upstream("eth_blockNumber", [])) - self._lag)
        return self._head

    def resolve(self, tag: Any) -> int:
        if tag in ("latest", "pending"):
            return self.head()
        if tag == "earliest":
            return 0
        if tag in ("finalized", "safe"):
            if tag not in self._tags:
                block = self._proxy.call_upstream("eth_getBlockByNumber", [tag, False])
                number = _quantity(block["number"]) if isinstance(block, dict) else 0
                self._tags[tag] = min(number, self.head())
            return self._tags[tag]
        return _quantity(tag)


class _ProxyServer(ThreadingHTTPServer):
    """Threading HTTP server tracking open connections so they can be cut on stop."""

    daemon_threads = True
    proxy: FaultProxy

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stop_event = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        self.server.proxy.handle(self, self.rfile.read(length))

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def hold(self, seconds: float) -> None:
        """Keep the client waiting, then drop the connection without any answer."""
        self.server.stop_event.wait(seconds)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from base class
        """Silence per-request logging."""
