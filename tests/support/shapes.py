"""Check a decoded JSON value against a shape from tests/integration/fixtures/serve_shapes.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHAPES = json.loads(
    (Path(__file__).resolve().parents[1] / "integration" / "fixtures" / "serve_shapes.json").read_text()
)


def _is(value: Any, kind: str) -> bool:
    return {
        "string": isinstance(value, str),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def shape_errors(value: Any, shape: Any, where: str = "$") -> list[str]:
    """Every place where `value` differs from `shape` (missing or extra keys, wrong types)."""
    if isinstance(shape, str):
        return [] if any(_is(value, k) for k in shape.split("|")) else [f"{where}: {value!r} is not {shape}"]
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object"]
    errors = [f"{where}: missing {k}" for k in shape if k not in value]
    errors += [f"{where}: unexpected {k}" for k in value if k not in shape]
    for key, sub in shape.items():
        if key in value:
            errors += shape_errors(value[key], sub, f"{where}.{key}")
    return errors


def assert_shape(value: Any, name: str) -> None:
    errors = shape_errors(value, SHAPES[name])
    assert not errors, "\n".join(errors)
