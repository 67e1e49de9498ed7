"""The daemon's import graph stays light: web3 (seconds to import on this machine) is for tests and tools only."""

from __future__ import annotations

import subprocess
import sys

from tests.support.anvil import REPO


def test_the_daemon_does_not_import_web3() -> None:
    code = "import sys, indexer.cli.main, indexer.runtime.app; print(sorted(m for m in sys.modules if m == 'web3'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
