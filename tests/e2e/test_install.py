"""The documented install: a wheel built from the checkout, installed into a fresh virtualenv outside it,
migrates a database and indexes an anvil chain from there.

The fresh venv gets its third-party dependencies from the project's own `.venv` (a .pth file naming a folder
of links to them, leaving out this project's own distribution and its editable-install hooks), so the test
needs no network; the indexer's code, SQL and ABIs come from the wheel alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import psycopg
import pytest
from web3 import Web3

from indexer.store import db
from tests.support.anvil import start_anvil
from tests.support.compare import assert_tables_match_model
from tests.support.daemon import REPO, write_config
from tests.support.scenario import Deployment, ScenarioDriver

OWN = ("rbtc_indexer", "__editable__", "indexer", "projections", "sql", "abi", "tests", "bench")


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", ".tools", ".git", "cache", "build", "*.egg-info", "__pycache__"),
    )
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("rbtc_indexer-*.whl")
    return wheel


def _fresh_venv(tmp: Path) -> Path:
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    deps = tmp / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(OWN) and not entry.name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)
    (site,) = (target / "lib").glob("python*/site-packages")
    (site / "_deps.pth").write_text(f"{deps}\n")
    return target


def test_the_wheel_installs_outside_the_checkout_and_indexes(database_url, schema, tmp_path):
    wheel = _build_wheel(tmp_path)
    names = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True, check=True
    ).stdout
    assert "indexer/_sql/001_core.sql" in names and "indexer/_sql/views/balance_snapshots.sql" in names
    assert "indexer/_abi/OracleAggregator.json" in names
    env = _fresh_venv(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--no-deps", "-q",
         str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    clean_env = {"PATH": f"{env / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import indexer, projections as p; print(indexer.__file__, p.__file__)"],
        cwd=workdir, env=clean_env, capture_output=True, text=True, check=True,
    ).stdout
    assert str(REPO) not in where and str(env) in where, where

    node = start_anvil()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = Deployment.deploy(w3)
        driver = ScenarioDriver(w3, deployment, seed=23, users=5)
        driver.run(40)
        config = write_config(workdir / "c.toml", database_url, schema, node.url, deployment)
        command = [str(env / "bin" / "rbtc-indexer"), "--config", str(config)]
        migrated = subprocess.run([*command, "migrate"], cwd=workdir, env=clean_env, capture_output=True, text=True)
        assert migrated.returncode == 0, migrated.stderr
        with psycopg.connect(database_url) as conn:
            versions = [v for (v,) in conn.execute(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')]
        assert versions == [v for v, _ in db.migrations()]
        ran = subprocess.run(
            [*command, "run", "--to-block", str(w3.eth.block_number)],
            cwd=workdir, env=clean_env, capture_output=True, text=True, timeout=120,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert_tables_match_model(database_url, schema, driver.model.expected_tables())
    finally:
        node.stop()


def test_migrate_refuses_an_installation_without_migrations(database_url, schema, tmp_path):
    with pytest.raises(db.NoMigrations, match="no migration files"):
        db.migrate(database_url, schema, directory=tmp_path)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() == (0,)
