"""JSON log lines: one JSON object per line on stderr, whatever the values, and the level filter applies."""

from __future__ import annotations

import io
import json
import sys

import structlog

from indexer.ops import logging_setup


def test_json_lines_carry_every_value_and_respect_the_level(monkeypatch):
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    try:
        logging_setup.configure("json", "info")
        log = structlog.get_logger("t")
        log.debug("hidden")
        log.info("request", route="/api/realtime/balances", status=200, ms=1.25)
        log.warning("big", amount=2**200, path=sys.stderr.__class__)
        sys.stderr.flush()
    finally:
        logging_setup.configure("console", "info")
    lines = [json.loads(line) for line in raw.getvalue().decode().splitlines()]
    assert [line["event"] for line in lines] == ["request", "big"]
    first, second = lines
    assert (first["route"], first["status"], first["ms"]) == ("/api/realtime/balances", 200, 1.25)
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert second["amount"] == 2**200 and second["level"] == "warning"
    assert "TextIOWrapper" in second["path"]
