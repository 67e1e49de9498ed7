"""PostgreSQL connections and the versioned migrations in sql/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from eventsourcing import persistence as es_persistence
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout

from indexer.errors import Fatal, Retryable
from indexer.package_data import sql_dir

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class DatabaseUnavailable(Retryable):
    """The database could not be reached; the message says where (without the password)."""


# Errors after which the same work can simply be tried again once the database answers.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
    PoolTimeout,
    DatabaseUnavailable,
)


def first_line(exc: BaseException) -> str:
    """An exception's first message line (its type name when it has no message), for one-line logs."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, looking through the wrappers the eventsourcing library adds."""
    seen: BaseException | None = exc
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__ or seen.__context__
    return None


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable database url>"
    return f"postgresql://{parts.get('user', '')}@{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/" + str(
        parts.get("dbname", "")
    )


def connect(dsn: str, schema: str, *, autocommit: bool = False, timeout: float = 5.0) -> psycopg.Connection:
    """A connection whose search_path is the indexer's schema (then public, for extensions)."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=max(1, int(timeout)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_dsn(dsn)}: {first_line(exc)}") from None
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    if not autocommit:
        conn.commit()
    return conn


@contextmanager
def connection(dsn: str, schema: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """Context-managed `connect`."""
    conn = connect(dsn, schema, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


class NoMigrations(Fatal):
    """The installation holds no migration files (a wheel built without its package data)."""


def migrations(directory: Path | None = None) -> list[tuple[int, Path]]:
    """The numbered migration files, in order; NoMigrations if there are none (never a silent no-op)."""
    directory = sql_dir() if directory is None else directory
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise NoMigrations(f"no migration files (NNN_name.sql) in {directory}: the installation is incomplete")
    return found


def view_files() -> list[Path]:
    """Views over the read tables; recreated after migrations and after every blue/green swap."""
    return sorted((sql_dir() / "views").glob("*.sql"))


def recreate_views(conn: psycopg.Connection) -> None:
    """Drop and create every view in sql/views, inside the caller's transaction."""
    for path in view_files():
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(path.stem)))
        conn.execute(path.read_text())


def migrate(dsn: str, schema: str, directory: Path | None = None) -> list[int]:
    """Create the schema and apply every migration not applied yet; return the versions applied now.
    Raises NoMigrations, before touching the database, when the installation holds none."""
    applied_now: list[int] = []
    pending = migrations(directory)
    with connection(dsn, schema) as conn:
        # Serialise concurrent migrators of the same schema.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rbtc-migrate:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, path in pending:
            if version in done:
                continue
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name))
            applied_now.append(version)
        recreate_views(conn)
        conn.commit()
    return applied_now
