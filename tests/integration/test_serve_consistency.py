"""Consistency you can see: responses name the exact block their rows reflect, `min_block` waits for the tables
(woken by the commit's notification) and times out with 503 + Retry-After, and ETags follow the data version."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.live_indexer import LiveIndexer
from tests.support.serve import ServeThread
from tests.support.serve_scenario import ALICE, BOB, indexed_scenario


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_response_never_mixes_two_blocks(database_url):
    """While the daemon indexes one sync per block, every balances and transactions response's rows are exactly
    the chain's state at the block its X-Indexed-Block names."""
    with indexed_scenario(database_url, history=False, poll_interval=0.01) as scenario:
        chain = scenario.chain
        chain.mine([], count=2)
        scenario.index()
        sats_at: dict[int, int] = {}
        syncs_upto: dict[int, int] = {}
        with ServeThread(scenario.config) as serve, LiveIndexer(scenario.config):
            seen: list[tuple[int, int, int]] = []
            stop = threading.Event()

            def read() -> None:
                with httpx.Client(base_url=serve.url, timeout=10) as client:
                    while not stop.is_set():
                        b = client.get("/api/realtime/balances", params={"address": ALICE})
                        t = client.get("/api/realtime/transactions", params={"address": ALICE, "limit": 100})
                        seen.append((int(b.headers["x-indexed-block"]), int(b.json()["balance"]), -1))
                        seen.append((int(t.headers["x-indexed-block"]), -1, len(t.json())))

            reader = threading.Thread(target=read)
            reader.start()
            total = 0
            for i in range(1, 31):
                total += i
                [block] = chain.mine(scenario.sync(ALICE, total, i, 10**12))
                number = int(block["number"], 16) if isinstance(block["number"], str) else int(block["number"])
                sats_at[number] = total
                syncs_upto[number] = i
                time.sleep(0.03)
            last = max(sats_at)
            wait_for(lambda: seen and seen[-1][0] >= last, what="the last block to be served")
            stop.set()
            reader.join()
        blocks = sorted(sats_at)

        def expected(table: dict[int, int], block: int) -> int:
            older = [b for b in blocks if b <= block]
            return table[older[-1]] if older else 0

        checked = 0
        for block, balance, count in seen:
            if balance >= 0:
                assert balance == expected(sats_at, block), (block, balance)
            else:
                assert count == expected(syncs_upto, block), (block, count)
            checked += 1
        assert checked > 20 and len({b for b, _, _ in seen}) > 3


def test_min_block_waits_for_the_tables_and_times_out(database_url):
    with indexed_scenario(database_url, poll_interval=0.01) as scenario:
        chain = scenario.chain
        with ServeThread(scenario.config, min_block_wait=8.0) as serve:
            target = chain.head + 3
            answers: list[httpx.Response] = []
            asked = threading.Event()

            def ask() -> None:
                with httpx.Client(base_url=serve.url, timeout=20) as client:
                    asked.set()
                    answers.append(client.get("/api/realtime/balances", params={"address": BOB, "min_block": target}))

            waiter = threading.Thread(target=ask)
            waiter.start()
            asked.wait()
            time.sleep(0.5)
            assert not answers, "min_block answered before the tables reached the block"
            chain.mine(scenario.sync(BOB, 777, 777, 10**12))
            chain.mine([], count=2)
            scenario.index()
            waiter.join(timeout=15)
            [r] = answers
            assert r.status_code == 200
            assert int(r.headers["x-indexed-block"]) >= target
            assert r.json()["balance"] == "777"

            # As a header too; already reached: no wait.
            r = serve.client.get(
                "/api/realtime/balances", params={"address": BOB}, headers={"X-Min-Block": str(target)}
            )
            assert r.status_code == 200

        with ServeThread(scenario.config, min_block_wait=0.5) as serve:
            started = time.monotonic()
            r = serve.client.get("/api/realtime/balances", params={"address": BOB, "min_block": chain.head + 100})
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            body = r.json()
            assert body["minBlock"] == chain.head + 100 and body["indexedBlock"] == chain.head
            assert time.monotonic() - started >= 0.5
            r = serve.client.get("/rest/v1/balances", params={"min_block": chain.head + 100})
            assert r.status_code == 503 and r.json()["code"] == "PGRST002"


