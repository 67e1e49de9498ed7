"""Start and stop a local anvil node for tests."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO / ".tools" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
CHAIN_ID = 31337


class AnvilNotFound(RuntimeError):
    """The anvil binary is not installed."""


@dataclass
class AnvilNode:
    """A running anvil process."""

    url: str
    port: int
    process: subprocess.Popen

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def anvil_binary() -> Path:
    """Path of the anvil binary, or a clear error telling how to install it."""
    if not ANVIL_BIN.exists():
        raise AnvilNotFound(f"anvil not found at {ANVIL_BIN}; run `make tools` to install it")
    return ANVIL_BIN


def free_port() -> int:
    """Ask the OS for a free TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chain_id(url: str) -> int | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=1) as resp:
            return int(json.loads(resp.read())["result"], 16)
    except (OSError, ValueError, KeyError):
        return None


def start_anvil(extra_args: Sequence[str] = (), timeout: float = 30.0) -> AnvilNode:
    """Start anvil on a free port (automine unless extra_args say otherwise) and wait until it answers."""
    binary = anvil_binary()
    last_error = "no attempt"
    for _ in range(3):
        port = free_port()
        cmd = [str(binary), "--port", str(port), "--chain-id", str(CHAIN_ID), "--silent", *extra_args]
        errlog = tempfile.TemporaryFile()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog)
        node = AnvilNode(url=f"http://127.0.0.1:{port}", port=port, process=proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                errlog.seek(0)
                last_error = errlog.read().decode(errors="replace") or f"exit code {proc.returncode}"
                break
            if _chain_id(node.url) == CHAIN_ID:
                return node
            time.sleep(0.05)
        else:
            node.stop()
            raise RuntimeError(f"anvil did not answer on port {port} within {timeout}s")
    raise RuntimeError(f"anvil failed to start: {last_error}")


@contextmanager
def anvil(extra_args: Sequence[str] = ()) -> Iterator[AnvilNode]:
    """Context manager around start_anvil that always stops the node."""
    node = start_anvil(extra_args)
    try:
        yield node
    finally:
        node.stop()
