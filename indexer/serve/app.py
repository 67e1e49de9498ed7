"""The ASGI application of `rbtc-indexer serve`: routes, consistency headers, ETags, push, the PostgREST subset,
operations endpoints and the status page, wired to one read pool and one LISTEN connection.

Every data response carries `X-Indexed-Block`, `X-Indexed-Block-Hash` and `X-Data-Version` from the snapshot it
was read in, and a weak ETag on the data version; `If-None-Match` with the current ETag answers 304.
`?min_block=N` or `X-Min-Block: N` waits (bounded) until the tables read reflect block N, else 503 + Retry-After.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute

from indexer.config import ApiConfig
from indexer.serve import postgrest, routes
from indexer.serve.cache import CachedResponse, CacheFront, ResponseCache, asks_for_min_block, etag_matches
from indexer.serve.guards import AccessMiddleware, DirectSendMiddleware, RateLimitMiddleware, ServeMetrics
from indexer.serve.hub import PushHub
from indexer.serve.indexer_status import read_indexer_status
from indexer.serve.openapi import document as openapi_document
from indexer.serve.reader import Read, Reader
from indexer.serve.shapes import dumps
from indexer.serve.snapshot import ProjectionMark, ReadDatabase, ReadUnavailable, Snapshot, TablesBehind
from indexer.serve.sse import PushResponse
from indexer.serve.status_page import PAGE
from indexer.serve.stream import DEFAULT_TOPICS, TOPICS, StreamBroker, StreamClient

log = structlog.get_logger("serve")
JSON = "application/json; charset=utf-8"
EXPOSED_HEADERS = [
    "X-Indexed-Block",
    "X-Indexed-Block-Hash",
    "X-Data-Version",
    "ETag",
    "Content-Range",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
]


@dataclass
class ServeState:
    """Everything the handlers share (one per process)."""

    config: ApiConfig
    db: ReadDatabase
    hub: PushHub
    reader: Reader
    broker: StreamBroker
    settings: routes.Settings
    metrics: ServeMetrics
    registry: CollectorRegistry
    same_database: bool  # reads and LISTEN go to the same server: the hub's marks are the read side's marks
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    tables_checked_at: float = 0.0
    cache: ResponseCache = field(default_factory=lambda: ResponseCache(0))
    started_at: float = field(default_factory=time.time)


class _Bad(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(str(body))
        self.status = status
        self.body = body


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


def _min_block(request: Request) -> int | None:
    raw = request.query_params.get("min_block") or request.headers.get("x-min-block")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise _Bad(400, {"error": "min_block must be a block number (a non-negative integer)"})
    return int(raw)


def _etag(version: int, request: Request) -> str:
    salt = zlib.crc32(f"{request.url.path}?{request.url.query}|{request.headers.get('accept', '')}".encode())
    return f'W/"{version}-{salt:08x}"'


def _matches(request: Request, etag: str) -> bool:
    return etag_matches(request.headers.get("if-none-match"), etag)


def _consistency_headers(mark: ProjectionMark | None, version: int) -> dict[str, str]:
    return {
        "X-Indexed-Block": str(mark.block if mark else -1),
        "X-Indexed-Block-Hash": (mark.block_hash or "") if mark else "",
        "X-Data-Version": str(version),
    }


class NotModified:
    pass


NOT_MODIFIED = NotModified()


def _mark_for(state: ServeState, projections: tuple[str, ...]) -> tuple[str, ...]:
    return projections or routes.ALL_PROJECTIONS


async def _consistent(
    state: ServeState,
    request: Request,
    projections: tuple[str, ...],
    fn: Callable[[Snapshot], Awaitable[Any]],
    *,
    cacheable: bool,
) -> tuple[Read[Any], dict[str, str]] | Response:
    """Read in one snapshot (waiting for min_block); answer 304 early when the client's ETag is current."""
    min_block = _min_block(request)
    projections = _mark_for(state, projections)
    if cacheable and min_block is None and state.same_database and state.hub.connected.is_set():
        version = state.hub.version
        etag = _etag(version, request)
        if version and _matches(request, etag):
            marks = [state.hub.marks[p] for p in projections if p in state.hub.marks]
            mark = min(marks, key=lambda m: m.block) if marks else None
            headers = {**_consistency_headers(mark, version), "ETag": etag, "Cache-Control": "no-cache"}
            return Response(status_code=304, headers=headers)

    async def guarded(snap: Snapshot) -> Any:
        if cacheable and _matches(request, _etag(snap.version, request)):
            return NOT_MODIFIED
        return await fn(snap)

    read = await state.reader.read(projections, guarded, min_block)
    headers = _consistency_headers(read.mark, read.version)
    if cacheable:
        headers["ETag"] = _etag(read.version, request)
        headers["Cache-Control"] = "no-cache"
    else:
        headers["Cache-Control"] = "no-store"
    if read.value is NOT_MODIFIED:
        return Response(status_code=304, headers=headers)
    return read, headers


