"""The status page in a real headless Chromium: anvil mines, the daemon follows, `serve` pushes, and the block
number on the page moves without a reload."""

from __future__ import annotations

import time
import uuid

import psycopg
from web3 import Web3

from indexer.config import load_config
from projections.engine import registry
from tests.support.anvil import anvil
from tests.support.browser import HeadlessPage
from tests.support.daemon import start_daemon, write_config
from tests.support.scenario import Deployment
from tests.support.serve import ServeThread


def read_block(page: HeadlessPage) -> int | None:
    text = page.evaluate("document.getElementById('block').textContent")
    return int(text) if text and text.isdigit() else None


def test_the_status_page_follows_the_chain_live(database_url, tmp_path):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with anvil() as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = Deployment.deploy(w3)
        config_path = write_config(
            tmp_path / "config.toml",
            database_url,
            schema,
            node.url,
            deployment,
            confirmations=2,
            use_finalized_tag=False,
        )
        daemon = start_daemon(config_path, "run")
        page = None
        try:
            config = load_config(config_path)
            deadline = time.monotonic() + 60
            while True:  # until the daemon has migrated and published a first block
                try:
                    with psycopg.connect(database_url) as conn:
                        if conn.execute(f'SELECT count(*) FROM "{schema}".read_versions').fetchone()[0]:
                            break
                except psycopg.errors.UndefinedTable:
                    pass
                assert time.monotonic() < deadline and daemon.poll() is None, "the daemon did not start"
                time.sleep(0.2)
            with ServeThread(config) as serve:
                page = HeadlessPage(serve.url + "/")
                deadline = time.monotonic() + 30
                while read_block(page) is None:
                    assert time.monotonic() < deadline, "the page never showed a block"
                    time.sleep(0.1)
                first = read_block(page)
                assert page.evaluate("document.getElementById('conn').textContent") == "live"
                w3.provider.make_request("anvil_mine", [5])
                deadline = time.monotonic() + 30
                while (read_block(page) or 0) < first + 5:
                    assert time.monotonic() < deadline, f"the page stayed at block {read_block(page)}"
                    time.sleep(0.1)
                head = w3.eth.block_number
                assert read_block(page) == head
                assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
                components = page.evaluate(
                    "[...document.querySelectorAll('#components td:first-child')].map(td => td.textContent)"
                )
                assert "follower" in components
                projections = page.evaluate(
                    "[...document.querySelectorAll('#projections tr')]"
                    ".map(tr => [tr.cells[0].textContent, Number(tr.cells[1].textContent)])"
                )
                assert sorted(projections) == sorted([name, head] for name in registry.NAMES)
        finally:
            if page is not None:
                page.close()
            daemon.terminate()
            daemon.wait(timeout=30)
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
