"""Running the indexer the way an operator does: a config file on disk, the CLI, the daemon as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.scenario import Deployment

REPO = Path(__file__).resolve().parent.parent.parent


def write_config(path: Path, database_url: str, schema: str, rpc_url: str, deployment: Deployment, **chain) -> Path:
    """A TOML config for a deployment on a local chain; extra keyword arguments go to [chain]."""
    extra = "".join(
        f"{k} = {v!r}\n" if not isinstance(v, bool) else f"{k} = {str(v).lower()}\n" for k, v in chain.items()
    )
    contracts = "".join(
        f'[[contracts.{role}]]\naddress = "{address}"\nstart_block = {deployment.start_block}\n\n'
        for role, address in deployment.addresses.items()
    )
    path.write_text(
        f'[chain]\nchain_id = 31337\nrpc_urls = ["{rpc_url}"]\npoll_interval = 0.05\n{extra}\n'
        f'[database]\nurl = "{database_url}"\nschema = "{schema}"\n\n[http]\nenabled = false\n\n'
        f'[log]\nformat = "json"\n\n{contracts}'
    )
    return path


def _command(config: Path, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "indexer", "--config", str(config), *args]


def cli(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one `rbtc-indexer` command to completion, capturing its output."""
    return subprocess.run(_command(config, args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start_daemon(config: Path, *args: str, stderr: int | None = subprocess.DEVNULL) -> subprocess.Popen:
    """Start `rbtc-indexer ARGS` (usually `run ...`) as a process; pass stderr=subprocess.PIPE to read its logs."""
    return subprocess.Popen(
        _command(config, args),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
