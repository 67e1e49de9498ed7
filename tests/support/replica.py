"""A PostgreSQL streaming replica of the local test server, made with pg_basebackup, on its own port.

Needs the Debian PostgreSQL server binaries and root (the replica runs as the `postgres` user). The primary
must accept replication connections from 127.0.0.1; `ensure_replication_allowed` adds a trust line for that
to its pg_hba.conf if none is there (the test server trusts every local connection already).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.support.anvil import free_port

REPLICATION_LINE = "host replication all 127.0.0.1/32 trust"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: the PostgreSQL server package is needed for the replica test")
    return found[-1]


def _as_postgres(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=300)


def ensure_replication_allowed(primary_url: str) -> None:
    with psycopg.connect(primary_url, autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        lines = [line.split("#")[0].split() for line in hba.read_text().splitlines()]
        if not any(len(f) >= 2 and f[0] == "host" and f[1] == "replication" for f in lines):
            with hba.open("a") as fh:
                fh.write(f"\n# streaming replicas for the serve tests\n{REPLICATION_LINE}\n")
            conn.execute("SELECT pg_reload_conf()")


@contextmanager
def streaming_replica(primary_url: str) -> Iterator[str]:
    """Yield the DSN of a fresh streaming replica of the primary (same database name); removed afterwards."""
    if os.geteuid() != 0:
        raise RuntimeError("the replica test runs as root (it starts a PostgreSQL cluster as the postgres user)")
    parts = conninfo_to_dict(primary_url)
    host, port, dbname = parts.get("host", "127.0.0.1"), str(parts.get("port", 5432)), parts.get("dbname", "test")
    ensure_replication_allowed(primary_url)
    directory = Path(tempfile.mkdtemp(prefix="rbtc-replica-"))
    shutil.chown(directory, "postgres", "postgres")
    os.chmod(directory, 0o700)
    replica_port = free_port()
    started = False
    try:
        done = _as_postgres(
            _bin("pg_basebackup"),
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "-D",
            str(directory),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        assert done.returncode == 0, done.stderr
        # Debian keeps the configuration outside the data directory: give the replica its own.
        (directory / "postgresql.conf").write_text(
            f"port = {replica_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{directory}'\n"
            "hot_standby = on\nmax_connections = 100\nshared_buffers = 32MB\n"
        )
        (directory / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        (directory / "pg_ident.conf").write_text("")
        for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
            shutil.chown(directory / name, "postgres", "postgres")
        done = _as_postgres(
            _bin("pg_ctl"), "-D", str(directory), "-l", str(directory / "server.log"), "-w", "-t", "60", "start"
        )
        assert done.returncode == 0, done.stderr + (directory / "server.log").read_text(errors="replace")
        started = True
        url = f"postgresql://postgres@127.0.0.1:{replica_port}/{dbname}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(url) as conn:
                    assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
                    break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the replica did not accept connections"
                time.sleep(0.2)
        yield url
    finally:
        if started:
            _as_postgres(_bin("pg_ctl"), "-D", str(directory), "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


def wait_replayed(primary_url: str, replica_url: str, timeout: float = 30) -> None:
    """Until the replica has replayed everything the primary has written so far."""
    with psycopg.connect(primary_url, autocommit=True) as primary:
        target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(replica_url, autocommit=True) as replica:
        while True:
            behind = replica.execute("SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn()) > 0", (target,)).fetchone()
            if not behind[0]:
                return
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.05)