def _cache_version(state: ServeState) -> int | None:
    """The data version the cache answers at, or None while it must not answer."""
    return state.hub.version if state.same_database and state.hub.connected.is_set() else None


def _cache_applies(state: ServeState, request: Request) -> bool:
    """Whether this request's answer is kept (and an identical request waits for its read): what CacheFront
    answers."""
    return request.method == "GET" and _cache_version(state) is not None and not asks_for_min_block(request.scope)


def _leading(state: ServeState, request: Request) -> contextlib.AbstractContextManager[None]:
    if not _cache_applies(state, request):
        return contextlib.nullcontext()
    return state.cache.leading(state.cache.key(request.scope), state.hub.version)


def _keep(state: ServeState, request: Request, version: int, response: Response) -> Response:
    if _cache_applies(state, request) and response.status_code == 200:
        kept = CachedResponse(
            version, 200, bytes(response.body), tuple(response.raw_headers), response.headers.get("etag", "")
        )
        state.cache.put(state.cache.key(request.scope), kept)
    return response


def _unavailable(exc: Exception, body: Any, *, rest: bool = False) -> Response:
    if isinstance(exc, TablesBehind):
        detail = {"error": str(exc), "indexedBlock": exc.reached, "minBlock": exc.wanted}
        if rest:
            detail = {
                "code": "PGRST002",
                "details": f"indexed block {exc.reached}",
                "hint": "retry later",
                "message": str(exc),
            }
        return _json(detail, 503, {"Retry-After": "1"})
    return _json(body, 503, {"Retry-After": "2"})


def upstream_endpoint(route: routes.Route) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: ServeState = request.app.state.serve
        query = dict(request.query_params)
        if request.method == "POST":
            try:
                body = orjson.loads(await request.body() or b"{}")
            except orjson.JSONDecodeError:
                return _json({"error": "the request body is not JSON"}, 400)
            if not isinstance(body, dict):
                return _json({"error": "the request body must be a JSON object"}, 400)
            query.update({k: str(v) for k, v in body.items() if isinstance(v, str | int) and not isinstance(v, bool)})
        if not route.cacheable:
            return await _upstream_read(state, request, route, query)
        with _leading(state, request):  # kept before identical requests waiting for this read look again
            return await _upstream_read(state, request, route, query)

    return endpoint


async def _upstream_read(state: ServeState, request: Request, route: routes.Route, query: dict[str, str]) -> Response:
    params: routes.Params = {}
    try:
        params = route.parse(query)
        result = await _consistent(
            state,
            request,
            route.projections,
            lambda snap: route.read(snap, params, state.settings),
            cacheable=route.cacheable,
        )
    except routes.BadInput as exc:
        return _json(exc.body, 400)
    except _Bad as exc:
        return _json(exc.body, exc.status)
    except (TablesBehind, ReadUnavailable) as exc:
        log.warning("read unavailable", route=route.path, error=str(exc))
        return _unavailable(exc, route.fallback(params))
    if isinstance(result, Response):
        return result
    read, headers = result
    response = _json(read.value, 200, headers)
    return _keep(state, request, read.version, response) if route.cacheable else response


