"""structlog set-up: JSON lines when not on a terminal (or when asked), readable lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def is_json(fmt: str) -> bool:
    """Whether log lines will be JSON for this `log.format` setting."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog (and the stdlib loggers of libraries) to write to stderr."""
    renderer = structlog.processors.JSONRenderer() if is_json(fmt) else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # web3 and urllib3 log request URLs (which may carry API keys) at debug level: keep them quiet.
    for noisy in ("web3", "urllib3", "eventsourcing"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
