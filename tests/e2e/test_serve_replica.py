"""`serve` reading from a real streaming replica (pg_basebackup, its own port) with LISTEN on the primary:
responses carry the replica's block consistently, min_block waits for the replica, and push still works."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg

from tests.support.replica import streaming_replica, wait_replayed
from tests.support.serve import ServeThread
from tests.support.serve_scenario import ALICE, indexed_scenario
from tests.support.sse import SseClient


def test_serve_on_a_streaming_replica(database_url):
    with streaming_replica(database_url) as replica_url, indexed_scenario(database_url) as scenario:
        wait_replayed(database_url, replica_url)
        with ServeThread(scenario.config, database_url=replica_url, min_block_wait=20.0) as serve:
            assert serve.state.same_database is False
            first = serve.client.get("/api/realtime/balances", params={"address": ALICE})
            assert first.status_code == 200 and first.json()["balance"] == str(scenario.last_sats(ALICE))
            head = scenario.chain.head
            assert int(first.headers["x-indexed-block"]) == head
            stream = SseClient(serve.url + "/api/realtime/stream", {"address": ALICE, "topics": "balances"})
            try:
                assert stream.next().data["data"]["balance"] == str(scenario.last_sats(ALICE))

                # Hold the replica still: the primary moves on, the replica's answers stay whole and old.
                with psycopg.connect(replica_url, autocommit=True) as replica:
                    replica.execute("SELECT pg_wal_replay_pause()")
                    scenario.chain.mine(scenario.sync(ALICE, 12345, 12345 - scenario.last_sats(ALICE), 10**12))
                    scenario.chain.mine([])
                    scenario.index()
                    new_head = scenario.chain.head
                    time.sleep(0.5)
                    held = serve.client.get("/api/realtime/balances", params={"address": ALICE})
                    assert int(held.headers["x-indexed-block"]) == head
                    assert held.json()["balance"] == first.json()["balance"]
                    assert held.headers["etag"] == first.headers["etag"]
                    assert stream.drain(0.5) == []  # the push waits for the replica rather than send old state

                    answers: list[httpx.Response] = []

                    def ask() -> None:
                        with httpx.Client(base_url=serve.url, timeout=30) as client:
                            answers.append(
                                client.get("/api/realtime/balances", params={"address": ALICE, "min_block": new_head})
                            )

                    waiter = threading.Thread(target=ask)
                    waiter.start()
                    time.sleep(1.0)
                    assert not answers, "min_block answered before the replica had the block"
                    replica.execute("SELECT pg_wal_replay_resume()")
                    waiter.join(timeout=25)
                [after] = answers
                assert after.status_code == 200
                assert int(after.headers["x-indexed-block"]) == new_head
                assert after.json()["balance"] == "12345"
                pushed = stream.until(lambda e: e.name == "balances")
                assert pushed[-1].data["data"]["balance"] == "12345"
                assert pushed[-1].data["block"] >= new_head - 1
            finally:
                stream.close()
