"""RpcClient over HttpTransport against a local HTTP server that answers batches out of order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from indexer.chain.rpc import RpcClient, RpcError


class _Reversing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        calls = body if isinstance(body, list) else [body]
        answers = [{"jsonrpc": "2.0", "id": c["id"], "result": c["params"][0]} for c in calls]
        if self.server.status != 200:  # type: ignore[attr-defined]
            self.send_response(self.server.status)  # type: ignore[attr-defined]
            self.end_headers()
            return
        out = json.dumps(answers[::-1] if isinstance(body, list) else answers[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Reversing)
    srv.status = 200  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_batch_answers_come_back_in_call_order(server: ThreadingHTTPServer) -> None:
    rpc = RpcClient([f"http://127.0.0.1:{server.server_port}"])
    calls = [("echo", [f"value-{i}"]) for i in range(7)]
    assert rpc.batch(calls) == [f"value-{i}" for i in range(7)]
    assert rpc.call("echo", ["single"]) == "single"


def test_an_http_error_status_is_an_rpc_error(server: ThreadingHTTPServer) -> None:
    server.status = 400  # type: ignore[attr-defined]
    rpc = RpcClient([f"http://127.0.0.1:{server.server_port}"])
    with pytest.raises(RpcError, match="HTTP 400"):
        rpc.call("echo", ["x"], attempts=1)
