"""The long-running service around an Indexer: metrics, HTTP endpoints, systemd notifications."""

from __future__ import annotations

from indexer.app import Indexer


class Service:
    """Runs an Indexer with the operational extras a production service needs."""

    def __init__(self, indexer: Indexer):
        self.indexer = indexer

    def run(self, only: list[str] | None, to_block: int | None) -> int:
        return self.indexer.run(only, to_block)
