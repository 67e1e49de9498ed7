"""The `serve` process: uvicorn (uvloop, httptools) running the read API."""

from __future__ import annotations

import uvicorn

from indexer.config import Config
from indexer.ops.http import parse_listen
from indexer.serve.app import build_app, make_state


def serve(config: Config, listen: str | None = None) -> None:
    """Run the read API until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    host, port = parse_listen(listen or config.api.listen)
    state = make_state(config.api, config.database.url, config.database.schema_)
    uvicorn.run(
        build_app(state),
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
