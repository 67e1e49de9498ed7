"""A Server-Sent Events client for tests: a thread reads the stream and queues parsed events."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    name: str
    id: str | None
    data: Any


class SseClient:
    def __init__(self, url: str, params: dict[str, str], headers: dict[str, str] | None = None):
        self.events: queue.Queue[Event] = queue.Queue()
        self.status: int | None = None
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._run, args=(url, params, headers or {}), daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(10)

    def _run(self, url: str, params: dict[str, str], headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, params=params, headers=headers) as response:
                self.status = response.status_code
                self._started.set()
                name, event_id, data = "message", None, []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if data:
                            self.events.put(Event(name, event_id, json.loads("\n".join(data))))
                        name, event_id, data = "message", None, []
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self._started.set()
            self.closed.set()

    def next(self, timeout: float = 10.0) -> Event:
        return self.events.get(timeout=timeout)

    def until(self, predicate, timeout: float = 15.0) -> list[Event]:
        """Events up to and including the first one matching `predicate`."""
        seen: list[Event] = []
        while True:
            event = self.next(timeout)
            seen.append(event)
            if predicate(event):
                return seen

    def drain(self, wait: float = 0.3) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self.events.get(timeout=wait))
            except queue.Empty:
                return out

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(timeout=5)
