"""A run's result for people (a summary, then one line per difference) and for machines (`--json`)."""

from __future__ import annotations

from typing import Any

from indexer.verify.records import Value, VerifyResult


def _shown(value: Value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def as_text(result: VerifyResult, max_diffs: int | None = None) -> str:
    """Summary lines, then `subject column table-value chain-value` per difference (at most `max_diffs`)."""
    b = result.block
    lines = [
        f"verify at block {b.number} ({b.hash}, {b.how}): "
        + ("tables equal the chain" if result.equal else f"{len(result.differences)} difference(s)"),
        f"  users checked: {result.users_checked}; columns checked: {len(result.columns_checked)}; "
        f"{result.chain_calls} getter calls in {result.chain_requests} requests ({result.method}); "
        f"{result.seconds:.2f}s",
    ]
    if result.by_column:
        lines.append("  differences by column:")
        lines += [f"    {column}: {count}" for column, count in result.by_column.items()]
    lines.append("  not checked:")
    lines += [f"    {u.column}: {u.reason}" for u in result.unchecked]
    if result.differences:
        shown = result.differences if max_diffs is None else result.differences[:max_diffs]
        lines.append("subject column table-value chain-value")
        lines += [f"{d.subject} {d.column} {_shown(d.table_value)} {_shown(d.chain_value)}" for d in shown]
        if len(shown) < len(result.differences):
            lines.append(f"... {len(result.differences) - len(shown)} more (raise --max-diffs)")
    return "\n".join(lines)


def as_json(result: VerifyResult, max_diffs: int | None = None) -> dict[str, Any]:
    """The result as JSON-ready data; amounts stay exact (big integers as decimal strings)."""

    def plain(value: Value) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 else value

    shown = result.differences if max_diffs is None else result.differences[:max_diffs]
    return {
        "block": {"number": result.block.number, "hash": result.block.hash, "chosen": result.block.how},
        "equal": result.equal,
        "users_checked": result.users_checked,
        "columns_checked": result.columns_checked,
        "differences_total": len(result.differences),
        "differences_by_column": result.by_column,
        "differences": [
            {"subject": d.subject, "column": d.column, "table": plain(d.table_value), "chain": plain(d.chain_value)}
            for d in shown
        ],
        "not_checked": [{"column": u.column, "reason": u.reason} for u in result.unchecked],
        "seconds": round(result.seconds, 3),
        "chain_calls": result.chain_calls,
        "chain_requests": result.chain_requests,
        "method": result.method,
    }
