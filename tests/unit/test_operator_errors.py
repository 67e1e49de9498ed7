"""What an operator sees for configuration mistakes, and what the systemd unit does with each exit code."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
SECRET = "pw5ecr3t"
CONTRACTS = '[[contracts.fee_vault]]\naddress = "0x' + "ab" * 20 + '"\nstart_block = 0\n'


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "indexer", "--config", str(config), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    "dsn",
    [f"not a dsn {SECRET}", f"postgresql://rbtc:{SECRET}@[::1/db", f"host=db password={SECRET} port"],
)
@pytest.mark.parametrize("command", ["migrate", "run"])
def test_an_unparsable_dsn_is_one_line_and_exit_2(tmp_path, dsn, command):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[chain]\nchain_id = 31337\nrpc_urls = ["http://127.0.0.1:9"]\n\n[database]\nurl = {dsn!r}\n\n{CONTRACTS}'
    )
    result = _cli(config, command)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "database.url" in result.stderr and str(config) in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_a_toml_syntax_error_is_exit_2(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[chain\nchain_id = 1\n')
    result = _cli(config, "run")
    assert result.returncode == ExitCode.USAGE
    assert "not valid TOML" in result.stderr and "Traceback" not in result.stderr


def test_the_systemd_unit_restarts_on_no_exit_code_that_a_restart_cannot_fix():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "rbtc-indexer.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {ExitCode.USAGE, ExitCode.REORG_BELOW_FINALITY, ExitCode.ALREADY_RUNNING}
    assert ExitCode.ERROR not in prevented  # transient failures are restarted
