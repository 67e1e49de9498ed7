"""systemd's sd_notify protocol: readiness, status, watchdog and stopping messages over `NOTIFY_SOCKET`.

Every call is a no-op when `NOTIFY_SOCKET` is unset (a terminal, a test, a container without systemd).

When the service sends what (see indexer/service.py):

- ``READY=1`` once the indexer is *current*: the follower has caught up with the chain head and every projection
  has applied everything in the store (the Indexer's `on_ready` hook). A backfill therefore does not count as
  started: `systemctl start` (and units ordered `After=` this one) wait until the tables are current. While the
  backfill makes progress the service sends ``EXTEND_TIMEOUT_USEC=`` so a long backfill does not hit
  `TimeoutStartSec`, while a stuck one still does. A `--only follower` run is ready when the follower is at the
  head. A bounded run (`--to-block N`) that ends cleanly before a ready pass sends ``READY=1`` just before
  ``STOPPING=1``, so systemd does not report a protocol error for a run that did all it was asked to do.
- ``STATUS=...`` a one-line summary (backfilling with block, lag and rate; following with lag in blocks and
  seconds), sent when the phase changes and at most every few seconds otherwise.
- ``WATCHDOG=1`` every ``WATCHDOG_USEC/2`` (or `indexer.watchdog_interval` when systemd sets no watchdog), and
  only while the `Heartbeat` is fresh: the follower and projection loops beat it on every RPC request, append,
  projection batch and ready pass, so an idle-but-polling daemon stays alive and a hung one stops pinging and
  is restarted by systemd.
- ``STOPPING=1`` as soon as a shutdown is requested (SIGTERM, or the run ending).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("sdnotify")

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str:
    """The `sendto` address of a NOTIFY_SOCKET value ('@name' is an abstract socket)."""
    return "\0" + value[1:] if value.startswith("@") else value


def watchdog_period(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings systemd asks for (half of WATCHDOG_USEC), or None when it asks for none."""
    env = os.environ if env is None else env
    raw = env.get(ENV_WATCHDOG_USEC)
    pid = env.get(ENV_WATCHDOG_PID)
    if not raw or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


class Notifier:
    """Sends sd_notify datagrams to the service manager; does nothing without NOTIFY_SOCKET."""

    def __init__(self, address: str | None = None):
        self.address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get(ENV_SOCKET) or None)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send one datagram of `KEY=value` lines; True if it was sent."""
        if not self.address:
            return False
        payload = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, socket_address(self.address))
            except OSError as exc:
                if not self._warned:
                    log.warning("cannot notify the service manager", socket=self.address, error=str(exc))
                    self._warned = True
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Heartbeat:
    """The last time the main loops showed they are alive; fresh while younger than `stale_after` seconds."""

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic):
        self.stale_after = stale_after
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def age(self) -> float:
        return max(0.0, self._clock() - self._last)

    def fresh(self) -> bool:
        return self.age() <= self.stale_after


class Watchdog:
    """A daemon thread sending WATCHDOG=1 every `interval` seconds while `healthy()` says so."""

    def __init__(self, notifier: Notifier, interval: float, healthy: Callable[[], bool]):
        self.notifier = notifier
        self.interval = interval
        self.healthy = healthy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0

    def start(self) -> Watchdog:
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        withheld = False
        while True:
            if self.healthy():
                if self.notifier.watchdog():
                    self.pings += 1
                withheld = False
            elif not withheld:
                log.error("main loops made no progress recently; withholding the watchdog ping")
                withheld = True
            if self._stop.wait(self.interval):
                return
