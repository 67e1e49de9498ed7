"""Rows to JSON the way the upstream routes and PostgREST write them.

- NUMERIC columns come back from psycopg as Decimal and are written as exact JSON number literals (as PostgREST
  does), however large; routes that upstream turns into strings convert explicitly with `text`.
- timestamptz is written as ISO 8601 with the offset (`2025-09-10T12:34:56+00:00`), as PostgREST writes it.
- Route-level timestamps (`timestamp`, `lastUpdate`) are JavaScript's `new Date().toISOString()` form.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """JSON bytes; Decimals as exact number literals."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def js_now() -> str:
    """The current time as JavaScript's toISOString writes it (milliseconds, Z)."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def js_time(moment: datetime | None) -> str | None:
    """A timestamp in toISOString form."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_ms() -> int:
    return int(time.time() * 1000)


def text(value: Decimal | int | None, default: str | None = None) -> str | None:
    """A number as the decimal string upstream sends ('0' style, no exponent)."""
    if value is None:
        return default
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def btc(sats: Decimal | int) -> str:
    """Satoshis as a BTC amount with 8 decimals, exactly."""
    return format(Decimal(sats).scaleb(-8).quantize(Decimal("0.00000001")), "f")


def normalise_address(value: str | None) -> str | None:
    """A 0x-address lower-cased; None when absent or malformed."""
    if value is None or not ADDRESS.match(value.strip()):
        return None
    return value.strip().lower()
