"""The operational HTTP endpoints: /metrics, /healthz, /readyz, /status (stdlib server in a daemon thread).

- `/metrics`: Prometheus text exposition of the process' registry.
- `/healthz`: 200 while the process' main loops are alive (the service's heartbeat is fresh) and the follower is
  not stuck behind the head (`indexer.stall_timeout`), else 503.
- `/readyz`: 200 while every component is within `indexer.ready_max_lag_blocks` of the head (after the first
  catch-up), 503 otherwise: before, when it falls behind, when the follower is stuck, and while shutting down.
- `/status`: JSON — the `rbtc-indexer status --json` document plus a `live` section from this process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger("http")

JSON = "application/json"


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a "host:port" or "[v6]:port" listen address."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: OpsServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            status, content_type, body = self.server.api.respond(path)
        except Exception as exc:  # a broken endpoint answers 500, it never takes the server down
            log.exception("http endpoint failed", path=path)
            status, content_type, body = 500, JSON, orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http request", client=self.client_address[0], request=format % args)


class OpsServer:
    """Serves the operational endpoints from callables the service provides."""

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]],
    ):
        self.listen = listen
        self.registry = registry
        self.alive = alive
        self.ready = ready
        self.status = status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when listening on port 0."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> OpsServer:
        """Bind and serve in a daemon thread; raises OSError when the address cannot be bound."""
        host, port = parse_listen(self.listen)
        server_class: type[_Server] = _Server
        if ":" in host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._server = server_class((host, port), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        log.info("http endpoints listening", host=self.address[0], port=self.port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            ok = self.alive()
            return (200 if ok else 503), JSON, orjson.dumps({"alive": ok})
        if path == "/readyz":
            ok = self.ready()
            return (200 if ok else 503), JSON, orjson.dumps({"ready": ok})
        if path == "/status":
            document = self.status()
            code = 503 if document.get("error") else 200
            return code, JSON, orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS)
        body = orjson.dumps({"error": "not found", "endpoints": ["/metrics", "/healthz", "/readyz", "/status"]})
        return 404, JSON, body
