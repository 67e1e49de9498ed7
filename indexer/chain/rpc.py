"""JSON-RPC over HTTP with several endpoints: failover, recovery, and retries by error class.

Knows JSON-RPC and nothing about tables or contracts. Transport failures, HTTP 5xx, 429 (honouring
Retry-After) and transient JSON-RPC errors are retried with capped exponential backoff, moving to the next
healthy endpoint; errors that cannot succeed on retry (invalid params, unknown method) fail at once; errors
saying a log query is too large are raised as RangeTooLarge, with the provider's suggested range if given;
errors saying the node has no state at the block asked (a full node prunes old state) as StatePruned, at once.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import requests
import structlog

from indexer.config import redact_url
from indexer.errors import ConfigError, Retryable

log = structlog.get_logger("rpc")

_RANGE_PATTERNS = re.compile(
    r"(more than \d+ results|range (is )?too (large|wide)|block range|too many (results|logs|blocks)"
    r"|response (size|is) too (big|large)|response too large|exceed(s|ed)? .*(limit|range|results)"
    r"|limited to an? ?[\d,]+ (block|range)|ranges? over [\d,]+ blocks|range \d+ is bigger than range limit"
    r"|query timeout|log response size exceeded)",
    re.IGNORECASE,
)
_SUGGESTED_RANGE = re.compile(r"\[\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*(0x[0-9a-fA-F]+|\d+)\s*\]|range (\d+)-(\d+)")
_LIMITED_TO = re.compile(
    r"(?:limited to (?:an? )?|exceeds (?:the )?limit of |max block range |range limit )([\d,]+)", re.IGNORECASE
)
_RATE_LIMIT = re.compile(
    r"(rate.?limit|too many requests|exceeded .*capacity|request limit|credits limited|over .*limit, retry)",
    re.IGNORECASE,
)
# Provider codes for "slow down" (-32005 common, -32012 QuickNode credits, -32016 Base, -32021/-32022 MegaETH).
_RATE_LIMIT_CODES = {-32005, -32012, -32016, -32021, -32022, -32029, 429}
# Codes that mean "this query is too large" whatever the message says (-32614 QuickNode, -32020 MegaETH).
_RANGE_CODES = {-32614, -32020}
_FINAL_CODES = {-32601, -32602, -32600, -32700}
# The wording of "this node has no state at that block" (geth, erigon, reth, nethermind); retrying cannot help.
_STATE_PRUNED = re.compile(
    r"(missing trie node|state.{0,40}(not available|unavailable|pruned)|historical state|required historical"
    r"|state histor)",
    re.IGNORECASE,
)


class RpcError(Retryable):
    """A JSON-RPC call that failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, code: int | None = None, endpoint: str = "", retryable: bool = True):
        super().__init__(message)
        self.code = code
        self.endpoint = endpoint
        self.retryable = retryable


class RangeTooLarge(RpcError):
    """The endpoint refused an eth_getLogs range as too large; `suggested` is its hint (blocks), if any."""

    def __init__(self, message: str, *, code: int | None, endpoint: str, suggested: int | None):
        super().__init__(message, code=code, endpoint=endpoint, retryable=False)
        self.suggested = suggested


class RateLimited(RpcError):
    """HTTP 429 or a rate-limit JSON-RPC error; `retry_after` seconds if the server said."""

    def __init__(self, message: str, *, endpoint: str, retry_after: float | None):
        super().__init__(message, endpoint=endpoint, retryable=True)
        self.retry_after = retry_after


class StatePruned(RpcError):
    """The node has no state at the block asked (a full node keeps only recent state); not retried."""

    def __init__(self, message: str, *, code: int | None, endpoint: str):
        super().__init__(message, code=code, endpoint=endpoint, retryable=False)


class ChainMismatch(ConfigError):
    """An RPC endpoint serves another chain than the configuration names (a configuration error: exit 2)."""


class RpcUnavailable(RpcError):
    """Every attempt failed and the caller's retry budget is spent (or shutdown was requested)."""


def classify_error(error: dict[str, Any], endpoint: str) -> RpcError:
    """Turn a JSON-RPC error object into the matching exception."""
    code = error.get("code")
    message = str(error.get("message", "")) + _detail(error.get("data"))
    # The wording decides first: some providers share one code (-32005) between rate limits and result caps.
    if _RATE_LIMIT.search(message):
        return RateLimited(message, endpoint=endpoint, retry_after=None)
    if code in _RANGE_CODES or _RANGE_PATTERNS.search(message):
        return RangeTooLarge(message, code=code, endpoint=endpoint, suggested=_suggested_span(message))
    if code in _RATE_LIMIT_CODES:
        return RateLimited(message, endpoint=endpoint, retry_after=None)
    if _STATE_PRUNED.search(message):
        return StatePruned(message, code=code, endpoint=endpoint)
    return RpcError(message, code=code, endpoint=endpoint, retryable=code not in _FINAL_CODES)


