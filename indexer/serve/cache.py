"""Whole responses kept per request and data version: a response read at version V is served again only while
the newest commit the LISTEN connection has heard of is still V, so a new commit — a revert included — can never
be answered from the cache. Used only when reads and LISTEN go to the same server (against a replica the
heard-of version may be ahead of what the replica shows). Bounded, least recently used out first.

Identical requests that arrive while a read of theirs at the current version is in flight wait for that read
(`join`) instead of starting their own, so a new version sends one read per distinct request to the database,
not one per client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Scope


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
        self.joined = 0

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
        self.joined += 1
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
