"""Live push over SSE: state on connect, every change after a commit tagged block:version, nothing lost across a
forced reconnect (Last-Event-ID), a reorg event with fresh state, slow clients dropped, bad requests 400."""

from __future__ import annotations

import socket
import time

import psycopg

from tests.support.live_indexer import LiveIndexer
from tests.support.serve import ServeThread
from tests.support.serve_scenario import ALICE, BOB, indexed_scenario
from tests.support.sse import SseClient

STREAM = "/api/realtime/stream"


def version_of(event_id: str) -> int:
    return int(event_id.split(":")[1])


def test_initial_state_then_changes_for_the_address(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        client = SseClient(serve.url + STREAM, {"address": ALICE, "topics": "balances,transactions,sync-status"})
        try:
            assert client.status == 200
            opening = [client.next() for _ in range(3)]
            assert {e.name for e in opening} == {"balances", "transactions", "sync-status"}
            by_name = {e.name: e for e in opening}
            assert by_name["balances"].data["data"]["balance"] == str(scenario.last_sats(ALICE))
            assert len(by_name["transactions"].data["data"]) == 3
            block, version = by_name["balances"].id.split(":")
            assert int(block) == scenario.chain.head and int(version) == by_name["balances"].data["version"]

            # Bob's sync does not touch Alice: no event for her.
            scenario.chain.mine(scenario.sync(BOB, 50, 50, 10**12))
            scenario.index()
            quiet = client.drain(0.6)
            assert [e for e in quiet if e.name in ("balances", "transactions")] == []

            scenario.chain.mine(scenario.sync(ALICE, 8500, 500, 10**12))
            scenario.index()
            events = client.until(lambda e: e.name == "balances" and e.data["data"]["balance"] == "8500")
            later = client.drain(0.5)
            txs = [e for e in events + later if e.name == "transactions"]
            assert txs and txs[-1].data["data"][0]["amount"] == "500"
            assert version_of(events[-1].id) > int(version)
        finally:
            client.close()


def test_nothing_is_lost_across_a_forced_reconnect(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        params = {"address": ALICE, "topics": "balances,transactions"}
        first = SseClient(serve.url + STREAM, params)
        opening = [first.next(), first.next()]
        last_id = max((e.id for e in opening), key=version_of)
        first.close()  # the connection drops

        # While Alice is disconnected: two syncs of hers, one of Bob's.
        scenario.chain.mine(scenario.sync(ALICE, 8100, 100, 10**12))
        scenario.chain.mine(scenario.sync(BOB, 10, 10, 10**12))
        scenario.chain.mine(scenario.sync(ALICE, 8300, 200, 10**12))
        scenario.index()

        second = SseClient(serve.url + STREAM, params, headers={"Last-Event-ID": last_id})
        try:
            replay = [second.next(), second.next()]
            assert {e.name for e in replay} == {"balances", "transactions"}
            by_name = {e.name: e for e in replay}
            assert by_name["balances"].data["data"]["balance"] == "8300"
            amounts = [t["amount"] for t in by_name["transactions"].data["data"]]
            assert amounts[:2] == ["200", "100"]  # both missed syncs, newest first
            assert version_of(by_name["balances"].id) > version_of(last_id)
            assert second.drain(0.5) == []
        finally:
            second.close()

        # Reconnecting with the newest id when nothing changed sends nothing.
        third = SseClient(serve.url + STREAM, params, headers={"Last-Event-ID": by_name["balances"].id})
        try:
            assert third.drain(0.8) == []
        finally:
            third.close()


def test_reorg_event_then_fresh_state_live_and_on_reconnect(database_url):
    with indexed_scenario(database_url, history=False, finalized_depth=8) as scenario:
        chain = scenario.chain
        chain.mine(scenario.sync(ALICE, 100, 100, 10**12))
        chain.mine(scenario.sync(ALICE, 160, 60, 10**12))
        chain.mine([])
        scenario.index()
        with ServeThread(scenario.config) as serve:
            params = {"address": ALICE, "topics": "balances"}
            client = SseClient(serve.url + STREAM, params)
            try:
                opening = client.next()
                assert opening.data["data"]["balance"] == "160"
                scenario.actions.pop()
                chain.reorg(2, [scenario.sync(ALICE, 130, 30, 10**12), []])
                scenario.index()
                events = client.until(lambda e: e.name == "balances" and e.data["data"]["balance"] == "130")
                names = [e.name for e in events]
                assert "reorg" in names and names.index("reorg") < len(names) - 1
            finally:
                client.close()

            # A client that was away during another reorg gets the reorg and fresh state on reconnect.
            scenario.actions.pop()
            chain.reorg(2, [scenario.sync(ALICE, 140, 40, 10**12), []])
            scenario.index()
            back = SseClient(serve.url + STREAM, params, headers={"Last-Event-ID": events[-1].id})
            try:
                replay = back.until(lambda e: e.name == "balances")
                assert replay[0].name == "reorg"
                assert replay[-1].data["data"]["balance"] == "140"
            finally:
                back.close()


def test_a_client_that_stops_reading_is_dropped_and_others_keep_up(database_url):
    with (
        indexed_scenario(database_url, poll_interval=0.01) as scenario,
        ServeThread(scenario.config, sse_queue=2) as serve,
        LiveIndexer(scenario.config),
    ):
        # A raw socket with a tiny receive window that subscribes and never reads: once the buffers between it and
        # the server are full, its pending events are overwritten and it is dropped.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        slow.connect(("127.0.0.1", serve.port))
        slow.sendall(f"GET {STREAM}?topics=indexer HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        healthy = SseClient(serve.url + STREAM, {"topics": "indexer"})
        try:
            healthy.next()
            deadline = time.monotonic() + 90
            total = 0
            while serve.state.broker.dropped == 0 and time.monotonic() < deadline:
                total += 1
                scenario.chain.mine(scenario.sync(ALICE, 9000 + total, 1, 10**12))
                time.sleep(0.02)
            assert serve.state.broker.dropped >= 1, "the slow client was never dropped"
            assert serve.state.broker.client_count == 1
            # The healthy client still sees the newest block.
            head = scenario.chain.head
            healthy.until(lambda e: e.name == "indexer" and e.data["data"]["indexedBlock"] == head, timeout=20)
        finally:
            slow.close()
            healthy.close()


def test_bad_stream_requests_are_400(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        for params in ({"address": "0xnope"}, {"address": ALICE, "topics": "balances,secrets"}, {"topics": "balances"}):
            r = serve.client.get(STREAM, params=params)
            assert r.status_code == 400 and r.json()["error"]


def test_a_lost_listen_connection_is_re_established_and_clients_resynchronised(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config) as serve:
        client = SseClient(serve.url + STREAM, {"address": ALICE, "topics": "balances"})
        try:
            client.next()
            etag = serve.client.get("/api/realtime/balances", params={"address": ALICE}).headers["etag"]
            with psycopg.connect(database_url, autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    ("rbtc-serve-listen",),
                ).fetchall()
                assert killed
            # A commit while the hub is (possibly) disconnected.
            scenario.chain.mine(scenario.sync(ALICE, 4242, 4242 - scenario.last_sats(ALICE), 10**12))
            scenario.index()
            events = client.until(lambda e: e.name == "balances" and e.data["data"]["balance"] == "4242")
            assert events
            wait = time.monotonic() + 10
            while not serve.state.hub.connected.is_set() and time.monotonic() < wait:
                time.sleep(0.05)
            assert serve.state.hub.reconnects == 1 and serve.state.hub.connected.is_set()
            r = serve.client.get("/api/realtime/balances", params={"address": ALICE}, headers={"If-None-Match": etag})
            assert r.status_code == 200 and r.json()["balance"] == "4242"
        finally:
            client.close()


def test_an_idle_client_gets_keepalives_and_leaves_the_broker_when_it_disconnects(database_url):
    with indexed_scenario(database_url) as scenario, ServeThread(scenario.config, sse_keepalive=0.2) as serve:
        sock = socket.create_connection(("127.0.0.1", serve.port))
        try:
            sock.sendall(f"GET {STREAM}?topics=indexer HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.settimeout(5)
            received = b""
            deadline = time.monotonic() + 10
            while received.count(b": keepalive\n\n") < 2 and time.monotonic() < deadline:
                received += sock.recv(65536)
            assert received.count(b"event: indexer\n") == 1  # the opening state, then only comments
            assert received.count(b": keepalive\n\n") >= 2
            assert serve.state.broker.client_count == 1
        finally:
            sock.close()
        # Nothing is committed meanwhile: the disconnect alone ends the response.
        deadline = time.monotonic() + 5
        while serve.state.broker.client_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert serve.state.broker.client_count == 0