def _json_rpc_error(response: requests.Response | None) -> dict[str, Any] | None:
    """The JSON-RPC error object in an HTTP error response's body, if it carries one."""
    if response is None:
        return None
    try:
        body = orjson.loads(response.content)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _detail(data: object) -> str:
    """The reason some providers put in the error's `data` (a string, or an object with a text field)."""
    if isinstance(data, str):
        return f" ({data})"
    if isinstance(data, dict):
        texts = [v for k, v in data.items() if k in ("payload", "message", "reason", "details") and isinstance(v, str)]
        return "".join(f" ({t})" for t in texts)
    return ""


def _suggested_span(message: str) -> int | None:
    match = _SUGGESTED_RANGE.search(message)
    if match:
        start, end = (int(x, 0) for x in match.groups() if x is not None)
        return max(1, end - start + 1)
    match = _LIMITED_TO.search(message)
    return int(match.group(1).replace(",", "")) if match else None


class HttpTransport:
    """JSON-RPC requests over a keep-alive HTTP session per thread, encoded and decoded with orjson; no retries of
    its own. Safe to share between threads (the follower's prefetch thread and its own).

    A non-2xx status raises requests.HTTPError (with the response), transport failures raise requests'
    exceptions, an answer that is not JSON raises orjson.JSONDecodeError; the caller classifies them.
    A batch's answers come back in the order of its calls, whatever order the server used.
    """

    _HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

    def __init__(self, url: str, timeout: float):
        self.url = url
        self.timeout = timeout
        self._sessions = threading.local()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _send(self, body: object) -> Any:
        response = self.session.post(self.url, data=orjson.dumps(body), headers=self._HEADERS, timeout=self.timeout)
        response.raise_for_status()
        return orjson.loads(response.content)

    def make_request(self, method: str, params: list[Any]) -> Any:
        return self._send({"jsonrpc": "2.0", "id": self._next_id(), "method": method, "params": params})

    def make_batch_request(self, calls: list[tuple[str, list[Any]]]) -> Any:
        body = [{"jsonrpc": "2.0", "id": self._next_id(), "method": m, "params": p} for m, p in calls]
        answer = self._send(body)
        if not isinstance(answer, list):
            return answer  # an error object for the batch as a whole
        order = {item["id"]: i for i, item in enumerate(body)}
        by_position: list[Any] = [None] * len(body)
        for item in answer:
            position = order.get(item.get("id")) if isinstance(item, dict) else None
            if position is None:
                return answer  # unmatched ids: the caller's length/shape checks reject it
            by_position[position] = item
        return by_position if all(item is not None for item in by_position) else answer


@dataclass
class Endpoint:
    """One RPC URL and its health."""

    url: str
    provider: HttpTransport
    failures: int = 0
    down_until: float = 0.0
    chain_checked: bool = False

    @property
    def label(self) -> str:
        return redact_url(self.url)


Observer = Callable[[str, str, float, str | None], None]  # method, endpoint label, seconds, error kind


