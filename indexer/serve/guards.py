"""Cross-cutting HTTP concerns as plain ASGI middleware: per-client rate limits with RateLimit headers (the
`limits` library's moving window, in memory), request metrics and access logs. Access lines name the route
template, never the path's values or the query string, so no address reaches the logs."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("serve.access")
EXEMPT = ("/healthz", "/readyz", "/metrics")


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Histogram(
            "rbtc_api_request_seconds",
            "API request latency by route template",
            ["route", "method", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.sse_clients = Gauge("rbtc_api_sse_clients", "Connected push clients", registry=registry)
        self.sse_dropped = Counter(
            "rbtc_api_sse_dropped_total", "Push clients dropped for reading too slowly", registry=registry
        )
        self.push_lag = Histogram(
            "rbtc_api_push_lag_seconds",
            "Projection commit to push events queued",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.rate_limited = Counter(
            "rbtc_api_rate_limited_total", "Requests refused by the rate limit", registry=registry
        )
        self.indexed_block = Gauge("rbtc_api_indexed_block", "Lowest block the read tables reflect", registry=registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template (e.g. /rest/v1/{table}), or the path for unmatched requests."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServeMetrics, access_log: bool = True):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope)
            self.metrics.requests.labels(template, scope["method"], str(status)).observe(elapsed)
            if self.access_log or status >= 500:
                log.info("request", route=template, method=scope["method"], status=status, ms=round(elapsed * 1e3, 2))


class RateLimitMiddleware:
    """Moving-window limit per client address (or X-Forwarded-For's first hop, when trusted)."""

    def __init__(
        self,
        app: ASGIApp,
        rate: str,
        *,
        trust_forwarded_for: bool,
        metrics: ServeMetrics,
        clock: Callable[[], float] = time.time,
    ):
        self.app = app
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.trust_forwarded_for = trust_forwarded_for
        self.metrics = metrics
        self.clock = clock

    def client_key(self, scope: Scope) -> str:
        if self.trust_forwarded_for:
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-for":
                    forwarded: str = value.decode("latin-1")
                    return forwarded.split(",")[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        key = self.client_key(scope)
        allowed = await self.limiter.hit(self.item, key)
        stats = await self.limiter.get_window_stats(self.item, key)
        reset = max(0, int(stats.reset_time - self.clock()))
        headers: list[tuple[bytes, bytes]] = [
            (b"ratelimit-limit", str(self.item.amount).encode()),
            (b"ratelimit-remaining", str(stats.remaining).encode()),
            (b"ratelimit-reset", str(reset).encode()),
            (b"ratelimit-policy", f"{self.item.amount};w={self.item.get_expiry()}".encode()),
        ]
        if not allowed:
            self.metrics.rate_limited.inc()
            body = b'{"error":"rate limit exceeded","retryAfter":' + str(max(reset, 1)).encode() + b"}"
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(max(reset, 1)).encode()),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, sending)


DIRECT_SEND = "rbtc.direct_send"


class DirectSendMiddleware:
    """Outermost of ours: puts the `send` it was given into the scope, under DIRECT_SEND. The other middleware act
    on a response's start only (status and headers); a push stream sends its start through them and its many
    later body chunks (one per client per block) straight through this send, past their wrappers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[DIRECT_SEND] = send
        await self.app(scope, receive, send)