async def rest_endpoint(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    table = request.path_params["table"]
    if request.method not in ("GET", "HEAD"):
        return _json(
            {
                "code": "PGRST000",
                "details": None,
                "hint": "this service is read-only",
                "message": f"{request.method} is not allowed on {table}",
            },
            405,
            {"Allow": "GET, HEAD"},
        )
    with _leading(state, request):
        return await _rest_read(state, request, table)


async def _rest_read(state: ServeState, request: Request, table: str) -> Response:
    if table in postgrest.EXPOSED and table not in state.tables:
        await _refresh_tables(state)  # started before `migrate` created them, or a table was added since
    try:
        query = postgrest.parse(
            table, list(request.query_params.multi_items()), dict(request.headers), state.tables, state.config.max_rows
        )
        fetched: list[Any] = []

        async def run(snap: Snapshot) -> Any:
            fetched.append(await postgrest.execute(snap, query))
            return fetched[0]

        result = await _consistent(state, request, postgrest.EXPOSED[table], run, cacheable=True)
    except postgrest.RestError as exc:
        return _json(exc.body, exc.status)
    except _Bad as exc:
        return _json({"code": "PGRST100", "details": None, "hint": None, "message": exc.body["error"]}, exc.status)
    except (TablesBehind, ReadUnavailable) as exc:
        return _unavailable(exc, {"code": "PGRST002", "details": None, "hint": None, "message": str(exc)}, rest=True)
    if isinstance(result, Response):
        return result
    read, headers = result
    rows, total = read.value
    headers["Content-Range"] = postgrest.content_range(query.offset, len(rows), total)
    if query.single:
        if len(rows) != 1:
            return _json(
                {
                    "code": "PGRST116",
                    "details": f"The result contains {len(rows)} rows",
                    "hint": None,
                    "message": "Cannot coerce the result to a single JSON object",
                },
                406,
                headers,
            )
        single = Response(
            dumps(rows[0]), 200, headers=headers, media_type="application/vnd.pgrst.object+json; charset=utf-8"
        )
        return _keep(state, request, read.version, single)
    if request.method == "HEAD":
        return Response(b"", 200, headers=headers, media_type=JSON)
    return _keep(state, request, read.version, _json(rows, 200, headers))


async def _refresh_tables(state: ServeState) -> None:
    """Re-read the exposed tables' columns (at most once a second)."""
    now = time.monotonic()
    if now - state.tables_checked_at < 1.0:
        return
    state.tables_checked_at = now
    try:
        async with state.db.snapshot() as snap:
            state.tables = await postgrest.load_columns(snap)
    except ReadUnavailable:
        pass


async def stream_endpoint(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    raw_topics = request.query_params.get("topics")
    topics = tuple(t.strip() for t in raw_topics.split(",") if t.strip()) if raw_topics else None
    raw_address = request.query_params.get("address")
    address = None
    if raw_address:
        from indexer.serve.shapes import normalise_address

        address = normalise_address(raw_address)
        if address is None:
            return _json({"error": "Invalid address: expected 0x followed by 40 hex digits"}, 400)
    if topics is None:
        topics = DEFAULT_TOPICS if address else ("indexer",)
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        return _json({"error": f"unknown topic(s) {', '.join(unknown)}; known: {', '.join(TOPICS)}"}, 400)
    if address is None and any(TOPICS[t].per_address for t in topics):
        return _json({"error": "Address parameter is required for per-user topics"}, 400)
    client = StreamClient(address, topics, state.config.sse_queue)
    state.broker.add(client)
    try:
        opening = await state.broker.opening(client, request.headers.get("last-event-id"))
    except ReadUnavailable as exc:
        state.broker.remove(client)
        return _json({"error": str(exc)}, 503, {"Retry-After": "2"})
    state.metrics.sse_clients.inc()

    def ended(client: StreamClient) -> None:
        state.metrics.sse_clients.dec()
        if client.dropped:
            state.metrics.sse_dropped.inc()

    return PushResponse(
        state.broker,
        client,
        opening,
        {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
        ended,
    )


async def healthz(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    ok = state.hub._task is not None and not state.hub._task.done()
    return _json({"status": "ok" if ok else "failing", "listening": state.hub.connected.is_set()}, 200 if ok else 503)


async def readyz(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    problems: list[str] = []
    try:
        async with state.db.snapshot() as snap:
            row = await snap.row(
                "SELECT extract(epoch FROM now() - max(updated_at)) AS age FROM sync_status "
                "WHERE component LIKE 'projection:%%'"
            )
            marks = snap.marks
    except ReadUnavailable as exc:
        return _json({"ready": False, "problems": [str(exc)]}, 503)
    age = None if row is None or row["age"] is None else float(row["age"])
    if not marks:
        problems.append("no projection has committed yet")
    if age is None or age > state.config.stale_after:
        problems.append(f"projections last reported {'never' if age is None else f'{age:.0f}s ago'}")
    if not state.hub.connected.is_set():
        problems.append("the LISTEN connection is down (push and min_block waits are degraded)")
    body = {"ready": not problems, "problems": problems, "projections": {m.projection: m.block for m in marks.values()}}
    return _json(body, 200 if not problems else 503)


async def metrics_endpoint(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    state.metrics.sse_clients.set(state.broker.client_count)
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


async def status_json(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    try:
        result = await _consistent(state, request, routes.ALL_PROJECTIONS, read_indexer_status, cacheable=False)
    except ReadUnavailable as exc:
        return _json({"error": str(exc)}, 503, {"Retry-After": "2"})
    except _Bad as exc:
        return _json(exc.body, exc.status)
    if isinstance(result, Response):
        return result
    read, headers = result
    return _json(read.value, 200, headers)


async def status_page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})


async def openapi(request: Request) -> Response:
    return _json(openapi_document())


def build_app(state: ServeState) -> Starlette:
    """The Starlette application over a ServeState (whose resources `lifespan` opens and closes)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.db.open()
        state.hub.start()
        state.broker.start()
        try:
            async with state.db.snapshot() as snap:
                state.tables = await postgrest.load_columns(snap)
                if state.settings.bitcoin_addresses_table:
                    present = await snap.row(
                        "SELECT to_regclass(%s) IS NOT NULL AS present", (state.settings.bitcoin_addresses_table,)
                    )
                    state.settings = routes.Settings(
                        state.settings.yield_scales_contract,
                        state.settings.bitcoin_addresses_table,
                        bool(present and present["present"]),
                    )
                    state.broker.settings = state.settings
                if state.same_database:
                    state.hub.seed(snap.marks)
        except ReadUnavailable as exc:
            log.warning("database not reachable at start; serving 503 until it is", error=str(exc))
        log.info("serve started", tables=sorted(state.tables))
        try:
            yield
        finally:
            await state.broker.stop()
            await state.hub.stop()
            await state.db.close()

    def marks_observer(events: int, committed_at: float) -> None:
        state.metrics.push_lag.observe(max(0.0, time.time() - committed_at))
        marks = state.hub.marks.values()
        if marks:
            state.metrics.indexed_block.set(min(m.block for m in marks))

    state.broker.on_sent = marks_observer
    upstream = [(r, StarletteRoute(r.path, upstream_endpoint(r), methods=list(r.methods))) for r in routes.ROUTES]
    rest = StarletteRoute("/rest/v1/{table}", rest_endpoint, methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"])
    routes_list = [route for _, route in upstream] + [
        StarletteRoute("/api/realtime/stream", stream_endpoint, methods=["GET"]),
        rest,
        StarletteRoute("/api/status", status_json, methods=["GET"]),
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/readyz", readyz, methods=["GET"]),
        StarletteRoute("/metrics", metrics_endpoint, methods=["GET"]),
        StarletteRoute("/openapi.json", openapi, methods=["GET"]),
        StarletteRoute("/", status_page, methods=["GET"]),
    ]
    middleware = [
        Middleware(DirectSendMiddleware),
        Middleware(AccessMiddleware, metrics=state.metrics, access_log=state.config.access_log),
        Middleware(
            CORSMiddleware,
            allow_origins=list(state.config.cors_origins),
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        ),
    ]
    if state.config.rate_limit_enabled:
        middleware.append(
            Middleware(
                RateLimitMiddleware,
                rate=state.config.rate_limit,
                trust_forwarded_for=state.config.trust_forwarded_for,
                metrics=state.metrics,
            )
        )
    cached: dict[str, BaseRoute] = {r.path: route for r, route in upstream if r.cacheable}
    cached["/rest/v1/"] = rest
    middleware.append(Middleware(CacheFront, cache=state.cache, version=lambda: _cache_version(state), routes=cached))
    app = Starlette(routes=routes_list, middleware=middleware, lifespan=lifespan)
    app.state.serve = state
    return app


def make_state(config: ApiConfig, database_url: str, schema: str) -> ServeState:
    """Resources for one serve process (opened by the app's lifespan)."""
    read_url = config.database_url or database_url
    listen_url = config.listen_database_url or database_url
    db = ReadDatabase(read_url, schema, pool_size=config.pool_size, statement_timeout_ms=config.statement_timeout_ms)
    hub = PushHub(listen_url, schema)
    settings = routes.Settings(config.yield_scales_contract, config.bitcoin_addresses_table)
    registry = CollectorRegistry()
    return ServeState(
        config=config,
        db=db,
        hub=hub,
        reader=Reader(db, hub, config.min_block_wait),
        broker=StreamBroker(
            db,
            hub,
            settings,
            queue_limit=config.sse_queue,
            same_database=read_url == listen_url,
            keepalive=config.sse_keepalive,
        ),
        settings=settings,
        metrics=ServeMetrics(registry),
        registry=registry,
        same_database=read_url == listen_url,
        cache=ResponseCache(config.response_cache),
    )
