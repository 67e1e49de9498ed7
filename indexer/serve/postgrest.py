"""A read-only PostgREST-compatible subset at `/rest/v1/<table>`, so supabase-js reads work against this service.

Supported: `select` (a column list or `*`), filters `col=op.value` with eq, neq, gt, gte, lt, lte, like, ilike,
in (`in.(a,b)`, double-quoted items allowed), is (`null`, `true`, `false`) and their `not.` forms; `order=col.asc|desc`
(with `.nullsfirst|.nullslast`, comma-separated); `limit`, `offset`; `Accept: application/vnd.pgrst.object+json`
(exactly one row, else 406 PGRST116); `Prefer: count=exact` (total in `Content-Range`). Tables and columns are
whitelisted from the schema; every value is a bound parameter cast to its column's type; rows are capped at max-rows.
Errors use PostgREST's body: `{"code", "details", "hint", "message"}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from indexer.serve import routes
from indexer.serve.snapshot import Snapshot

EXPOSED: dict[str, tuple[str, ...]] = {
    "balances": (routes.BALANCES,),
    "balance_snapshots": (routes.BALANCES,),
    "transactions": (routes.TRANSACTIONS,),
    "emergency_burns": (routes.BURNS,),
    "yield_scales_participants": (routes.YIELD,),
    "oracle_operations_log": (routes.ORACLE,),
    "sync_status": routes.ALL_PROJECTIONS,
}
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE", "ilike": "ILIKE"}
RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}
OBJECT_MEDIA = "application/vnd.pgrst.object+json"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TYPES = {
    "text": "text",
    "bigint": "bigint",
    "integer": "integer",
    "smallint": "smallint",
    "numeric": "numeric",
    "boolean": "boolean",
    "jsonb": "jsonb",
    "double precision": "double precision",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
}


class RestError(Exception):
    """A PostgREST-style error answer."""

    def __init__(self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "details": details, "hint": hint, "message": message}


@dataclass(frozen=True, slots=True)
class RestQuery:
    table: str
    columns: tuple[str, ...]
    where: sql.Composable
    params: tuple[Any, ...]
    order: sql.Composable
    limit: int
    offset: int
    single: bool
    count: bool


async def load_columns(snap: Snapshot) -> dict[str, dict[str, str]]:
    """Exposed tables (and views) of the schema with their columns and SQL types, in column order."""
    rows = await snap.rows(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s) ORDER BY table_name, ordinal_position",
        (list(EXPOSED),),
    )
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["table_name"], {})[r["column_name"]] = _TYPES.get(r["data_type"], "text")
    return out


def _column(table: str, name: str, columns: dict[str, str]) -> str:
    if name not in columns:
        raise RestError(400, "42703", f"column {table}.{name} does not exist")
    return name


def _split_list(raw: str) -> list[str]:
    if not (raw.startswith("(") and raw.endswith(")")):
        raise RestError(400, "PGRST100", f'"failed to parse filter (in.{raw})"', "in expects a list: in.(a,b)")
    items, current, quoted, i, body = [], "", False, 0, raw[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted and i + 1 < len(body):
            i += 1
            current += body[i]
        elif ch == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if quoted:
        raise RestError(400, "PGRST100", "unterminated quote in an in.(…) list")
    items.append(current)
    return [] if body == "" else items


def parse(
    table: str, query: list[tuple[str, str]], headers: dict[str, str], tables: dict[str, dict[str, str]], max_rows: int
) -> RestQuery:
    """A request as a RestQuery, or RestError."""
    if table not in tables:
        raise RestError(404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache")
    columns = tables[table]
    selected: tuple[str, ...] = tuple(columns)
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    order: list[sql.Composable] = []
    limit, offset = max_rows, 0
    for key, value in query:
        if key == "min_block":  # the consistency wait, handled before the read
            continue
        if key == "select":
            if value.strip() in ("", "*"):
                selected = tuple(columns)
            else:
                names = [c.strip() for c in value.split(",")]
                for n in names:
                    if not _IDENT.match(n):
                        raise RestError(
                            400,
                            "PGRST100",
                            f'"failed to parse select parameter ({value})"',
                            "only plain column names or * are supported",
                        )
                selected = tuple(_column(table, n, columns) for n in names)
        elif key == "order":
            for term in value.split(","):
                parts = term.strip().split(".")
                name = _column(table, parts[0], columns)
                direction, nulls = sql.SQL("ASC"), sql.SQL("")
                for part in parts[1:]:
                    if part in ("asc", "desc"):
                        direction = sql.SQL(part.upper())
                    elif part in ("nullsfirst", "nullslast"):
                        nulls = sql.SQL(" NULLS FIRST" if part == "nullsfirst" else " NULLS LAST")
                    else:
                        raise RestError(400, "PGRST100", f'"failed to parse order ({value})"')
                order.append(sql.SQL("{} {}{}").format(sql.Identifier(name), direction, nulls))
        elif key in ("limit", "offset"):
            if not value.isdigit():
                raise RestError(400, "PGRST100", f'"failed to parse {key} ({value})"', f"{key} must be a whole number")
            if key == "limit":
                limit = min(int(value), max_rows)
            else:
                offset = int(value)
        elif key in RESERVED:
            raise RestError(400, "PGRST100", f"parameter {key} is not supported by this read-only service")
        else:
            name = _column(table, key, columns)
            conditions.append(_condition(name, columns[name], value, params))
    accept = headers.get("accept", "")
    prefer = headers.get("prefer", "")
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    return RestQuery(
        table=table,
        columns=selected,
        where=where,
        params=tuple(params),
        order=sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order) if order else sql.SQL(""),
        limit=limit,
        offset=offset,
        single=OBJECT_MEDIA in accept,
        count="count=exact" in prefer,
    )


def _condition(name: str, sql_type: str, value: str, params: list[Any]) -> sql.Composable:
    negate = value.startswith("not.")
    if negate:
        value = value[4:]
    op, sep, operand = value.partition(".")
    if not sep:
        raise RestError(400, "PGRST100", f'"failed to parse filter ({value})"', "expected operator.value, e.g. eq.1")
    column = sql.Identifier(name)
    cast = sql.SQL(sql_type)
    if op in OPERATORS:
        params.append(operand)
        target = cast if op not in ("like", "ilike") else sql.SQL("text")
        left = column if op not in ("like", "ilike") else sql.SQL("{}::text").format(column)
        operand_sql = sql.SQL("CAST(%s AS {})").format(target)
        if op in ("like", "ilike"):
            params[-1] = operand.replace("*", "%")
        expr = sql.SQL("{} {} {}").format(left, sql.SQL(OPERATORS[op]), operand_sql)
    elif op == "in":
        params.append(_split_list(operand))
        expr = sql.SQL("{} = ANY(CAST(%s AS {}[]))").format(column, cast)
    elif op == "is":
        if operand not in ("null", "true", "false", "unknown"):
            raise RestError(400, "PGRST100", f'"failed to parse filter (is.{operand})"', "is takes null, true or false")
        expr = sql.SQL("{} IS {}").format(column, sql.SQL(operand.upper()))
    else:
        raise RestError(400, "PGRST100", f'"failed to parse filter ({value})"', f"unknown operator {op!r}")
    return sql.SQL("NOT ({})").format(expr) if negate else expr


async def execute(snap: Snapshot, q: RestQuery) -> tuple[list[dict[str, Any]], int | None]:
    """The rows of a query and, when asked, the exact total matching count."""
    select = sql.SQL(", ").join(sql.Identifier(c) for c in q.columns)
    statement = (
        sql.SQL("SELECT {} FROM {}").format(select, sql.Identifier(q.table))
        + q.where
        + q.order
        + sql.SQL(" LIMIT {} OFFSET {}").format(sql.Literal(q.limit), sql.Literal(q.offset))
    )
    try:
        rows = await snap.rows(statement, q.params)
        total = None
        if q.count:
            counted = await snap.row(
                sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(q.table)) + q.where, q.params
            )
            total = counted["n"] if counted else 0
    except (psycopg.errors.DataError, psycopg.errors.InvalidTextRepresentation) as exc:
        raise RestError(400, exc.sqlstate or "22P02", str(exc).splitlines()[0]) from None
    return rows, total


def content_range(offset: int, count: int, total: int | None) -> str:
    span = f"{offset}-{offset + count - 1}" if count else "*"
    return f"{span}/{'*' if total is None else total}"
