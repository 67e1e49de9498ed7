"""The `serve` process: uvicorn (uvloop, httptools) running the read API.

SIGTERM and SIGINT start uvicorn's graceful shutdown (open requests finish, push streams close) and the process
then exits 0, like `run` does, rather than re-raising the signal.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from indexer.config import Config
from indexer.ops.http import parse_listen
from indexer.serve.app import build_app, make_state


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """How `serve` runs an ASGI app: uvloop, httptools, no uvicorn access log (the app writes its own)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


def serve(config: Config, listen: str | None = None) -> None:
    """Run the read API until SIGINT/SIGTERM."""
    host, port = parse_listen(listen or config.api.listen)
    state = make_state(config.api, config.database.url, config.database.schema_)
    _Server(server_config(build_app(state), host, port)).run()
