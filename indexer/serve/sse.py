"""The HTTP response of one push client: a `text/event-stream` written straight from the client's pending events.

One block's commit reaches every connected client at once, so the cost per client and event is the figure that
matters: the response waits on the client's own wake-up event (no task or timer per wait; keepalives come from
the broker's ticker), writes everything pending in one body message (past the middleware, which act on the
response's start only: see DirectSendMiddleware), and watches for the disconnect in one task per connection
rather than per event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from indexer.serve.guards import DIRECT_SEND
from indexer.serve.stream import StreamBroker, StreamClient, event_bytes

RETRY = b"retry: 1000\n\n"
DROPPED = event_bytes("dropped", None, {"reason": "the client read too slowly; reconnect with Last-Event-ID"})


class PushResponse(Response):
    """Streams `client`'s events until it disconnects or is dropped; the client leaves the broker either way."""

    media_type = "text/event-stream"

    def __init__(
        self,
        broker: StreamBroker,
        client: StreamClient,
        opening: list[bytes],
        headers: dict[str, str],
        on_end: Callable[[StreamClient], None],
    ):
        # Like Starlette's StreamingResponse: no body attribute, so no Content-Length is declared.
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.broker = broker
        self.client = client
        self.opening = opening
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client
        direct: Send = scope.get(DIRECT_SEND, send)
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b"".join([RETRY, *self.opening]), "more_body": True})
            while not client.dropped and not client.closed:
                await client.wake.wait()
                pending = client.take()
                if pending and not client.closed:
                    await direct({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
            if client.dropped and not client.closed:
                await send({"type": "http.response.body", "body": DROPPED, "more_body": False})
        except OSError:
            pass  # the connection went away mid-write
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.broker.remove(client)
            self.on_end(client)

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.client.close()
