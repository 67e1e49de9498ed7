"""structlog set-up: JSON lines when not on a terminal (or when asked), readable lines on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def is_json(fmt: str) -> bool:
    """Whether log lines will be JSON for this `log.format` setting."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def _json_line(event: dict[str, Any], **kw: Any) -> bytes:
    try:
        return orjson.dumps(event, **kw)
    except TypeError:  # an integer past 64 bits, say: the standard library takes any
        return json.dumps(event, **kw).encode()


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog (and the stdlib loggers of libraries) to write to stderr."""
    renderer: Any = structlog.dev.ConsoleRenderer(colors=False)
    factory: Any = structlog.PrintLoggerFactory(file=sys.stderr)
    if is_json(fmt):
        binary = getattr(sys.stderr, "buffer", None)
        if binary is not None:  # bytes straight from orjson, about half the cost of a line through `json`
            renderer = structlog.processors.JSONRenderer(serializer=_json_line)
            factory = structlog.BytesLoggerFactory(binary)
        else:
            renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # web3 and urllib3 log request URLs (which may carry API keys) at debug level: keep them quiet.
    for noisy in ("web3", "urllib3", "eventsourcing"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
