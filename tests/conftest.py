"""Shared fixtures: a real PostgreSQL (a testcontainer where a Docker engine answers, else TEST_DATABASE_URL or
the local server), a fresh schema per test, and helpers to build configurations and read tables."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parent.parent


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The database every test uses; tests isolate themselves in their own schemas."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    if _docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            yield container.get_connection_url()
        return
    with psycopg.connect(LOCAL_DATABASE_URL, connect_timeout=5):
        pass  # fail loudly here, not skip, when there is no database at all
    yield LOCAL_DATABASE_URL


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A schema name unique to this test, dropped afterwards (with any rebuild shadow schemas)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s", (name, f"{name}_rb_%")
        ).fetchall()
        for (found,) in rows:
            conn.execute(f'DROP SCHEMA "{found}" CASCADE')
