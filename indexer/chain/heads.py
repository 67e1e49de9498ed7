"""New chain heads pushed by the node: `eth_subscribe("newHeads")` over WebSocket, polling as the fallback.

A `HeadSubscription` keeps one WebSocket subscription open on a background thread and wakes whoever waits
in `wait()` as soon as the node announces a block. It guarantees nothing about completeness: a head may be
missed while the connection is down, so the follower keeps polling at its configured interval and the
subscription only shortens the wait. When the endpoint offers no WebSocket (or the connection drops), the
thread reconnects with capped exponential backoff, cycling through the endpoints, and `subscribed` is False
meanwhile; `wait()` then simply lasts its full timeout, which is plain polling.

Knows JSON-RPC over WebSocket and nothing about the store or tables. Endpoint URLs are printed only through
`redact_url` (API keys often live in their path or query).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
import structlog
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from indexer.config import redact_url
from indexer.errors import Retryable

log = structlog.get_logger("heads")

_STOP_CHECK_S = 0.2  # how often wait() and the reader look at the stop event


class HeadSignal(Protocol):
    """Something the follower can wait on between polls."""

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True as soon as a new head has arrived since the last call."""
        ...


@dataclass(frozen=True, slots=True)
class HeadNotice:
    """One announced block: its number and hash, and when (time.monotonic) it was received."""

    number: int
    hash: str
    received: float


class SubscriptionRefused(Retryable):
    """The endpoint answered eth_subscribe with an error, or with something that is not a subscription id."""


def websocket_urls(rpc_urls: Sequence[str]) -> list[str]:
    """The WebSocket URLs of HTTP JSON-RPC endpoints served on the same address (http -> ws, https -> wss),
    as anvil, geth and most providers do."""
    out = []
    for url in rpc_urls:
        if url.startswith("https://"):
            out.append("wss://" + url[len("https://") :])
        elif url.startswith("http://"):
            out.append("ws://" + url[len("http://") :])
    return out


class HeadSubscription:
    """A newHeads subscription kept open (reconnecting) on a daemon thread; see the module docstring."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        stop: threading.Event | None = None,
        connect_timeout: float = 5.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        if not urls:
            raise ValueError("HeadSubscription needs at least one WebSocket URL")
        self.urls = list(urls)
        self.stop = stop or threading.Event()
        self.connect_timeout = connect_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.latest: HeadNotice | None = None
        self.heads_received = 0
        self.connections = 0  # successful subscriptions, reconnects included
        self.failures = 0  # connection attempts or open connections that failed
        self._arrived = threading.Event()
        self._subscribed = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    # -- public ----------------------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        """True while a subscription is open and delivering heads."""
        return self._subscribed.is_set()

    def start(self) -> HeadSubscription:
        """Start the background thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heads", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds (less if stopped); True when a head arrived since the previous call.

        A head that arrives between two calls is not lost: the next call returns True at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stop.is_set() or self._closed.is_set():
                arrived = self._arrived.is_set()
                self._arrived.clear()
                return arrived
            if self._arrived.wait(min(remaining, _STOP_CHECK_S)):
                self._arrived.clear()
                return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the connection."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until a subscription is open (for start-up checks and tests); True if it is."""
        return self._subscribed.wait(timeout)

    # -- internals -------------------------------------------------------------------------------

    def _done(self) -> bool:
        return self.stop.is_set() or self._closed.is_set()

    def _run(self) -> None:
        backoff = self.initial_backoff
        attempt = 0
        while not self._done():
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                with connect(
                    url, open_timeout=self.connect_timeout, close_timeout=1.0, max_size=2**20, compression=None
                ) as ws:
                    subscription = self._subscribe(ws)
                    self.connections += 1
                    self._subscribed.set()
                    self._warned.discard(url)
                    log.info("subscribed to new heads", endpoint=redact_url(url))
                    backoff = self.initial_backoff
                    self._read(ws, subscription)
            except (OSError, TimeoutError, WebSocketException, SubscriptionRefused, ValueError) as exc:
                self.failures += 1
                self._report(url, exc, backoff)
            finally:
                was_subscribed = self._subscribed.is_set()
                self._subscribed.clear()
                if was_subscribed:
                    self._arrived.set()  # heads may have been missed while it dropped: let the follower look
            if self._done():
                return
            self._pause(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    def _subscribe(self, ws: Connection) -> str:
        ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
        deadline = time.monotonic() + self.connect_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SubscriptionRefused("no answer to eth_subscribe")
            reply = orjson.loads(ws.recv(timeout=remaining))
            if isinstance(reply, dict) and reply.get("id") == 1:
                break
        result = reply.get("result")
        if "error" in reply or not isinstance(result, str):
            error = reply.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise SubscriptionRefused(f"eth_subscribe refused: {message}")
        return result

    def _read(self, ws: Connection, subscription: str) -> None:
        """Deliver heads until the connection ends or the subscription is stopped."""
        while not self._done():
            try:
                raw = ws.recv(timeout=_STOP_CHECK_S)
            except TimeoutError:
                continue
            message = orjson.loads(raw)
            if not isinstance(message, dict) or message.get("method") != "eth_subscription":
                continue
            params = message.get("params") or {}
            head = params.get("result")
            if params.get("subscription") != subscription or not isinstance(head, dict):
                continue
            self.latest = HeadNotice(int(head["number"], 16), str(head.get("hash")), time.monotonic())
            self.heads_received += 1
            self._arrived.set()

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._done() and time.monotonic() < deadline:
            self._closed.wait(min(_STOP_CHECK_S, max(0.0, deadline - time.monotonic())))

    def _report(self, url: str, exc: BaseException, backoff: float) -> None:
        """Warn once per endpoint until it works again; later failures are debug lines (polling covers them)."""
        detail = f"{type(exc).__name__}: {exc}".replace(url, redact_url(url))
        if url in self._warned:
            log.debug("new heads subscription still unavailable", endpoint=redact_url(url), error=detail)
            return
        self._warned.add(url)
        log.warning(
            "no new heads subscription; polling meanwhile, retrying",
            endpoint=redact_url(url),
            error=detail,
            retry_in_s=backoff,
        )
