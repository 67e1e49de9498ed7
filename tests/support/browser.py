"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for tests that look at a page."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from websockets.sync.client import connect

from tests.support.anvil import free_port


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("chromium is not installed: run `make browser` (apt-get install -y chromium)")


class HeadlessPage:
    """One page of a headless Chromium; `evaluate` runs JavaScript in it and returns the value."""

    def __init__(self, url: str):
        self.port = free_port()
        self.profile = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [
                chromium_binary(),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={self.profile.name}",
                f"--remote-debugging-port={self.port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = self._new_target(url)
        self.ws = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._id = 0

    def _new_target(self, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT")
                with urllib.request.urlopen(request, timeout=2) as response:
                    return json.loads(response.read())
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("chromium's DevTools endpoint did not answer") from None
                time.sleep(0.2)

    def evaluate(self, expression: str) -> Any:
        self._id += 1
        self.ws.send(
            json.dumps(
                {
                    "id": self._id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
        )
        while True:
            message = json.loads(self.ws.recv(timeout=10))
            if message.get("id") == self._id:
                return message["result"]["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.profile.cleanup()
