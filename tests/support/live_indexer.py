"""The indexer daemon's run loop in a background thread, for tests that read while it writes."""

from __future__ import annotations

import threading

from indexer.config import Config
from indexer.runtime.app import Indexer


class LiveIndexer:
    def __init__(self, config: Config):
        self.stop_event = threading.Event()
        self.indexer = Indexer(config, stop=self.stop_event)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.indexer.run()), daemon=True)

    def __enter__(self) -> LiveIndexer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the indexer did not stop"