class RpcClient:
    """Calls JSON-RPC methods on the first healthy endpoint, failing over and retrying as the error allows."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        observer: Observer | None = None,
        stop: threading.Event | None = None,
        on_failure: Callable[[str], None] | None = None,
        chain_id: int | None = None,
    ):
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self.endpoints = [Endpoint(u, HttpTransport(u, timeout)) for u in urls]
        self.max_backoff = max_backoff
        self.observer = observer
        self.stop = stop or threading.Event()
        self.last_error: str | None = None
        self.on_failure = on_failure
        self.expected_chain_id = chain_id

    # -- public API -------------------------------------------------------------------------------

    def call(self, method: str, params: list[Any], *, attempts: int | None = None) -> Any:
        """One call's result, retried with backoff and failed over until it succeeds, `attempts` (if given) are
        spent (RpcUnavailable), or shutdown is requested."""
        return self._with_retries(method, lambda ep: self._single(ep, method, params), attempts)

    def batch(self, calls: Sequence[tuple[str, list[Any]]], *, attempts: int | None = None) -> list[Any]:
        """Results of several calls sent as one JSON-RPC batch to one endpoint (all or nothing)."""
        if not calls:
            return []
        label = calls[0][0] if len({m for m, _ in calls}) == 1 else "batch"
        results: list[Any] = self._with_retries(label, lambda ep: self._batch(ep, calls), attempts)
        return results

    def chain_id(self) -> int:
        return int(self.call("eth_chainId", []), 16)

    def _check_chain(self, endpoint: Endpoint) -> None:
        """Before an endpoint's first use: it must serve the configured chain (ChainMismatch otherwise)."""
        if self.expected_chain_id is None or endpoint.chain_checked:
            return
        served = int(self._single(endpoint, "eth_chainId", []), 16)
        if served != self.expected_chain_id:
            raise ChainMismatch(
                f"RPC endpoint {endpoint.label} serves chain id {served}, the configuration says "
                f"{self.expected_chain_id}"
            )
        endpoint.chain_checked = True
        log.info("rpc endpoint serves the configured chain", endpoint=endpoint.label, chain_id=served)

    # -- internals --------------------------------------------------------------------------------

    def _single(self, endpoint: Endpoint, method: str, params: list[Any]) -> Any:
        response = self._post(endpoint, method, lambda: endpoint.provider.make_request(method, params))
        if not isinstance(response, dict):
            raise RpcError(f"malformed response to {method}", endpoint=endpoint.label)
        if response.get("error"):
            raise classify_error(response["error"], endpoint.label)
        if "result" not in response:
            raise RpcError(f"response to {method} has neither result nor error", endpoint=endpoint.label)
        return response["result"]

    def _batch(self, endpoint: Endpoint, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        responses = self._post(endpoint, "batch", lambda: endpoint.provider.make_batch_request(list(calls)))
        if isinstance(responses, dict) and responses.get("error"):
            raise classify_error(responses["error"], endpoint.label)
        if not isinstance(responses, list) or len(responses) != len(calls):
            raise RpcError("batch response does not match the request", endpoint=endpoint.label)
        results = []
        for response in responses:
            if response.get("error"):
                raise classify_error(response["error"], endpoint.label)
            if "result" not in response:
                raise RpcError("batch item has neither result nor error", endpoint=endpoint.label)
            results.append(response["result"])
        return results

    def _post(self, endpoint: Endpoint, method: str, send: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            result = send()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            self._observe(method, endpoint, started, f"http_{status}")
            if status == 429:
                raise RateLimited("HTTP 429", endpoint=endpoint.label, retry_after=_retry_after(exc.response)) from None
            error = _json_rpc_error(exc.response)
            if error is not None:  # providers send range refusals and the like with an HTTP error status too
                raise classify_error(error, endpoint.label) from None
            retryable = status >= 500 or status in (408, 425)
            raise RpcError(f"HTTP {status}", endpoint=endpoint.label, retryable=retryable) from None
        except (requests.Timeout, TimeoutError):
            self._observe(method, endpoint, started, "timeout")
            raise RpcError("timed out", endpoint=endpoint.label) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, ConnectionError):
            self._observe(method, endpoint, started, "connection")
            raise RpcError("connection failed", endpoint=endpoint.label) from None
        except orjson.JSONDecodeError:
            self._observe(method, endpoint, started, "bad_json")
            raise RpcError("response is not valid JSON (truncated?)", endpoint=endpoint.label) from None
        self._observe(method, endpoint, started, None)
        return result

    def _observe(self, method: str, endpoint: Endpoint, started: float, error: str | None) -> None:
        if self.observer:
            self.observer(method, endpoint.label, time.monotonic() - started, error)

    def _pick(self) -> Endpoint:
        now = time.monotonic()
        healthy = [e for e in self.endpoints if e.down_until <= now]
        if healthy:
            return healthy[0]
        return min(self.endpoints, key=lambda e: e.down_until)

    def _with_retries(self, method: str, attempt: Callable[[Endpoint], Any], attempts: int | None = None) -> Any:
        tries = 0
        while True:
            endpoint = self._pick()
            wait = endpoint.down_until - time.monotonic()
            if wait > 0 and self.stop.wait(min(wait, self.max_backoff)):
                raise RpcUnavailable(f"{method}: shutting down", retryable=False)
            tries += 1
            try:
                self._check_chain(endpoint)
                result = attempt(endpoint)
            except RpcError as exc:
                if not exc.retryable:
                    if not isinstance(exc, RangeTooLarge):
                        self.last_error = f"{method} on {endpoint.label}: {exc}"
                    raise
                self._mark_down(endpoint, exc)
                self.last_error = f"{method} on {endpoint.label}: {exc}"
                if self.on_failure:
                    self.on_failure(self.last_error)
                log.warning(
                    "rpc call failed, will retry",
                    method=method,
                    endpoint=endpoint.label,
                    error=str(exc),
                    attempt=tries,
                    code=exc.code,
                )
                if attempts is not None and tries >= attempts:
                    raise RpcUnavailable(f"{method}: {exc} (after {tries} attempts)", endpoint=endpoint.label) from exc
                continue
            if endpoint.failures:
                log.info("rpc endpoint recovered", endpoint=endpoint.label, after_failures=endpoint.failures)
            endpoint.failures = 0
            endpoint.down_until = 0.0
            return result

    def _mark_down(self, endpoint: Endpoint, exc: RpcError) -> None:
        endpoint.failures += 1
        backoff = min(self.max_backoff, 0.05 * 2 ** min(endpoint.failures, 12))
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            backoff = min(self.max_backoff, max(backoff, exc.retry_after))
        endpoint.down_until = time.monotonic() + backoff


def _retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
