"""Run the read API in-process (uvicorn in a thread, on a free port) against a test schema."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import uvicorn

from indexer.config import Config
from indexer.serve.app import ServeState, build_app, make_state
from tests.support.anvil import free_port


class ServeThread:
    """`rbtc-indexer serve` for one test: `.url`, `.client` (httpx), `.state`; stop() shuts it down."""

    def __init__(self, config: Config, **api: Any):
        self.api = config.api.model_copy(update={"rate_limit_enabled": False, **api})
        self.state: ServeState = make_state(self.api, config.database.url, config.database.schema_)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                build_app(self.state),
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="on",
                loop="asyncio",
                http="h11",
                timeout_graceful_shutdown=1,
            )
        )
        self.loop: asyncio.AbstractEventLoop | None = None

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        self.thread = threading.Thread(target=lambda: asyncio.run(main()), name="serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("serve did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=10)
        self.wait_listening()

    def wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.state.hub.connected.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("serve's LISTEN connection did not come up")
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ServeThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
