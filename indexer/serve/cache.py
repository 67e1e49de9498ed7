"""Whole responses kept per request and data version: a response read at version V is served again only while
the newest commit the LISTEN connection has heard of is still V, so a new commit — a revert included — can never
be answered from the cache. Used only when reads and LISTEN go to the same server (against a replica the
heard-of version may be ahead of what the replica shows). Bounded, least recently used out first.

Identical requests that arrive while a read of theirs at the current version is in flight wait for that read
(`join`) instead of starting their own, so a new version sends one read per distinct request to the database,
not one per client. `CacheFront` answers from the cache before routing; the endpoints fill it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class CachedResponse:
    version: int
    status: int
    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...]  # as sent: content-type and content-length included
    etag: str


_BODY_HEADERS = (b"content-type", b"content-length")


class KeptResponse(Response):
    """A kept response sent again exactly as it was first sent, without rendering its body or headers again; or,
    to a client that holds it already, its 304: the same headers (ETag, block, version) without the body's."""

    def __init__(self, kept: CachedResponse, *, not_modified: bool = False):
        self.background = None
        if not_modified:
            self.status_code = 304
            self.body = b""
            self.raw_headers = [(k, v) for k, v in kept.raw_headers if k not in _BODY_HEADERS]
        else:
            self.status_code = kept.status
            self.body = kept.body
            self.raw_headers = list(kept.raw_headers)


CacheKey = tuple[str, str, bytes, bytes, bytes]


class ResponseCache:
    def __init__(self, entries: int):
        self.entries = entries
        self._items: OrderedDict[CacheKey, CachedResponse] = OrderedDict()
        self._reading: dict[tuple[CacheKey, int], asyncio.Event] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(scope: Scope) -> CacheKey:
        """What a response depends on: method, path, query string and the Accept and Prefer headers."""
        accept = prefer = b""
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value
            elif name == b"prefer":
                prefer = value
        return (scope["method"], scope["path"], scope["query_string"], accept, prefer)

    def get(self, key: CacheKey, version: int) -> CachedResponse | None:
        found = self._items.get(key)
        if found is None or found.version != version:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: CacheKey, response: CachedResponse) -> None:
        if self.entries <= 0:
            return
        self._items[key] = response
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)

    async def join(self, key: CacheKey, version: int) -> bool:
        """Wait for a read of `key` at `version` in flight, if there is one; True if there was."""
        done = self._reading.get((key, version))
        if done is None:
            return False
        await done.wait()
        return True

    @contextlib.contextmanager
    def leading(self, key: CacheKey, version: int) -> Iterator[None]:
        """Mark a read of `key` at `version` in flight for its duration (whatever its outcome), unless the cache
        is off or one is in flight already."""
        slot = (key, version)
        if self.entries <= 0 or slot in self._reading:
            yield
            return
        done = self._reading[slot] = asyncio.Event()
        try:
            yield
        finally:
            del self._reading[slot]
            done.set()


def asks_for_min_block(scope: Scope) -> bool:
    """Whether a request may ask to wait for a block (`min_block` in its query string, an X-Min-Block header):
    such a request is never answered from the cache, and its answer is not kept."""
    return b"min_block" in scope["query_string"] or any(k == b"x-min-block" for k, _ in scope["headers"])


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weakly compared) or is `*`."""
    if not if_none_match:
        return False
    return any(tag.strip() in (etag, etag[2:], "*") for tag in if_none_match.split(","))


class CacheFront:
    """Innermost middleware: a GET on a cached route with a response kept at the current data version (or being
    read by an identical request, which it waits for) is answered here, before routing, as the endpoint would
    answer it again (its 304 to a client that holds it). Everything else, and any request that asks for a
    min_block, goes on to the endpoints.

    `version()` is the current data version, or None while the cache must not answer (LISTEN connection down,
    or reads on another server). `routes` maps a path, or a prefix ending in "/", to the route it belongs to
    (for the access log and metrics, which name the route)."""

    def __init__(
        self, app: ASGIApp, cache: ResponseCache, version: Callable[[], int | None], routes: Mapping[str, BaseRoute]
    ):
        self.app = app
        self.cache = cache
        self.version = version
        self.exact = {path: route for path, route in routes.items() if not path.endswith("/")}
        self.prefixes = [(path, route) for path, route in routes.items() if path.endswith("/")]

    def _route(self, path: str) -> BaseRoute | None:
        route = self.exact.get(path)
        if route is None:
            for prefix, candidate in self.prefixes:
                if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                    return candidate
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kept = await self._kept(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if kept is None:
            await self.app(scope, receive, send)
            return
        route, found = kept
        scope["route"] = route
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), b"").decode("latin-1")
        await KeptResponse(found, not_modified=etag_matches(if_none_match, found.etag))(scope, receive, send)

    async def _kept(self, scope: Scope) -> tuple[BaseRoute, CachedResponse] | None:
        route = self._route(scope["path"])
        version = self.version()
        if route is None or version is None or asks_for_min_block(scope):
            return None
        key = self.cache.key(scope)
        found = self.cache.get(key, version)
        if found is None and await self.cache.join(key, version):
            found = self.cache.get(key, version)
        return None if found is None else (route, found)