def test_etag_revalidation_and_a_new_version_after_a_commit(database_url):
    with indexed_scenario(database_url) as scenario:
        with ServeThread(scenario.config) as serve:
            url = "/api/realtime/transactions"
            first = serve.client.get(url, params={"address": ALICE})
            etag = first.headers["etag"]
            assert etag.startswith('W/"')
            again = serve.client.get(url, params={"address": ALICE}, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == etag
            assert again.headers["x-indexed-block"] == first.headers["x-indexed-block"]
            # Another URL's ETag does not match this one.
            other = serve.client.get(url, params={"address": BOB}, headers={"If-None-Match": etag})
            assert other.status_code == 200
            # Waiting for a block never answers 304 from the hub's marks alone.
            version = int(first.headers["x-data-version"])
            scenario.chain.mine(scenario.sync(ALICE, 9000, 1000, 10**12))
            scenario.index()
            wait_for(lambda: serve.state.hub.version > version, what="the commit notification")
            changed = serve.client.get(url, params={"address": ALICE}, headers={"If-None-Match": etag})
            assert changed.status_code == 200
            assert changed.headers["etag"] != etag
            assert int(changed.headers["x-data-version"]) > version
            assert changed.json()[0]["amount"] == "1000"
            # sync-status depends on the clock: never cached.
            s = serve.client.get("/api/realtime/sync-status", params={"address": ALICE})
            assert "etag" not in s.headers and s.headers["cache-control"] == "no-store"


def test_a_reorg_changes_the_version_and_the_block_hash(database_url):
    with indexed_scenario(database_url, history=False, finalized_depth=8) as scenario:
        chain = scenario.chain
        chain.mine(scenario.sync(ALICE, 100, 100, 10**12))
        chain.mine(scenario.sync(ALICE, 150, 50, 10**12))
        chain.mine([], count=1)
        scenario.index()
        with ServeThread(scenario.config) as serve:
            before = serve.client.get("/api/realtime/balances", params={"address": ALICE})
            assert before.json()["balance"] == "150"
            # Replace the last two blocks: the second sync is gone, another takes its place.
            scenario.actions.pop()
            chain.reorg(2, [scenario.sync(ALICE, 120, 20, 10**12), []])
            scenario.index()
            after = serve.client.get(
                "/api/realtime/balances", params={"address": ALICE}, headers={"If-None-Match": before.headers["etag"]}
            )
            assert after.status_code == 200
            assert after.json()["balance"] == "120"
            assert after.headers["x-indexed-block"] == before.headers["x-indexed-block"]
            assert after.headers["x-indexed-block-hash"] != before.headers["x-indexed-block-hash"]
            assert after.headers["x-indexed-block-hash"] == chain.canonical_blocks()[-1]["hash"]
            assert int(after.headers["x-data-version"]) > int(before.headers["x-data-version"])


def test_the_response_cache_is_keyed_on_the_data_version(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        cache = serve.state.cache
        params = {"address": ALICE}
        first = serve.client.get("/api/realtime/transactions", params=params)
        hits = cache.hits
        again = serve.client.get("/api/realtime/transactions", params=params)
        assert cache.hits == hits + 1
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        assert again.headers["x-indexed-block"] == first.headers["x-indexed-block"]
        # A revalidation of a kept response is answered from it: 304, no body, the same block, version and ETag.
        hits = cache.hits
        revalidated = serve.client.get(
            "/api/realtime/transactions", params=params, headers={"If-None-Match": first.headers["etag"]}
        )
        assert revalidated.status_code == 304 and revalidated.content == b"" and cache.hits == hits + 1
        for header in ("etag", "x-indexed-block", "x-indexed-block-hash", "x-data-version", "cache-control"):
            assert revalidated.headers[header] == first.headers[header], header
        assert "content-type" not in revalidated.headers
        # Answers from the cache are logged and counted under their route, like any other.
        metrics = serve.client.get("/metrics").text
        for status in (200, 304):
            assert (
                f'rbtc_api_request_seconds_count{{method="GET",route="/api/realtime/transactions",status="{status}"}}'
                in metrics
            )
        rest = "/rest/v1/transactions?select=*&order=block_number.desc&limit=2"
        assert serve.client.get(rest).content == serve.client.get(rest).content
        assert 'route="/rest/v1/{table}",status="200"} 2.0' in serve.client.get("/metrics").text
        other = serve.client.get("/api/realtime/transactions", params={"address": BOB})
        assert other.content != first.content

        version = int(first.headers["x-data-version"])
        scenario.chain.mine(scenario.sync(ALICE, 9100, 1100, 10**12))
        scenario.index()
        wait_for(lambda: serve.state.hub.version > version, what="the commit notification")
        fresh = serve.client.get("/api/realtime/transactions", params=params)
        assert fresh.json()[0]["amount"] == "1100"
        assert int(fresh.headers["x-data-version"]) > version
        # A min_block request is never answered from the cache.
        hits = cache.hits
        serve.client.get("/api/realtime/transactions", params={**params, "min_block": 0})
        assert cache.hits == hits


def test_identical_requests_during_one_read_share_it(database_url):
    """Requests for the same response, arriving while its read at the current data version is in flight, wait for
    that read and answer from it: a new block does not send every polling client to the database at once."""
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        reader = serve.state.reader
        inner = reader.read
        reads: list[tuple] = []

        async def slow_read(projections, fn, min_block=None):
            reads.append(tuple(projections))
            await asyncio.sleep(0.4)  # long enough for every request below to arrive meanwhile
            return await inner(projections, fn, min_block)

        reader.read = slow_read
        paths = [
            f"/api/realtime/transactions?address={ALICE}",
            f"/rest/v1/transactions?select=*&user_address=eq.{ALICE}&order=block_timestamp.desc&offset=0&limit=10",
        ]
        for path in paths:
            reads.clear()
            with ThreadPoolExecutor(12) as pool:
                responses = list(pool.map(lambda url: httpx.get(url, timeout=10), [serve.url + path] * 12))
            assert [r.status_code for r in responses] == [200] * 12, path
            assert len({r.content for r in responses}) == 1, path
            assert len({r.headers["etag"] for r in responses}) == 1, path
            assert len({r.headers["x-indexed-block"] for r in responses}) == 1, path
            assert len(reads) == 1, (path, len(reads))
        # A different response is a read of its own, in flight beside the first.
        reads.clear()
        with ThreadPoolExecutor(2) as pool:
            both = list(
                pool.map(
                    lambda who: httpx.get(f"{serve.url}/api/realtime/transactions?address={who}&limit=3"),
                    [ALICE, BOB],
                )
            )
        assert [r.status_code for r in both] == [200, 200] and both[0].content != both[1].content
        assert len(reads) == 2


def test_a_blue_green_rebuild_is_a_new_data_version(database_url):
    from indexer.runtime.app import Indexer
    from projections.engine import registry
    from projections.engine.rebuild import rebuild

    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        before = serve.client.get("/api/realtime/transactions", params={"address": ALICE})
        version = int(before.headers["x-data-version"])
        indexer = Indexer(scenario.config)
        rebuild(indexer.dsn, indexer.schema, indexer.store, registry.build(["transactions"]))
        wait_for(lambda: serve.state.hub.version > version, what="the swap's notification")
        after = serve.client.get(
            "/api/realtime/transactions", params={"address": ALICE}, headers={"If-None-Match": before.headers["etag"]}
        )
        assert after.status_code == 200
        assert int(after.headers["x-data-version"]) > version
        assert after.json() == before.json()  # the same rows, rebuilt from the store
        assert after.headers["x-indexed-block"] == before.headers["x-indexed-block"]
